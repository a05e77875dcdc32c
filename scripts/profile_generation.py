"""Where generation's time goes: torch.profiler's busiest operators over one batched
``generate`` of the default model, and the matmul rate at the decoding step's shapes.

    python scripts/profile_generation.py                      # 16 prompts x 32 tokens, 1 thread
    python scripts/profile_generation.py --model <folder> --batch-size 2 --max-new-tokens 4

The batch is the default task's first training prompts, sampled as PPO samples them
(:class:`rlm.samplers.HFSampler`), once to warm up and once profiled. The matmul table
times ``batch x hidden`` inputs against the model's own layer shapes (an MLP projection
and the vocabulary projection) in float32, in float32 with MKL's packed weights, and in
bfloat16: a decoding step multiplies a few rows by every weight, and these are the rates
it gets (at best: here each weight stays in the caches between calls).
docs/performance.md has what it showed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import tyro
from torch.profiler import ProfilerActivity, profile

import envs  # noqa: F401  (registers the environments)
from rlm.measured_runs import first_prompts
from rlm.models import load_causal_lm, resolve_model_path
from rlm.phase_probes import ProfiledWork
from rlm.rollout import GenerationSettings, eos_token_ids
from rlm.samplers import HFSampler


@dataclass
class Config(ProfiledWork):
    dtype: Literal["float32", "bfloat16"] = "float32"
    """The weights' dtype (float32: what rlm uses on a CPU)."""
    rows: int = 15
    """Operators shown."""


def matmul_rate(
    rows: int, inner: int, outer: int, dtype: torch.dtype, *, packed: bool = False,
    repeats: int = 20,
) -> float | None:  # fmt: skip
    """GFLOP/s of a ``rows x inner`` by ``inner x outer`` linear layer (nn.Linear's layout),
    its weight in the caches after the first call. ``packed``: float32 through MKL with
    the weight packed once for ``rows`` rows (what inductor does for frozen weights on a
    CPU), None where torch has no MKL."""
    layer = torch.nn.Linear(inner, outer, bias=False).to(dtype)
    x = torch.randn(rows, inner, dtype=dtype)
    forward: Callable[[torch.Tensor], torch.Tensor] = layer
    if packed:
        if not torch.backends.mkl.is_available():
            return None
        weight = layer.weight.detach()
        packed_weight = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)

        def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[misc]
            return torch.ops.mkl._mkl_linear(x, packed_weight, weight, None, rows)

    with torch.no_grad():
        forward(x)
        start = time.perf_counter()
        for _ in range(repeats):
            forward(x)
    return 2 * rows * inner * outer * repeats / (time.perf_counter() - start) / 1e9


def main(config: Config) -> str:
    torch.set_num_threads(config.threads)
    model, tokenizer = load_causal_lm(
        resolve_model_path(config.model), dtype=getattr(torch, config.dtype)
    )
    prompts = first_prompts(config.env_id, config.batch_size, tokenizer)
    sampler, generation = HFSampler(model), GenerationSettings(config.max_new_tokens)

    eos = eos_token_ids(tokenizer, model.generation_config.eos_token_id)

    def generate() -> None:
        sampler.sample(prompts, generation, eos_ids=eos, pad_id=tokenizer.pad_token_id)

    generate()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        generate()
    table = profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=config.rows)
    text_config = model.config.get_text_config()
    hidden, vocab = text_config.hidden_size, text_config.vocab_size
    shapes = {"MLP projection": text_config.intermediate_size, "vocabulary projection": vocab}
    lines = [
        f"{config.batch_size} prompts x {config.max_new_tokens} new tokens, "
        f"{config.threads} thread(s), {next(model.parameters()).dtype} weights",
        table,
        "| layer (one decoding step) | shape | float32 GFLOP/s "
        "| float32, MKL-packed weight GFLOP/s | bfloat16 GFLOP/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, outer in shapes.items():
        rates = [
            matmul_rate(config.batch_size, hidden, outer, torch.float32),
            matmul_rate(config.batch_size, hidden, outer, torch.float32, packed=True),
            matmul_rate(config.batch_size, hidden, outer, torch.bfloat16),
        ]
        cells = " | ".join("-" if r is None else f"{r:.1f}" for r in rates)
        lines.append(f"| {name} | {config.batch_size} x {hidden} x {outer} | {cells} |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main(tyro.cli(Config))
