"""RLOO (TRL's RLOOTrainer) on an rlm text environment; by default the PPO experiment's task.

    python experiments/rloo.py                                # SmolLM2-135M, positive tweets
    python experiments/rloo.py --seed 2 --num-generations 8   # any field below is a flag
    python experiments/rloo.py --model runs/<sft run>/model   # after a supervised warm start

Each step: sample ``num_generations`` completions for each of ``batch_size /
num_generations`` training prompts, score them with the environment, subtract from each
reward the mean reward of the other completions of its prompt (leave-one-out baseline),
with the KL to the reference in the reward (``--beta``), and take one policy-gradient
step with a clipped ratio.

Single-turn environments only: trl's RLOOTrainer (1.16) takes no ``rollout_func``, so
a multi-turn environment is refused with a message; train those with
experiments/grpo.py (``--scale-rewards none`` gives the leave-one-out advantage up to a
factor n/(n-1)) or with PPO.

Model loading, LoRA, held-out evaluation, logging and the run folder are PPO's
(experiments/ppo_sentiment.py); the trained adapter is saved in policy/.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import check_env_id
from rlm.errors import ConfigError
from rlm.models import resolve_model_path
from rlm.rollout import make_prompt_format, resolve_prompt_format
from rlm.scripting import run_cli
from rlm.trl_adapters import EnvReward, TokenCounter, task_dataset
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
    """RLOO (TRL) on a single-turn rlm text environment."""

    run: Annotated[TRLSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: TRLSettings(exp_name="rloo")
    )
    """Task, model, budget and logging (flags without a prefix: --seed, --lr, ...)."""
    normalize_advantages: bool = False
    """Whiten the leave-one-out advantages over the batch (TRL's default: off)."""
    num_iterations: int = 1
    """Optimisation passes over each batch of completions."""
    epsilon: float = 0.2
    """Clipping of the probability ratio."""


def main(config: Config) -> dict[str, Any]:
    """Train; return the summary (eval reward before/after, KL, tokens, wall time)."""
    from trl import RLOOConfig, RLOOTrainer  # imported here: a second of start-up for --help

    wall_start = time.time()
    settings = config.run
    validate(settings)
    settings.env_id = check_env_id(settings.env_id)  # "module:id" imports module first
    resolve_model_path(settings.model)  # fail on a bad path before any slow work
    env = training_env(settings.env_id, settings.reward)
    if env.multi_turn:
        raise ConfigError(
            f"{settings.env_id} is multi-turn and trl's RLOOTrainer takes no rollout_func: "
            "train it with experiments/grpo.py (--scale-rewards none for a leave-one-out-like "
            "baseline) or experiments/ppo_sentiment.py"
        )

    # --- set-up: model, environment as TRL's dataset and reward
    model, tokenizer = load_policy(settings)
    prompt_kind = resolve_prompt_format(
        settings.prompt_format, tokenizer, conversational=env.conversational
    )
    prompt_format = make_prompt_format(prompt_kind, tokenizer)
    counter = TokenCounter()
    dataset = task_dataset(env, prompt_format=prompt_kind)
    args = RLOOConfig(
        **trainer_arguments(settings, trainer_output_dir()),
        normalize_advantages=config.normalize_advantages,
        num_iterations=config.num_iterations,
        epsilon=config.epsilon,
    )
    trainer = RLOOTrainer(
        model, reward_funcs=[EnvReward(env, counter)], args=args, train_dataset=dataset,
        processing_class=tokenizer, peft_config=lora_config(settings),
    )  # fmt: skip
    policy = actor_critic_of(trainer)  # before training: the reference copy without LoRA

    # --- evaluation before training, run folder, training, summary
    return train_and_report(
        trainer, settings, config, policy, tokenizer, prompt_format, counter,
        algorithm="rloo", wall_start=wall_start,
    )  # fmt: skip


def cli(argv: list[str] | None = None) -> int:
    """Parse flags, train, and turn user errors into one line and exit status 2."""
    return run_cli(main, Config, argv)


if __name__ == "__main__":
    sys.exit(cli())
