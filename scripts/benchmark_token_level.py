"""The token-level view against the sequence-level rollout, side by side, in one run.

    python scripts/benchmark_token_level.py --threads 1            # default model, 8 envs
    python scripts/benchmark_token_level.py --batch-size 4 --max-new-tokens 10 --model <folder>

For the same policy (LoRA, a value head on the trunk), environments and number of
completion tokens, one iteration of each after a warm-up, ``--repeats`` times:

- rlm's PPO (:class:`rlm.ppo_learner.PPOLearner`): KV-cached generation of one
  completion per environment, the no-grad forward passes (policy, reference, values), the
  update (2 epochs x 2 minibatches);
- SB3's PPO on the token view (:class:`rlm.sb3_learner.TokenLearner`): ``--max-new-tokens``
  tokens per environment, one forward pass per token, the reference's pass for the KL
  penalty, the update (2 epochs in minibatches of up to 64 tokens).

It prints the medians, in seconds and tokens per second, and the ratios.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
import tyro
from accelerate import PartialState
from transformers import PreTrainedTokenizerBase

import envs  # noqa: F401  (registers the environments)
from rlm.env import make_text_vector_env
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_learner import Optimization, PPOLearner
from rlm.ppo_update import PPOSettings
from rlm.rollout import GenerationSettings, make_prompt_format
from rlm.sb3_learner import SB3Settings, TokenLearner


@dataclass
class Config:
    model: str = "default"
    """Policy: 'default', a local folder or a Hub id."""
    env_id: str = "rlm/Sentiment-v0"
    """Environment whose training split is rolled out."""
    batch_size: int = 8
    """Environments (one completion each per iteration)."""
    max_new_tokens: int = 20
    """Tokens per completion at most; the token view generates this many per environment."""
    repeats: int = 2
    """Timed iterations of each path (after one warm-up)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def _policy(model: str) -> tuple[ActorCritic, PreTrainedTokenizerBase]:
    torch.manual_seed(0)
    policy, tokenizer = load_causal_lm(model)
    return ActorCritic(add_lora(policy, LoraSettings())), tokenizer


def main(config: Config) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    generation = GenerationSettings(max_new_tokens=config.max_new_tokens)
    optimization = Optimization(lr=1e-4, total_steps=1_000)
    envs_ = make_text_vector_env(config.env_id, config.batch_size, split="train")

    actor_critic, tokenizer = _policy(config.model)
    sequence = PPOLearner(
        actor_critic, tokenizer, PPOSettings(), optimization=optimization,
        generation=generation, prompt_format=make_prompt_format("plain", tokenizer), seed=0,
    )  # fmt: skip
    seq: dict[str, list[float]] = {"tokens": [], "generate": [], "forward": [], "update": []}
    for repeat in range(config.repeats + 1):
        result = sequence.step(envs_, iteration=repeat)
        if repeat:
            seq["tokens"].append(result.tokens)
            seq["generate"].append(result.metrics["perf/time_generate"])
            seq["forward"].append(result.metrics["perf/time_forward"])
            seq["update"].append(result.metrics["perf/time_update"])

    actor_critic, tokenizer = _policy(config.model)
    tokens = config.batch_size * config.max_new_tokens
    settings = SB3Settings(n_steps=config.max_new_tokens, minibatch_size=math.gcd(64, tokens))
    token = TokenLearner(
        actor_critic, tokenizer, envs_.envs, settings, optimization=optimization,
        generation=generation, prompt_format=make_prompt_format("plain", tokenizer), seed=0,
        state=PartialState(),
    )  # fmt: skip
    tok: dict[str, list[float]] = {"tokens": [], "rollout": [], "reference": [], "update": []}
    for repeat in range(config.repeats + 1):
        result = token.step(iteration=repeat)
        if repeat:
            tok["tokens"].append(result.tokens)
            tok["rollout"].append(result.metrics["perf/time_rollout"])
            tok["reference"].append(result.metrics["perf/time_reference"])
            tok["update"].append(result.metrics["perf/time_update"])
    token.close()

    s = {k: statistics.median(v) for k, v in seq.items()}
    t = {k: statistics.median(v) for k, v in tok.items()}
    seq_step = s["generate"] + s["forward"] + s["update"]
    tok_step = t["rollout"] + t["update"]
    print(f"model {config.model}, {torch.get_num_threads()} threads, {config.batch_size} "
          f"environments, {config.max_new_tokens} new tokens, "
          f"medians of {config.repeats}")  # fmt: skip
    print("| path | tokens | sampling s | tokens/s sampled | of which reference s "
          "| no-grad forward s | update s | step s | step s per token |")  # fmt: skip
    print("| --- " * 9 + "|")
    print(f"| sequence-level PPO (rlm) | {s['tokens']:.0f} | {s['generate']:.2f} "
          f"| {s['tokens'] / s['generate']:.1f} | (in forward) | {s['forward']:.2f} "
          f"| {s['update']:.2f} | {seq_step:.2f} | {seq_step / s['tokens']:.3f} |")  # fmt: skip
    print(f"| token-level PPO (SB3) | {t['tokens']:.0f} | {t['rollout']:.2f} "
          f"| {t['tokens'] / t['rollout']:.1f} | {t['reference']:.2f} | (in sampling) "
          f"| {t['update']:.2f} | {tok_step:.2f} | {tok_step / t['tokens']:.3f} |")  # fmt: skip
    per_token = (tok_step / t["tokens"]) / (seq_step / s["tokens"])
    sampled = (t["tokens"] / t["rollout"]) / (s["tokens"] / s["generate"])
    print(f"\ntoken-level / sequence-level: {per_token:.1f}x the step time per token; "
          f"{sampled:.2f}x the sampling speed (the token view's sampling includes the "
          "reference's passes)")  # fmt: skip


if __name__ == "__main__":
    main(tyro.cli(Config))
