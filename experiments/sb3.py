"""Token-level RL with stable-baselines3: every step of the MDP is one token.

    python experiments/sb3.py --algo ppo                   # SB3's PPO, the PPO experiment's task
    python experiments/sb3.py --algo a2c --lr 3e-4         # SB3's A2C
    python experiments/sb3.py --algo nlpo                  # NLPO: MaskablePPO, top-p mask
    python experiments/sb3.py --config configs/compare/sb3_ppo.yaml
    python experiments/sb3.py --env-id rlm/GuessNumber-v0  # multi-turn: replies join the context
    python experiments/sb3.py --resume runs/<run>          # continue an interrupted run

Each step: every one of ``--batch-size`` token views of the environment
(rlm/token_env.py) generates ``--n-steps`` tokens with the LM-backed SB3 policy
(rlm/token_policy.py), one token per environment step; a turn's reward arrives on its
last token, minus ``--kl-coef`` times each token's KL to the reference; then SB3's
update (rlm/sb3_learner.py). Everything else is the runner's, as for the sequence-level
algorithms: the held-out evaluation through rlm's own rollout path (so its numbers compare
with experiments/ppo.py's), the run folder, W&B and TensorBoard, checkpoints and resume.

The token view is slow by construction: SB3 hands the policy one observation per step,
so each token costs a forward pass over the whole context (no KV cache), and each update
one forward and backward pass per token. docs/token_level.md measures how much.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import TextEnv
from rlm.errors import ConfigError
from rlm.ppo_learner import Optimization
from rlm.runner import Algorithm, Run, run_experiment
from rlm.sb3_learner import SB3Settings, TokenLearner
from rlm.scripting import run_cli
from rlm.settings import RunSettings


@dataclass
class Config:
    """Token-level PPO, A2C or NLPO (stable-baselines3) on an rlm text environment."""

    run: Annotated[RunSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=RunSettings)
    """Task, model, reward, budget, evaluation and logging: every algorithm's settings."""
    sb3: Annotated[SB3Settings, tyro.conf.OmitArgPrefixes] = field(default_factory=SB3Settings)
    """The token-level algorithm and its update."""


class SB3(Algorithm):
    """An SB3 algorithm on the token view: one :class:`TokenLearner` step per rlm step."""

    name = "sb3"

    def __init__(self, settings: SB3Settings) -> None:
        self.settings = settings

    @property
    def label(self) -> str:
        return f"sb3-{self.settings.algo}"

    def memory_advice(self, settings: RunSettings) -> list[str]:
        if self.settings.algo == "a2c":  # its one update takes the whole rollout
            return [f"lower --n-steps (now {self.settings.n_steps})"]
        return [f"lower --minibatch-size (now {self.settings.minibatch_size})"]

    def validate(self, settings: RunSettings) -> None:
        self.settings.validate(settings.batch_size, settings.max_new_tokens)
        if settings.top_k or settings.top_p < 1:
            raise ConfigError(
                "the token view samples each token from the policy's full distribution: "
                "leave --top-k and --top-p off (--algo nlpo limits tokens to a nucleus)"
            )
        from accelerate import PartialState

        if PartialState().num_processes > 1:
            raise ConfigError(
                "stable-baselines3 trains in one process: run sb3.py without torchrun"
            )

    def prepare(self, env: TextEnv, settings: RunSettings) -> None:
        longest = env.max_turns * settings.max_new_tokens
        if env.multi_turn and self.settings.n_steps < longest:
            # Not an error: each turn is scored when it ends, within the step or not.
            print(
                f"warning: --n-steps {self.settings.n_steps} is shorter than an episode of "
                f"{env.env_id} can be ({env.max_turns} turns x {settings.max_new_tokens} "
                "tokens): episodes cut by a step's end are bootstrapped and dropped, and "
                "reward/mean counts only the episodes that finished",
                file=sys.stderr,
            )

    def train(self, run: Run) -> None:
        settings = run.settings
        learner = TokenLearner(
            run.policy, run.tokenizer, run.train_envs.envs, self.settings,
            optimization=Optimization(
                lr=settings.lr, total_steps=settings.steps, weight_decay=settings.weight_decay,
                schedule=settings.lr_schedule, max_grad_norm=settings.max_grad_norm,
            ),
            generation=settings.generation, prompt_format=run.prompt_format,
            seed=settings.seed, state=run.state,
        )  # fmt: skip
        if run.checkpoint is not None:
            learner.load(run.checkpoint)
        try:
            for step in range(run.start_step + 1, settings.steps + 1):
                run.begin_step()
                result = learner.step(iteration=step - 1)
                end = run.end_step(
                    step, result.metrics, tokens=result.tokens, episodes=result.episodes
                )
                if end.save:
                    run.save_checkpoint(step, learner.save)
                if end.stop:
                    break
        finally:
            learner.close()


def main(config: Config) -> dict[str, Any] | None:
    """Train; return the summary (held-out reward before and after, KL, tokens, wall time)."""
    return run_experiment(config.run, SB3(config.sb3), config)


def cli(argv: list[str] | None = None) -> int:
    """Parse flags (and --config), train, and turn user errors into one line and exit 2."""
    return run_cli(main, Config, argv, algorithm=SB3.name)


if __name__ == "__main__":
    sys.exit(cli())
