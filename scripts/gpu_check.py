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

vLLM rollouts are not part of rlm yet; the file says so instead of timing them.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro
from safetensors import safe_open

from rlm.files import read_jsonl, write_json
from rlm.models import load_causal_lm, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]

# Dense bfloat16 peak of the GPUs this is likely to meet, FLOP/s (the vendors' figures).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                   "L4": 121e12, "A10": 125e12}  # fmt: skip

# Decoder shapes of real model families: (hidden, layers, heads, key-value heads, MLP).
SHAPES = {
    "0.5b": (896, 24, 14, 2, 4864),  # Qwen2.5-0.5B
    "1.5b": (1536, 28, 12, 2, 8960),  # Qwen2.5-1.5B
}
TINY_SHAPES = {"0.5b": (64, 2, 4, 2, 128), "1.5b": (96, 3, 4, 2, 192)}


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


def random_model(shape: tuple[int, int, int, int, int], tokenizer_from: str, folder: Path) -> Path:
    """A randomly initialised Qwen2 decoder of ``shape`` with ``tokenizer_from``'s tokenizer,
    saved in ``folder``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tokenizer = load_causal_lm(tokenizer_from)
    hidden, layers, heads, kv_heads, mlp = shape
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=mlp,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def parameters(folder: str) -> int:
    """The model's parameters, from its safetensors files' headers (nothing loaded)."""
    count = 0
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(path, "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is no dict)
                count += math.prod(weights.get_slice(key).get_shape())
    return count


def run_case(
    name: str, algorithm: str, model: str, config: Config, output_dir: Path
) -> dict[str, Any]:
    """Run one experiment and read its metrics back."""
    flags = [
        "--model", model, "--steps", str(config.steps), "--batch-size", str(config.batch_size),
        "--max-new-tokens", str(config.max_new_tokens), "--eval-prompts", str(config.batch_size),
        "--eval-every", str(config.steps), "--checkpoint-every", str(config.steps),
        "--output-dir", str(output_dir), "--run-name", name, "--wandb", "disabled",
    ]  # fmt: skip
    if config.threads:
        flags += ["--threads", str(config.threads)]
    if algorithm == "grpo":
        flags += ["--num-generations", "4"]
    if algorithm == "sft":
        flags += ["--max-examples", str(config.batch_size * config.steps)]
    command = [sys.executable, str(ROOT / "experiments" / f"{algorithm}.py"), *flags]
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=config.case_timeout
        )
        failure = None if result.returncode == 0 else (result.stderr or result.stdout)[-2000:]
    except subprocess.TimeoutExpired:
        failure = f"did not finish within {config.case_timeout} s"
    case: dict[str, Any] = {
        "case": name, "algorithm": algorithm, "model": model,
        "parameters": parameters(model), "passed": failure is None,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    if failure is not None:
        return {**case, "failure": failure}
    rows = [r for r in read_jsonl(output_dir / name / "metrics.jsonl") if r["step"] > 0]
    timed = rows[1:-1] or rows  # after the warm-up, before the evaluating last step

    def median(key: str) -> float | None:
        values = [r[key] for r in timed if key in r]
        return statistics.median(values) if values else None

    step = median("perf/time_iteration")
    tokens = [b["perf/tokens"] - a["perf/tokens"] for a, b in itertools.pairwise(rows)]
    generate = median("perf/time_generate")
    peaks = [r["perf/gpu_memory_peak_gib"] for r in rows if "perf/gpu_memory_peak_gib" in r]
    case.update(
        step_time_s=step,
        # PPO times its generation; otherwise tokens over the whole step.
        generated_tokens_per_s=median("perf/tokens_per_second")
        or (statistics.median(tokens) / step if step and tokens and any(tokens) else None),
        generate_share=generate / step if generate is not None and step else None,
        gpu_memory_peak_gib=max(peaks) if peaks else None,
        update_mfu=_update_mfu(case["parameters"], timed, config),
    )
    return case


def _update_mfu(params: int, rows: list[dict[str, Any]], config: Config) -> float | None:
    """PPO's update: 4 FLOPs per parameter per token (a LoRA forward and its backward
    through the activations) over the completions' tokens, 2 epochs; the prompts' tokens
    are not counted, so this is a lower bound. None off a known GPU."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((flops for gpu, flops in PEAK_BF16_FLOPS.items() if gpu in name), None)
    times = [r["perf/time_update"] for r in rows if "perf/time_update" in r]
    lengths = [r["train/completion_length"] for r in rows if "train/completion_length" in r]
    if peak is None or not times or not lengths:
        return None
    tokens = 2 * config.batch_size * statistics.median(lengths)
    return 4 * params * tokens / statistics.median(times) / peak


def main(config: Config) -> list[dict[str, Any]]:
    if config.tiny:
        config.batch_size, config.max_new_tokens = 4, 6
    model = str(resolve_model_path(config.model))
    shapes = TINY_SHAPES if config.tiny else SHAPES
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        plan = [(f"{algo}-default", algo, model) for algo in ("ppo", "grpo", "sft")]
        for size, shape in shapes.items():
            if config.cases and f"ppo-random-{size}" not in config.cases:
                continue
            folder = random_model(shape, model, work / f"random-{size}")
            plan.append((f"ppo-random-{size}", "ppo", str(folder)))
        for name, algorithm, path in plan:
            if config.cases and name not in config.cases:
                continue
            case = run_case(name, algorithm, path, config, work / "runs")
            cases.append(case)
            print(json.dumps({k: v for k, v in case.items() if k != "failure"}), flush=True)
    summary = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "tiny": config.tiny, "cases": cases,
        "vllm": "not part of rlm yet: no vLLM case was run",
        "passed": all(case["passed"] for case in cases),
    }  # fmt: skip
    write_json(config.output, summary)
    print(f"{sum(c['passed'] for c in cases)} of {len(cases)} cases passed; {config.output}")
    return cases


if __name__ == "__main__":
    sys.exit(0 if all(c["passed"] for c in main(tyro.cli(Config))) else 1)
