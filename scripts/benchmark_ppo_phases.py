"""Time each phase of a PPO iteration on the default model and print a table.

    python scripts/benchmark_ppo_phases.py                         # batch sizes 8 16 32
    python scripts/benchmark_ppo_phases.py --batch-sizes 16 --max-new-tokens 32 --threads 1
    python scripts/benchmark_ppo_phases.py --model /path/to/model --env-id rlm/GuessNumber-v0

Each batch size runs one untimed warm-up iteration, then ``--repeats`` timed ones, of the
experiment's own :class:`rlm.ppo_learner.PPOLearner` (LoRA, a value head on the trunk,
2 epochs x 2 minibatches by default): generation (KV cache) and the environment's reward,
the policy, reference and value forward passes, and the PPO update, read from the
``perf/time_*`` metrics each iteration logs. Times are medians over the repeats, in seconds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch
import tyro

import envs  # noqa: F401  (registers the environments)
from rlm.env import make_text_vector_env
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_learner import Optimization, PPOLearner
from rlm.ppo_update import PPOSettings
from rlm.rollout import GenerationSettings, make_prompt_format


@dataclass
class Config:
    model: str = "default"
    """Policy: 'default', a local folder or a Hub id."""
    env_id: str = "rlm/Sentiment-v0"
    """Environment whose training split is rolled out."""
    prompt_format: str = "plain"
    """'plain' or 'chat'."""
    batch_sizes: list[int] = field(default_factory=lambda: [8, 16, 32])
    """Episodes per iteration to time."""
    max_new_tokens: int = 20
    """Tokens per completion at most."""
    repeats: int = 2
    """Timed iterations per batch size (after one warm-up)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def main(config: Config) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    policy, tokenizer = load_causal_lm(config.model)
    actor_critic = ActorCritic(add_lora(policy, LoraSettings()))
    learner = PPOLearner(
        actor_critic, tokenizer, PPOSettings(),
        optimization=Optimization(lr=1e-4, total_steps=1_000),
        generation=GenerationSettings(max_new_tokens=config.max_new_tokens),
        prompt_format=make_prompt_format("chat" if config.prompt_format == "chat" else "plain",
                                         tokenizer),
        seed=0,
    )  # fmt: skip
    device = learner.accelerator.device
    print(f"model {config.model}, {torch.get_num_threads()} threads, device {device}")
    print(
        "| batch | tokens | generate s | tokens/s | env reward s | forward s | update s "
        "| iteration s | generate share |"
    )
    print("| --- " * 9 + "|")
    phases = ["perf/time_generate", "perf/time_score", "perf/time_forward", "perf/time_update"]
    for batch in config.batch_sizes:
        vector_env = make_text_vector_env(config.env_id, batch, split="train")
        rows: dict[str, list[float]] = {k: [] for k in [*phases, "tokens"]}
        for repeat in range(config.repeats + 1):
            result = learner.step(vector_env, iteration=repeat)
            if repeat == 0:
                continue  # warm-up
            for key in phases:
                rows[key].append(result.metrics[key])
            rows["tokens"].append(float(result.tokens))
        med = {k: statistics.median(v) for k, v in rows.items()}
        generate, score, forward, update = (med[k] for k in phases)
        total = generate + score + forward + update
        print(
            f"| {batch} | {med['tokens']:.0f} | {generate:.2f} | {med['tokens'] / generate:.0f} "
            f"| {score:.3f} | {forward:.2f} | {update:.2f} | {total:.2f} "
            f"| {generate / total:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main(tyro.cli(Config))
