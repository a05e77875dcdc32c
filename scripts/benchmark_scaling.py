"""Scaling on CPU, measured: processes, and model size.

    python scripts/benchmark_scaling.py --output scaling.md   # ~13 min on 2 cores
    python scripts/benchmark_scaling.py --tiny --model <folder>           # the test's

1. **Processes**: PPO and GRPO on the default task, one process with ``--cores`` threads
   and the whole batch, against ``--cores`` processes (torchrun, DDP) with one thread and
   an equal share of the batch each: episodes per second, and the ratio.
2. **Model size**: PPO in one process, the step time and the process's peak resident
   memory for the default model and for random models of SmolLM2-360M's and
   Qwen2.5-0.5B's shapes (the default tokenizer).

Every case is an experiment run as a user runs it (:mod:`rlm.measured_runs`); the figures
are medians over the steps after the first and before the last. Markdown tables are
printed, and written to ``--output`` with the command, the machine and the versions.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
import tyro

from rlm.measured_runs import (
    SHAPES,
    TINY_SHAPES,
    number,
    processes_table,
    random_model,
    scaled_case,
)
from rlm.models import resolve_model_path


@dataclass
class Config:
    model: str = "default"
    """The real model (and the random models' tokenizer)."""
    cores: int = 2
    """Cores shared out: threads of the one process, or processes of one thread."""
    steps: int = 4
    """Steps per case (timed: all but the first and the last)."""
    batch_size: int = 8
    """Episodes per step in all (the processes split it)."""
    max_new_tokens: int = 16
    """Tokens per completion at most."""
    algorithms: tuple[str, ...] = ("ppo", "grpo")
    """Algorithms of the processes table (PPO's one-process case is also the size table's
    first row)."""
    sizes: tuple[str, ...] = ("360m", "0.5b")
    """Random model shapes of the size table, besides the real model."""
    case_timeout: int = 900
    """Seconds a case may take before it counts as failed."""
    output: Path | None = None
    """A markdown file for the tables."""
    tiny: bool = False
    """Tiny random models and budgets: the check of this script itself."""


def _case(
    name: str, algorithm: str, model: str, config: Config, folder: Path, processes: int
) -> dict[str, Any]:
    group = ("--num-generations", str(min(4, config.batch_size // processes)))
    return scaled_case(
        name, algorithm, model, folder, processes=processes, cores=config.cores,
        steps=config.steps, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
        timeout=config.case_timeout, extra_flags=group if algorithm == "grpo" else (),
    )  # fmt: skip


def sizes_table(cases: list[dict[str, Any]]) -> str:
    lines = [
        "| model | parameters | step (s) | generated tokens/s | peak resident memory (GiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in cases:
        lines.append(
            f"| {case['label']} | {case['parameters'] / 1e6:.0f}M | "
            f"{number(case.get('step_time_s'))} | "
            f"{number(case.get('generated_tokens_per_s'), 1)} | "
            f"{number(case.get('memory_peak_gib'))} |"
        )
    return "\n".join(lines)


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def main(config: Config) -> str:
    if config.tiny:
        config.batch_size, config.max_new_tokens = 4, 6
    model = str(resolve_model_path(config.model))
    shapes = TINY_SHAPES if config.tiny else SHAPES
    with tempfile.TemporaryDirectory(prefix="scaling-") as scratch:
        work = Path(scratch)
        by_processes = [
            _case(f"{algorithm}-{processes}p", algorithm, model, config, work, processes)
            for algorithm in config.algorithms
            for processes in (1, config.cores)
        ]
        # The one-process PPO case is the real model's row of the size table.
        real = next((c for c in by_processes if c["case"] == "ppo-1p"), None)
        real = real or _case("ppo-1p", "ppo", model, config, work, 1)
        by_size = [{**real, "label": config.model}]
        for size in config.sizes:
            folder = random_model(shapes[size], model, work / f"random-{size}")
            case = _case(f"ppo-random-{size}", "ppo", str(folder), config, work, 1)
            by_size.append({**case, "label": f"random, {size} shape"})
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if "model name" in line),
               platform.machine())  # fmt: skip
    text = "\n\n".join([
        f"`python {' '.join(sys.argv)}` on {os.cpu_count()} cores ({cpu}), torch "
        f"{torch.__version__}, transformers {transformers.__version__}; {config.steps} steps "
        f"of {config.batch_size} episodes x {config.max_new_tokens} tokens, medians of the "
        "steps between the first and the last.",
        "Processes (the same global batch):", processes_table(by_processes),
        "Model size (PPO, one process):", sizes_table(by_size),
    ])  # fmt: skip
    print(text)
    if config.output is not None:
        config.output.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main(tyro.cli(Config))
