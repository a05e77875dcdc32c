"""GRPO (TRL's GRPOTrainer) on an rlm text environment; by default the PPO experiment's task.

    python experiments/grpo.py                                # SmolLM2-135M, positive tweets
    python experiments/grpo.py --seed 2 --beta 0.0            # any field below is a flag
    python experiments/grpo.py --env-id rlm/GuessNumber-v0 --prompt-format chat   # multi-turn
    python experiments/grpo.py --model runs/<sft run>/model   # after a supervised warm start

Each step: sample ``num_generations`` completions for each of ``batch_size /
num_generations`` training prompts, score them with the environment, and take one
GRPO step (group-normalised advantages, clipped ratio, KL to the reference with
``--beta``). Single-turn environments reach TRL as a dataset and a reward function;
multi-turn ones through ``rollout_func``, played by rlm's own rollout path with the
environment's replies masked out of the loss (see rlm/trl_adapters.py).

Model loading, LoRA, held-out evaluation, logging and the run folder are PPO's
(experiments/ppo_sentiment.py): config.json, meta.json, metrics.jsonl (with
``perf/tokens`` and ``eval/`` metrics), samples.jsonl, summary.json, tb/, wandb/, and
the trained adapter in policy/.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import check_env_id
from rlm.models import resolve_model_path
from rlm.rollout import make_prompt_format, resolve_prompt_format
from rlm.scripting import run_cli
from rlm.trl_adapters import (
    EnvReward,
    EnvRollout,
    EpisodeReward,
    TokenCounter,
    task_dataset,
)
from rlm.trl_experiment import (
    TRLSettings,
    actor_critic_of,
    load_policy,
    lora_config,
    train_and_report,
    trainer_arguments,
    trainer_output_dir,
    training_env,
    validate,
)


@dataclass
class Config:
    """GRPO (TRL) on an rlm text environment."""

    run: Annotated[TRLSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: TRLSettings(exp_name="grpo")
    )
    """Task, model, budget and logging (flags without a prefix: --seed, --lr, ...)."""
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo"] = "dapo"
    """TRL's GRPO loss: how token losses are aggregated (dapo, TRL's default) or clipped."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantage scaling: group (GRPO), batch, or none (Dr. GRPO)."""
    num_iterations: int = 1
    """Optimisation passes over each batch of completions (GRPO's mu)."""
    epsilon: float = 0.2
    """Clipping of the probability ratio."""


def main(config: Config) -> dict[str, Any]:
    """Train; return the summary (eval reward before/after, KL, tokens, wall time)."""
    from trl import GRPOConfig, GRPOTrainer  # imported here: a second of start-up for --help

    wall_start = time.time()
    settings = config.run
    validate(settings)
    settings.env_id = check_env_id(settings.env_id)  # "module:id" imports module first
    resolve_model_path(settings.model)  # fail on a bad path before any slow work

    # --- set-up: model, environment as TRL's dataset and reward (or rollout function)
    model, tokenizer = load_policy(settings)
    env = training_env(settings.env_id, settings.reward)
    prompt_kind = resolve_prompt_format(
        settings.prompt_format, tokenizer, conversational=env.conversational
    )
    prompt_format = make_prompt_format(prompt_kind, tokenizer)
    counter = TokenCounter()
    rollout: EnvRollout | None = None
    reward: EnvReward | EpisodeReward
    if env.multi_turn:
        rollout = EnvRollout(
            settings.env_id, tokenizer, prompt_format, seed=settings.seed, counter=counter,
            reward=env.reward_fn if settings.reward else None,
        )  # fmt: skip
        reward = EpisodeReward()
    else:
        reward = EnvReward(env, counter)
    dataset = task_dataset(env, prompt_format=prompt_kind)
    args = GRPOConfig(
        **trainer_arguments(settings, trainer_output_dir()),
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        num_iterations=config.num_iterations,
        epsilon=config.epsilon,
    )
    trainer = GRPOTrainer(
        model, reward_funcs=[reward], args=args, train_dataset=dataset,
        processing_class=tokenizer, peft_config=lora_config(settings), rollout_func=rollout,
    )  # fmt: skip
    policy = actor_critic_of(trainer)  # before training: the reference copy without LoRA
    if rollout is not None:
        rollout.policy = policy

    # --- evaluation before training, run folder, training, summary
    return train_and_report(
        trainer, settings, config, policy, tokenizer, prompt_format, counter,
        algorithm="grpo", wall_start=wall_start,
    )  # fmt: skip


def cli(argv: list[str] | None = None) -> int:
    """Parse flags, train, and turn user errors into one line and exit status 2."""
    return run_cli(main, Config, argv)


if __name__ == "__main__":
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL
    sys.exit(cli())
