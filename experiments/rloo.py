"""RLOO (TRL's RLOOTrainer) on an rlm text environment; by default the PPO experiment's task.

    python experiments/rloo.py                                 # SmolLM2-135M, positive tweets
    python experiments/rloo.py --seed 2 --num-generations 8    # any field is a flag (--help)
    python experiments/rloo.py --config configs/compare/rloo.yaml
    python experiments/rloo.py --model runs/<sft run>/policy   # after a supervised warm start
    python experiments/rloo.py --resume runs/<run>             # continue an interrupted run

Each step: sample ``--num-generations`` completions for each of ``--batch-size /
--num-generations`` training prompts, score them with the environment, subtract from
each reward the mean reward of the other completions of its prompt (leave-one-out
baseline), with ``--kl-coef`` times the KL to the reference in the reward, and take
``--epochs`` clipped policy-gradient passes over the batch.

Single-turn environments only: trl's RLOOTrainer (1.16) takes no ``rollout_func``, so a
multi-turn environment is refused with a message; train those with experiments/grpo.py
(``--scale-rewards none`` gives the leave-one-out advantage up to a factor n/(n-1)) or
experiments/ppo.py. Everything else is the runner's, as for PPO.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

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
class RLOOSettings(GroupSettings):
    """RLOO's group, KL weight and clipping, and whether to whiten its advantages."""

    normalize_advantages: bool = False
    """Whiten the leave-one-out advantages over the batch (TRL's default: off)."""


@dataclass
class Config:
    """RLOO (TRL) on a single-turn rlm text environment."""

    run: Annotated[RunSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=RunSettings)
    """Task, model, reward, budget, evaluation and logging: every algorithm's settings."""
    rloo: Annotated[RLOOSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=RLOOSettings)
    """RLOO's own settings."""


class RLOO(TRLAlgorithm):
    """TRL's RLOOTrainer on the runner's policy, environment and reward."""

    name = "rloo"
    samples_with_vllm = True

    def __init__(self, settings: RLOOSettings) -> None:
        super().__init__()
        self.settings = settings
        self.updates_per_step = settings.epochs  # each batch of completions, --epochs times

    def validate(self, settings: RunSettings) -> None:
        self.settings.validate(settings)

    def prepare(self, env: TextEnv, settings: RunSettings) -> None:
        if env.multi_turn:
            raise ConfigError(
                f"{env.env_id} is multi-turn and trl's RLOOTrainer takes no rollout_func: "
                "train it with experiments/grpo.py (--scale-rewards none for a leave-one-out-like "
                "baseline) or experiments/ppo.py"
            )

    def build_trainer(self, run: Run) -> Any:
        from trl import RLOOConfig, RLOOTrainer  # imported here: a second of start-up for --help

        reward, _ = reward_functions(run, self.counter)
        args = RLOOConfig(
            **trainer_arguments(
                run.settings, run.checkpoints_dir, updates_per_step=self.updates_per_step
            ),
            **sampling_arguments(run.settings, self.settings),
            normalize_advantages=self.settings.normalize_advantages,
        )
        return RLOOTrainer(
            run.policy.policy, reward_funcs=[reward], args=args,
            train_dataset=task_dataset(run.train_envs.envs[0], prompt_format=run.prompt_kind),
            processing_class=run.tokenizer,
        )  # fmt: skip


def main(config: Config) -> dict[str, Any] | None:
    """Train; return the summary (held-out reward before and after, KL, tokens, wall time)."""
    return run_experiment(config.run, RLOO(config.rloo), config)


def cli(argv: list[str] | None = None) -> int:
    """Parse flags (and --config), train, and turn user errors into one line and exit 2."""
    return run_cli(main, Config, argv, algorithm=RLOO.name)


if __name__ == "__main__":
    sys.exit(cli())
