"""GRPO (TRL's GRPOTrainer) on an rlm text environment; by default the PPO experiment's task.

    python experiments/grpo.py                                 # SmolLM2-135M, positive tweets
    python experiments/grpo.py --seed 2 --kl-coef 0.0          # any field is a flag (--help)
    python experiments/grpo.py --config configs/compare/grpo.yaml
    python experiments/grpo.py --env-id rlm/GuessNumber-v0     # multi-turn
    python experiments/grpo.py --model runs/<sft run>/policy   # after a supervised warm start
    python experiments/grpo.py --resume runs/<run>             # continue an interrupted run

Each step: sample ``--num-generations`` completions for each of ``--batch-size /
--num-generations`` training prompts, score them with the environment, and take GRPO's
step (group-normalised advantages, clipped ratio, ``--kl-coef`` times the KL to the
reference, ``--epochs`` passes over the batch). Single-turn environments reach TRL as a
dataset and a reward function; multi-turn ones through ``rollout_func``, played by rlm's
own rollout path with the environment's replies masked out of the loss
(rlm/trl_adapters.py). Everything else (model, LoRA, evaluation, logging, checkpoints,
the run folder) is the runner's, as for PPO.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import TextEnv
from rlm.errors import ConfigError
from rlm.runner import Run, run_experiment
from rlm.scripting import run_cli
from rlm.settings import RunSettings
from rlm.trl_adapters import task_dataset
from rlm.trl_runner import (
    GroupSettings,
    TRLAlgorithm,
    reward_functions,
    sampling_arguments,
    trainer_arguments,
)


@dataclass
class GRPOSettings(GroupSettings):
    """GRPO's group, KL weight and clipping, and how its loss aggregates tokens."""

    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo"] = "dapo"
    """TRL's GRPO loss: how token losses are aggregated (dapo, TRL's default) or clipped."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantage scaling: group (GRPO), batch, or none (Dr. GRPO)."""


@dataclass
class Config:
    """GRPO (TRL) on an rlm text environment."""

    run: Annotated[RunSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=RunSettings)
    """Task, model, reward, budget, evaluation and logging: every algorithm's settings."""
    grpo: Annotated[GRPOSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=GRPOSettings)
    """GRPO's own settings."""


class GRPO(TRLAlgorithm):
    """TRL's GRPOTrainer on the runner's policy, environment and reward."""

    name = "grpo"
    samples_with_vllm = True

    def __init__(self, settings: GRPOSettings) -> None:
        super().__init__()
        self.settings = settings
        self.updates_per_step = settings.epochs  # each batch of completions, --epochs times

    def validate(self, settings: RunSettings) -> None:
        self.settings.validate(settings)

    def prepare(self, env: TextEnv, settings: RunSettings) -> None:
        if env.multi_turn and settings.use_vllm:
            raise ConfigError(
                f"{env.env_id} is multi-turn: GRPO plays it through rlm's rollout "
                "(rollout_func), which TRL's vLLM engine does not sample; drop --use-vllm"
            )

    def build_trainer(self, run: Run) -> Any:
        from trl import GRPOConfig, GRPOTrainer  # imported here: a second of start-up for --help

        reward, rollout = reward_functions(run, self.counter)
        args = GRPOConfig(
            **trainer_arguments(
                run.settings, run.checkpoints_dir, updates_per_step=self.updates_per_step
            ),
            **sampling_arguments(run.settings, self.settings),
            loss_type=self.settings.loss_type,
            scale_rewards=self.settings.scale_rewards,
        )
        return GRPOTrainer(
            run.policy.policy, reward_funcs=[reward], args=args,
            train_dataset=task_dataset(run.train_envs.envs[0], prompt_format=run.prompt_kind),
            processing_class=run.tokenizer, rollout_func=rollout,
        )  # fmt: skip


def main(config: Config) -> dict[str, Any] | None:
    """Train; return the summary (held-out reward before and after, KL, tokens, wall time)."""
    return run_experiment(config.run, GRPO(config.grpo), config)


def cli(argv: list[str] | None = None) -> int:
    """Parse flags (and --config), train, and turn user errors into one line and exit 2."""
    return run_cli(main, Config, argv, algorithm=GRPO.name)


if __name__ == "__main__":
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL
    sys.exit(cli())
