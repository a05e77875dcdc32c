"""One check of the GPU path, for a machine with a GPU and no network.

    python scripts/gpu_check.py                           # a GPU machine: about 8 minutes
    python scripts/gpu_check.py --tiny --model <folder>   # the same cases, tiny, on a CPU

Each case is an experiment as a user runs it (``experiments/<algorithm>.py`` in its own
process, bfloat16 on a GPU): PPO, GRPO and SFT on the default model, then PPO on randomly
initialised models of Qwen2.5-0.5B's and Qwen2.5-1.5B's shapes with the default
tokenizer (``--tiny``: models of a few layers). One JSON file holds, per case: whether it
passed (and the end of its output if not), the median step time, tokens generated per
second, the share of a step spent generating, the peak GPU memory, and for PPO the
update's model FLOP utilisation. The steps timed are those after the first (warm-up)
and before the last (which evaluates).

With vLLM installed (``pip install -e '.[vllm]'``), PPO and GRPO on the default model run
once more with ``--use-vllm``; without it, the file says that no vLLM case ran.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro

from rlm.files import write_json
from rlm.measured_runs import SHAPES, TINY_SHAPES, case_flags, random_model, run_case
from rlm.models import resolve_model_path

# Dense bfloat16 peak of the GPUs this is likely to meet, FLOP/s (the vendors' figures).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                   "L4": 121e12, "A10": 125e12}  # fmt: skip


VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


@dataclass
class Config:
    output: Path = Path("gpu_check.json")
    """The JSON file written."""
    model: str = "default"
    """The real model of the first cases; its tokenizer serves the random ones."""
    steps: int = 4
    """Steps per case (the timed ones: all but the first and the last)."""
    batch_size: int = 16
    """Episodes per step."""
    max_new_tokens: int = 64
    """Tokens per completion at most."""
    case_timeout: int = 90
    """Seconds a case may take before it counts as failed (5 cases: 7.5 minutes at most)."""
    cases: tuple[str, ...] = ()
    """Only these cases (names as in the JSON file, e.g. ppo-default); default: all."""
    tiny: bool = False
    """Tiny random models and budgets: the check of this script itself, on a CPU."""
    threads: int | None = None
    """torch CPU threads of each case (default: torch's choice)."""


def run(name: str, algorithm: str, model: str, config: Config, output_dir: Path) -> dict[str, Any]:
    """One case, with its algorithm's own flags; PPO's update MFU added."""
    flags = case_flags(
        model, output_dir, name, steps=config.steps, batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens, threads=config.threads,
    )  # fmt: skip
    if algorithm == "grpo":
        flags += ["--num-generations", "4"]
    if name.endswith("-vllm"):
        flags += ["--use-vllm"]
    if algorithm == "sft":
        flags += ["--max-examples", str(config.batch_size * config.steps)]
    case = run_case(name, algorithm, model, flags, output_dir, timeout=config.case_timeout)
    if case["passed"]:
        case["update_mfu"] = _update_mfu(case, config)
    return case


def _update_mfu(case: dict[str, Any], config: Config) -> float | None:
    """PPO's update: 4 FLOPs per parameter per token (a LoRA forward and its backward
    through the activations) over the completions' tokens, 2 epochs; the prompts' tokens
    are not counted, so this is a lower bound. None off a known GPU."""
    if not torch.cuda.is_available() or case["update_time_s"] is None:
        return None
    name = torch.cuda.get_device_name()
    peak = next((flops for gpu, flops in PEAK_BF16_FLOPS.items() if gpu in name), None)
    if peak is None or not case["completion_length"]:
        return None
    tokens = 2 * config.batch_size * case["completion_length"]
    return 4 * case["parameters"] * tokens / case["update_time_s"] / peak


def main(config: Config) -> list[dict[str, Any]]:
    if config.tiny:
        config.batch_size, config.max_new_tokens = 4, 6
    model = str(resolve_model_path(config.model))
    shapes = {size: (TINY_SHAPES if config.tiny else SHAPES)[size] for size in ("0.5b", "1.5b")}
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        plan = [(f"{algo}-default", algo, model) for algo in ("ppo", "grpo", "sft")]
        if VLLM_INSTALLED:
            plan += [(f"{algo}-default-vllm", algo, model) for algo in ("ppo", "grpo")]
        for size, shape in shapes.items():
            if config.cases and f"ppo-random-{size}" not in config.cases:
                continue
            folder = random_model(shape, model, work / f"random-{size}")
            plan.append((f"ppo-random-{size}", "ppo", str(folder)))
        for name, algorithm, path in plan:
            if config.cases and name not in config.cases:
                continue
            case = run(name, algorithm, path, config, work / "runs")
            cases.append(case)
            print(json.dumps({k: v for k, v in case.items() if k != "failure"}), flush=True)
    summary = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "tiny": config.tiny, "cases": cases,
        "vllm": "installed: the -vllm cases sample with it" if VLLM_INSTALLED
        else "not installed (pip install -e '.[vllm]'): no vLLM case was run",
        "passed": all(case["passed"] for case in cases),
    }  # fmt: skip
    write_json(config.output, summary)
    print(f"{sum(c['passed'] for c in cases)} of {len(cases)} cases passed; {config.output}")
    return cases


if __name__ == "__main__":
    sys.exit(0 if all(c["passed"] for c in main(tyro.cli(Config))) else 1)
