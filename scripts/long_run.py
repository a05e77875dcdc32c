"""Run one long experiment and measure it as it goes: resident memory, the run folder's
size and the step time, sampled over the run, printed as a table (and written as JSON).

    python scripts/long_run.py                                   # 1,000 PPO steps, tiny model
    python scripts/long_run.py --model default --steps 200 -- --batch-size 4
    python scripts/long_run.py --algorithm grpo --steps 500 --json runs/long/grpo.json

The experiment runs as a user runs it (``experiments/<algorithm>.py``, its default
settings, W&B offline unless ``-- --wandb ...`` says otherwise), as a subprocess; every
``--interval`` seconds this script reads its resident memory (``psutil``, the process
and its children), the run folder's size by part (checkpoints, metrics.jsonl,
samples.jsonl, TensorBoard, W&B) and the step times it has logged
(``perf/time_iteration``). The table gives each tenth of the run: memory and sizes at
its end, and the median step time over it. ``--model tiny`` is the tests' random
2-layer Llama with the default model's tokenizer (built once into the rlm cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlm.files import read_jsonl  # noqa: E402
from rlm.models import build_tiny_model, cache_dir  # noqa: E402

# The parts of a run folder whose growth is reported, by where they live in it.
PARTS = {
    "checkpoints": "checkpoints",
    "metrics": "metrics.jsonl",
    "samples": "samples.jsonl",
    "tensorboard": "tb",
    "wandb": "wandb",
}


@dataclass
class Config:
    algorithm: str = "ppo"
    """Which experiment: ppo, grpo, rloo or sft."""
    model: str = "tiny"
    """'tiny' (the tests' random 2-layer Llama), 'default', a folder or a Hub id."""
    steps: int = 1000
    """Steps of the run."""
    interval: float = 5.0
    """Seconds between samples."""
    output_dir: Path | None = None
    """Where the run folder goes (default: a temporary folder, removed after)."""
    json: Path | None = None
    """Also write every sample and the table here."""
    extra: list[str] = field(default_factory=list)
    """More flags for the experiment (after ``--``)."""


@dataclass
class Sample:
    seconds: float
    step: int
    rss_mb: float
    folder_mb: dict[str, float]


def folder_sizes(run: Path) -> dict[str, float]:
    """Megabytes of each part of the run folder, and of all of it."""

    def size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        total = 0
        for dirpath, _, files in os.walk(path):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # a checkpoint rotated away
                    total += (Path(dirpath) / name).stat().st_size
        return total

    sizes = {part: size(run / where) / 1e6 for part, where in PARTS.items()}
    sizes["all"] = size(run) / 1e6
    return sizes


def resident_mb(process: psutil.Process) -> float:
    """Resident memory of ``process`` and its children (torchrun's workers), megabytes."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 1e6


def experiment_command(config: Config, output_dir: Path) -> list[str]:
    model = config.model
    if model == "tiny":
        model = str(build_tiny_model(cache_dir() / "tiny-llama-test"))
    script = ROOT / "experiments" / f"{config.algorithm}.py"
    return [sys.executable, str(script), "--model", model, "--steps", str(config.steps),
            "--output-dir", str(output_dir), *config.extra]  # fmt: skip


def tenths(samples: list[Sample], step_times: list[float], steps: int) -> list[dict[str, Any]]:
    """One row per tenth of the run: the last sample in it, and its median step time."""
    rows = []
    for k in range(1, 11):
        end = round(steps * k / 10)
        start = round(steps * (k - 1) / 10)
        inside = [s for s in samples if s.step <= end]
        if not inside:
            continue
        last = inside[-1]
        window = step_times[start:end]
        rows.append({
            "steps": f"{start + 1}-{end}",
            "rss_mb": last.rss_mb,
            "folder_mb": last.folder_mb["all"],
            **{f"{part}_mb": last.folder_mb[part] for part in PARTS},
            "step_s": statistics.median(window) if window else float("nan"),
        })  # fmt: skip
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ["steps", "rss_mb", "step_s", "folder_mb", *(f"{p}_mb" for p in PARTS)]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row["steps"]] + [
            f"{row[c]:.3f}" if c == "step_s" else f"{row[c]:.1f}" for c in columns[1:]
        ]
        print("| " + " | ".join(cells) + " |")


def main(config: Config) -> None:
    temporary = None
    output_dir = config.output_dir
    if output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="rlm-long-run-")
        output_dir = Path(temporary.name)
    output_dir.mkdir(parents=True, exist_ok=True)
    before = {p for p in output_dir.iterdir() if p.is_dir()}
    command = experiment_command(config, output_dir)
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    process = psutil.Process(child.pid)
    samples: list[Sample] = []
    run: Path | None = None
    while child.poll() is None:
        if run is None:
            new = [p for p in output_dir.iterdir() if p.is_dir() and p not in before]
            run = new[0] if new else None
        rss = resident_mb(process)
        if run is not None and rss > 0:  # 0: it ended since poll()
            rows = read_jsonl(run / "metrics.jsonl")
            step = rows[-1]["step"] if rows else 0
            samples.append(Sample(time.perf_counter() - started, step, rss, folder_sizes(run)))
        time.sleep(config.interval)
    if child.returncode != 0 or run is None or not samples:
        sys.exit(f"the run failed (exit status {child.returncode}); rerun without this script")
    final = folder_sizes(run)  # with the policy and summary written at the end
    step_times = [r["perf/time_iteration"] for r in read_jsonl(run / "metrics.jsonl")[1:]]
    rows = tenths(samples, step_times, config.steps)
    rows[-1].update({f"{p}_mb": final[p] for p in PARTS}, folder_mb=final["all"])
    print(f"\n{config.algorithm}, {config.steps} steps, model {config.model}, "
          f"{time.perf_counter() - started:.0f} s; resident memory at the end of each tenth, "
          "median step time over it, run folder at its end (MB):\n")  # fmt: skip
    print_table(rows)
    if config.json is not None:
        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(json.dumps({
            "config": {k: str(v) for k, v in asdict(config).items()},
            "command": command, "samples": [asdict(s) for s in samples],
            "final_folder_mb": final, "table": rows,
        }, indent=2))  # fmt: skip
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    main(tyro.cli(Config, args=argv, default=Config(extra=extra)))
