"""Where the PPO update's and the scoring passes' time and memory go: torch.profiler's
busiest operators in each, and what autograd keeps for the backward pass.

    python scripts/profile_update.py                          # the default configuration
    python scripts/profile_update.py --model <folder> --batch-size 2 --max-new-tokens 4

It builds rlm's default PPO configuration in this process (LoRA, a value head on the
policy's trunk, the default task, 16 episodes of at most 32 tokens, one thread), runs one
step to warm up, then profiles the next step's passes without gradients (the sampled
tokens' log-probs, the values, the reference's log-probs) and its update (2 epochs of 2
minibatches). For the update it also sums the tensors autograd saves for the backward
passes of one minibatch, by what they are: the memory a minibatch's forward pass holds
until its backward pass. docs/performance.md has what it showed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import tyro
from torch.profiler import ProfilerActivity, profile

import envs  # noqa: F401  (registers the environments)
from rlm.phase_probes import LEARNER_PHASES, ProfiledWork, default_ppo_run, probed_phases

PROFILED = (LEARNER_PHASES["score_episodes"], LEARNER_PHASES["ppo_update"])


@dataclass
class Config(ProfiledWork):
    rows: int = 12
    """Operators shown per phase."""


class SavedTensors:
    """The bytes autograd saves for backward, each storage counted once, by kind: the
    weights (resident anyway), vocabulary-wide tensors (logits and what is computed from
    them), the MLP's wide activations, and the rest of the trunk's activations."""

    def __init__(self, model: torch.nn.Module, vocab: int, mlp: int) -> None:
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.vocab, self.mlp = vocab, mlp
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = defaultdict(int)

    def kind(self, tensor: torch.Tensor) -> str:
        if tensor.untyped_storage().data_ptr() in self.weights:
            return "weights (resident anyway)"
        width = tensor.shape[-1] if tensor.dim() else 0
        if width == self.vocab:
            return "vocabulary-wide (logits, log-softmax)"
        if width == self.mlp:
            return "MLP activations (intermediate width)"
        return "other activations (hidden width, attention, LoRA)"

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.bytes[self.kind(tensor)] += storage.nbytes()
        return tensor


def operator_table(profiled: Any, rows: int) -> str:
    return str(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(config: Config) -> str:
    run = default_ppo_run(config, steps=2)
    text_config = run.policy.config.get_text_config()
    saved = SavedTensors(run.learner.model, text_config.vocab_size, text_config.intermediate_size)
    tables: dict[str, str] = {}
    seconds: dict[str, float] = {}
    minibatches: list[dict[str, int]] = []

    def first_minibatch_saved(*args: Any, **kwargs: Any) -> Any:
        # One minibatch's forward pass: what its backward pass will need, counted anew.
        if torch.is_grad_enabled() and not minibatches:
            saved.seen.clear()
            saved.bytes.clear()
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                output = forward(*args, **kwargs)
            minibatches.append(dict(saved.bytes))
            return output
        return forward(*args, **kwargs)

    def probe(phase: str, call: Callable[..., Any]) -> Callable[..., Any]:
        if phase not in PROFILED:
            return call

        def profiled_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as profiled:
                result = call(*args, **kwargs)
            seconds[phase] = time.perf_counter() - started
            tables[phase] = operator_table(profiled, config.rows)
            return result

        return profiled_call

    run.learner.step(run.envs, 0)  # warm-up
    model = run.learner.model
    forward = model.forward
    model.forward = first_minibatch_saved  # type: ignore[method-assign]
    try:
        with probed_phases(run, probe):
            run.learner.step(run.envs, 1)
    finally:
        del model.forward
    settings = run.learner.settings
    lines = [
        f"rlm's default PPO configuration, {config.batch_size} episodes x "
        f"{config.max_new_tokens} tokens, {config.threads} thread(s); the second step"
    ]
    for phase in PROFILED:
        lines += ["", f"{phase}: {seconds[phase]:.2f} s under the profiler", tables[phase]]
    per_minibatch = config.batch_size // settings.minibatches
    lines += [
        "",
        f"Saved for the backward pass of one minibatch ({per_minibatch} episodes):",
        "",
        "| tensors | MiB |",
        "| --- | --- |",
    ]
    for kind, count in sorted(minibatches[0].items(), key=lambda item: -item[1]):
        lines.append(f"| {kind} | {count / 2**20:.1f} |")
    activations = sum(n for k, n in minibatches[0].items() if not k.startswith("weights"))
    lines.append(f"| all but the weights | {activations / 2**20:.1f} |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main(tyro.cli(Config))
