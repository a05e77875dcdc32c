"""How fast a PPO step could be on this machine: each phase's arithmetic limit, from the
model's size and the machine's measured matmul throughput and memory bandwidth.

The model (the usual first-order count for a dense transformer): a forward pass costs
2 FLOPs per weight per token, its backward pass 2 more through the activations (all a
LoRA update needs: the adapter's own gradients are tiny) or 4 with every weight's
gradient (full fine-tuning). The vocabulary projection runs only where its logits are
used: the last prompt position in generation, the response positions in the scoring
passes and the update. A decoding step also reads every weight once, so its time is at
least the larger of its FLOPs over the matmul rate and the weights' bytes over the
memory bandwidth. Attention's own FLOPs (quadratic in the context) are left out: at a
few hundred tokens they are small next to the weights'; so each limit is a lower bound.

Example:
    >>> machine = Machine(cpu="test", cores=2, threads=1, matmul_flops=60e9,
    ...                   bf16_matmul_flops=400e9, bandwidth=10e9)
    >>> model = ModelSize(trunk=106_000_000, head=28_000_000, bytes_per_weight=4)
    >>> work = StepWork(episodes=16, context_tokens=16 * 40, completion_tokens=16 * 32,
    ...                 decode_steps=32, epochs=2)
    >>> round(phase_limits(model, machine, work)["forward"], 2)
    5.48
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Machine:
    """What this machine's CPU does: the matmul rate and the memory bandwidth, measured
    with ``threads`` torch threads."""

    cpu: str
    cores: int
    threads: int
    matmul_flops: float
    """float32 matmul FLOP/s: the limits' rate (rlm's weights are float32 on a CPU)."""
    bf16_matmul_flops: float
    """bfloat16 matmul FLOP/s (CPUs with AMX run these several times faster)."""
    bandwidth: float
    """Bytes per second copied (read plus written) through memory."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's word for it."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown"


def _best_seconds(work: object, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``work`` (after one warm-up call)."""
    assert callable(work)
    work()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def measure_machine(size: int = 1024, copy_mib: int = 256, repeats: int = 5) -> Machine:
    """Time ``size x size`` matmuls (float32 and bfloat16) and a ``copy_mib`` MiB copy
    with torch's current threads; the best of ``repeats`` each."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    matmul = _best_seconds(lambda: torch.mm(a, b), repeats)
    a16, b16 = a.bfloat16(), b.bfloat16()
    matmul_bf16 = _best_seconds(lambda: torch.mm(a16, b16), repeats)
    source = torch.empty(copy_mib * 2**20 // 4)
    target = torch.empty_like(source)
    copy = _best_seconds(lambda: target.copy_(source), repeats)
    return Machine(
        cpu=cpu_name(), cores=os.cpu_count() or 1, threads=torch.get_num_threads(),
        matmul_flops=2 * size**3 / matmul, bandwidth=2 * source.nbytes / copy,
        bf16_matmul_flops=2 * size**3 / matmul_bf16,
    )  # fmt: skip


@dataclass(frozen=True)
class ModelSize:
    """A causal LM's weights, split where the passes differ."""

    trunk: int
    """Weights before the vocabulary projection (the embedding lookup costs no FLOPs, but
    a tied embedding is the projection: then it counts in ``head``)."""
    head: int
    """The vocabulary projection's weights."""
    bytes_per_weight: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelSize:
        """The sizes of a transformers causal LM (a peft model's base; adapters not
        counted)."""
        get_base = getattr(model, "get_base_model", None)
        base: Any = get_base() if callable(get_base) else model
        head = base.get_output_embeddings().weight
        embedding = base.get_input_embeddings().weight
        weights = {id(p): p for n, p in base.named_parameters() if "lora_" not in n}
        total = sum(p.numel() for p in weights.values())
        lookup = 0 if embedding is head else embedding.numel()
        return cls(
            trunk=total - head.numel() - lookup, head=head.numel(),
            bytes_per_weight=head.element_size(),
        )  # fmt: skip

    @property
    def weights(self) -> int:
        return self.trunk + self.head


@dataclass(frozen=True)
class StepWork:
    """What one PPO step computed (one process)."""

    episodes: int
    context_tokens: int
    """Tokens of all the episodes' sequences (prompts, completions, replies; no padding)."""
    completion_tokens: int
    """Tokens the policy generated."""
    decode_steps: int
    """Decoding passes of the batched generation (the longest completion, per turn)."""
    epochs: int
    full_fine_tune: bool = False


def phase_limits(model: ModelSize, machine: Machine, work: StepWork) -> dict[str, float]:
    """The least seconds each phase of the step can take: ``generate``, ``forward`` (the
    policy's and the reference's passes without gradients) and ``update``."""
    flops = machine.matmul_flops
    prompt_tokens = work.context_tokens - work.completion_tokens
    prefill = 2 * (model.trunk * prompt_tokens + model.head * work.episodes)
    decode_compute = 2 * model.weights * work.episodes / flops
    decode_memory = model.weights * model.bytes_per_weight / machine.bandwidth
    generate = prefill / flops + work.decode_steps * max(decode_compute, decode_memory)
    # One pass over the sequences, the projection on the completions' positions.
    one_pass = 2 * (model.trunk * work.context_tokens + model.head * work.completion_tokens)
    backward = 2 if work.full_fine_tune else 1  # times a forward's FLOPs
    return {
        "generate": generate,
        "forward": 2 * one_pass / flops,  # policy (with the values) and reference
        "update": work.epochs * (1 + backward) * one_pass / flops,
    }
