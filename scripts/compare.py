"""Run arms (config files) over seeds and compare them with bootstrap intervals.

    python scripts/compare.py run configs/demo.yaml --seeds 1 2 3 --output-dir runs/demo
    python scripts/compare.py run configs/compare/*.yaml --seeds 1 2 3 --base-kl \\
        --report docs/algorithm_comparison.md
    python scripts/compare.py plan configs/compare/*.yaml --seeds 1   # print the commands
    python scripts/compare.py run configs/compare/grpo.yaml --seeds 4 # add to the folder
    python scripts/compare.py base-kl --output-dir runs/compare       # KL of each policy to base
    python scripts/compare.py report --output-dir runs/compare        # tables and figure
    python scripts/compare.py time configs/compare/*.yaml             # CPU s per step of each arm
    python scripts/compare.py run configs/demo.yaml -- --threads 1    # flags after -- for every run

An arm is a config file (``configs/compare/grpo.yaml``) that names its algorithm; its
name is the file's stem. Each seed of an arm is one run of ``experiments/<algorithm>.py
--config ARM --seed S --output-dir <output-dir>/<arm>``, one after the other (so that
wall times are comparable), every command appended to ``<output-dir>/commands.jsonl``.
An arm whose ``model`` is ``arm:NAME`` starts from the policy of arm NAME's run of the
same seed (SFT, then PPO): list it after NAME. ``--base-kl`` then evaluates every final
policy again against ``--base-model`` (scripts/evaluate_run.py, into
``<run>/eval_base.json``), which makes runs that started from a warm start comparable and
checks that the recorded evaluations repeat. ``report`` (the last step of ``run`` too)
reads the run folders (rlm/comparison.py) and writes the markdown report and its figure,
and the same runs as one HTML page beside it (``report.html``: rlm/report.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: import rlm from the checkout

from rlm.comparison import BASE_EVAL, collect, finished_runs, newest_run, report  # noqa: E402
from rlm.config_files import read_settings_file  # noqa: E402
from rlm.errors import ConfigError  # noqa: E402
from rlm.report import write_report as write_html_report  # noqa: E402
from rlm.run_folders import RunFolder  # noqa: E402
from rlm.scripting import parse_config, run_cli  # noqa: E402
from rlm.settings import RunSettings  # noqa: E402

LABELS = {
    "ppo": "PPO (rlm)",
    "grpo": "GRPO (TRL)",
    "rloo": "RLOO (TRL)",
    "sft": "SFT",
    "sft_ppo": "SFT, then PPO",
    "demo": "PPO (make demo)",
    "sb3_ppo": "PPO (SB3, token-level)",
    "sb3_a2c": "A2C (SB3, token-level)",
    "sb3_nlpo": "NLPO (sb3-contrib, token-level)",
}
ARM_MODEL_PREFIX = "arm:"

Arms = Annotated[list[Path], tyro.conf.Positional]


@dataclass
class Output:
    """Where the runs go and where the report is written."""

    output_dir: Path = Path("runs/compare")
    """Folder of the comparison: one folder per arm, holding its runs."""
    report: Path | None = None
    """The markdown report (default: <output-dir>/report.md); the figure goes beside it."""
    notes: Path | None = None
    """A markdown file included in the report (default: <output-dir>/notes.md if present)."""


@dataclass
class Plan:
    """Print the command of every run, and run nothing."""

    arms: Arms
    """Config files, one per arm (each names its algorithm)."""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """Seeds of every arm."""
    output: Annotated[Output, tyro.conf.OmitArgPrefixes] = field(default_factory=Output)


@dataclass
class Run(Plan):
    """Run every arm x seed one after the other, then write the report."""

    base_kl: bool = False
    """Evaluate every final policy again against --base-model (KL to the base model)."""
    base_model: str = "default"
    """The reference of --base-kl."""


@dataclass
class BaseKL:
    """Evaluate every finished run without eval_base.json against the base model."""

    output: Annotated[Output, tyro.conf.OmitArgPrefixes] = field(default_factory=Output)
    base_model: str = "default"
    """The reference every run's KL is measured to."""


@dataclass
class Report:
    """Write the report (tables, figure, commands) from the finished runs."""

    output: Annotated[Output, tyro.conf.OmitArgPrefixes] = field(default_factory=Output)
    arms: list[str] | None = None
    """Arms to include, in this order (default: every arm folder, sorted)."""


@dataclass
class Time:
    """Run each arm for a few steps at one thread; estimate the CPU time of a whole run."""

    arms: Arms
    """Config files, one per arm."""
    timing_steps: int = 5
    """Steps of each timing run (evaluated only before and after)."""
    output: Annotated[Output, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: Output(output_dir=Path("runs/compare-timing"))
    )


# --- running --------------------------------------------------------------------------------


def arm_settings(path: Path) -> dict[str, Any]:
    """An arm's config file; it must name its algorithm."""
    values = read_settings_file(path)
    if "algorithm" not in values:
        raise ConfigError(f"{path}: an arm names its algorithm (algorithm: ppo, grpo, ...)")
    return values


def arm_run_settings(arm: Path) -> RunSettings:
    """The shared settings an arm's runs get: its config file over the experiment's defaults."""
    algorithm = arm_settings(arm)["algorithm"]
    path = ROOT / "experiments" / f"{algorithm}.py"
    spec = importlib.util.spec_from_file_location(f"experiment_{algorithm}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ConfigError(f"{arm}: no experiment for algorithm {algorithm!r} ({path})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    config = parse_config(module.Config, ["--config", str(arm)], algorithm=algorithm)
    return config.run  # type: ignore[no-any-return]


def display(path: Path | str) -> str:
    """A path as a reader types it: relative to the project when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_command(arm: Path, seed: int, output_dir: Path, extra: list[str]) -> list[str]:
    """One run of ``arm``; an ``arm:NAME`` model becomes NAME's policy of the same seed."""
    values = arm_settings(arm)
    command = [
        "python", f"experiments/{values['algorithm']}.py", "--config", display(arm),
        "--seed", str(seed), "--output-dir", display(output_dir / arm.stem),
        # One W&B group per comparison, the arm as the job type: W&B groups the seeds.
        "--wandb-group", output_dir.resolve().name, "--wandb-job-type", arm.stem, *extra,
    ]  # fmt: skip
    model = values.get("model") or values.get("run", {}).get("model")
    if isinstance(model, str) and model.startswith(ARM_MODEL_PREFIX):
        start_arm = model.removeprefix(ARM_MODEL_PREFIX)
        start = newest_run(output_dir / start_arm, seed)
        policy = display(start.policy_dir) if start else f"<{start_arm} run of seed {seed}>/policy"
        command += ["--model", policy]
    return command


def execute(command: list[str], log: Path) -> float:
    """Run ``command`` from the project root, record it in ``log``; return its wall time."""
    print("$", shlex.join(command), flush=True)
    start = time.time()
    result = subprocess.run([sys.executable, *command[1:]], cwd=ROOT)
    elapsed = time.time() - start
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        record = {"command": shlex.join(command), "returncode": result.returncode}
        f.write(json.dumps({**record, "wall_time_s": round(elapsed, 1)}) + "\n")
    if result.returncode != 0:
        raise ConfigError(f"failed with exit status {result.returncode}: {shlex.join(command)}")
    return elapsed


def evaluate_against_base(output_dir: Path, base_model: str) -> None:
    """scripts/evaluate_run.py against ``base_model`` for every run still without one."""
    for arm in sorted(p for p in output_dir.iterdir() if p.is_dir()):
        for run in finished_runs(arm):
            if not (run.path / BASE_EVAL).exists():
                command = [
                    "python", "scripts/evaluate_run.py", display(run.path),
                    "--reference", base_model, "--output", display(run.path / BASE_EVAL),
                ]  # fmt: skip
                execute(command, output_dir / "commands.jsonl")


def write_report(output: Output, arms: list[str] | None = None) -> str:
    records = collect(output.output_dir, arms)
    if not records:
        raise ConfigError(f"no finished runs under {output.output_dir}/<arm>/")
    path = output.report or output.output_dir / "report.md"
    notes = output.notes or output.output_dir / "notes.md"
    log = output.output_dir / "commands.jsonl"
    commands = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    text = report(
        records, figure_path=path.with_suffix(".png"), labels=LABELS,
        source=display(output.output_dir),
        commands=[f"{c['command']}    # {c['wall_time_s']} s" for c in commands],
        notes=notes.read_text() if notes.is_file() else None,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    print(f"report written to {path}")
    # The same runs as one HTML page (curves, diagnostics, alarms, samples), for a browser.
    runs = [
        RunFolder.open(r.run.path, LABELS.get(arm, arm)) for arm in records for r in records[arm]
    ]
    title = f"Comparison: {', '.join(LABELS.get(a, a) for a in records)}"
    page = write_html_report(runs, path.with_suffix(".html"), title=title)
    print(f"HTML report written to {page}")
    return text


# --- timing ---------------------------------------------------------------------------------


def timing(config: Time, extra: list[str]) -> str:
    """CPU seconds per step and per evaluation of each arm, and of one whole run."""
    out = config.output.output_dir
    n = config.timing_steps
    lines = [
        "| arm | CPU s per step (1 thread) | CPU s per evaluation | steps | CPU s per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm in config.arms:
        flags = ["--steps", str(n), "--eval-every", str(n), "--checkpoint-every", str(n),
                 "--threads", "1", "--wandb", "disabled", *extra]  # fmt: skip
        command = run_command(arm, 1, out, flags)
        execute(command, out / "commands.jsonl")
        run = finished_runs(out / arm.stem)[-1]
        rows = [r for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines())]
        cpu = [r["perf/time_iteration_cpu"] for r in rows if "perf/time_iteration_cpu" in r]
        step = float(np.median(cpu[:-1])) if len(cpu) > 1 else float(cpu[0])
        evaluation = max(cpu[-1] - step, 0.0)  # the last step also evaluated
        # The arm's own run: its steps, or fewer when its token budget ends it first.
        settings = arm_run_settings(arm)
        steps = settings.steps
        if settings.token_budget is not None and run.summary["generated_tokens"]:
            per_step = run.summary["generated_tokens"] / n
            steps = min(steps, math.ceil(settings.token_budget / per_step))
        evaluations = 1 + math.ceil(steps / settings.eval_every)  # before, every N, the end
        total = steps * step + evaluations * evaluation
        lines.append(f"| {arm.stem} | {step:.1f} | {evaluation:.1f} | {steps} | {total:,.0f} |")
    return "\n".join(lines)


def main(config: Plan | Run | BaseKL | Report | Time, extra: list[str]) -> None:
    if isinstance(config, Time):
        print(timing(config, extra))
        return
    if isinstance(config, Plan):  # Run too
        out = config.output.output_dir
        for seed in config.seeds:
            for arm in config.arms:
                command = run_command(arm, seed, out, extra)
                if isinstance(config, Run):
                    execute(command, out / "commands.jsonl")
                else:
                    print(shlex.join(command))
        if not isinstance(config, Run):
            return
    if isinstance(config, Run | BaseKL) and (not isinstance(config, Run) or config.base_kl):
        evaluate_against_base(config.output.output_dir, config.base_model)
    arms = config.arms if isinstance(config, Report) else None
    if isinstance(config, Run):
        arms = list(dict.fromkeys(arm.stem for arm in config.arms))
    write_report(config.output, arms)


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Flags after "--" go to every run (e.g. -- --threads 1), wherever the action stands.
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    actions = {"plan": Plan, "run": Run, "base-kl": BaseKL, "report": Report, "time": Time}
    if not argv or argv[0] not in actions:
        print(f"usage: compare.py {{{','.join(actions)}}} ... (--help)", file=sys.stderr)
        return 2
    return run_cli(lambda config: main(config, extra), actions[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(cli())
