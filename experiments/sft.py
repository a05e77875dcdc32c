"""Supervised fine-tuning (TRL's SFTTrainer) on demonstrations from an environment's data.

    python experiments/sft.py                                   # positive tweets, SmolLM2-135M
    python experiments/sft.py --steps 63 --lr 2e-4              # one pass over 1000 demonstrations
    python experiments/sft.py --demonstrations demos.jsonl --env-id my_envs:rlm/X-v0
    python experiments/ppo.py --model runs/<this run>/policy    # then RL from it
    python experiments/grpo.py --model runs/<this run>/policy

Demonstrations: for ``rlm/Sentiment-v0``, the training split's tweet openings continued
with the rest of their tweet, for tweets labelled ``--label`` (positive); for any
environment, a JSON Lines file of ``{"prompt", "completion"}`` rows. The first
``--max-examples`` of them (after shuffling with the seed) are learned with a LoRA adapter,
the loss on the completion only, ``--batch-size`` demonstrations a step for ``--steps``
steps (the data is cycled through again when it runs out). The adapter is then merged and
the full model saved in ``policy/``, a folder that ``--model`` of every script accepts. The
held-out reward and the KL to the starting model are evaluated before, during and after
training exactly as in the RL scripts; everything else is the runner's.
"""

from __future__ import annotations

import sys
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from envs.tweets import load_tweets
from rlm.demonstrations import Demonstration, read_demonstrations, sft_dataset
from rlm.env import TextEnv
from rlm.errors import ConfigError
from rlm.runner import Run, run_experiment
from rlm.scripting import run_cli
from rlm.settings import RunSettings
from rlm.trl_runner import TRLAlgorithm, trainer_arguments
from rlm.validation import check_ranges

SENTIMENT_ENV = "rlm/Sentiment-v0"


@dataclass
class SFTSettings:
    """Which demonstrations, how many, how long."""

    demonstrations: Path | None = None
    """JSON Lines file of {"prompt", "completion"} rows; default: the environment's own data."""
    label: Literal["positive", "neutral", "negative"] = "positive"
    """Sentiment task: continue the tweets carrying this label."""
    min_confidence: float = 0.0
    """Sentiment task: keep tweets whose annotators' confidence is at least this."""
    max_examples: int = 1000
    """Demonstrations used at most (the first ones, after shuffling with the seed)."""
    max_length: int = 64
    """Tokens per demonstration (prompt and completion) at most; longer ones are cut."""


@dataclass
class Config:
    """Supervised fine-tuning on demonstrations, saved as a model the RL scripts start from."""

    run: Annotated[RunSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=RunSettings)
    """Task, model, reward, budget, evaluation and logging: every algorithm's settings."""
    sft: Annotated[SFTSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=SFTSettings)
    """The demonstrations."""


def sentiment_demonstrations(
    env: TextEnv, label: str, min_confidence: float
) -> list[Demonstration]:
    """Each training opening continued with the rest of its tweet, for tweets with ``label``."""
    tweets = load_tweets()
    demos = []
    for task in env.tasks:
        tweet = tweets[task["tweet_id"]]
        if tweet["label"] != label or not tweet["confidence"] >= min_confidence:
            continue
        prompt = str(task["prompt"])
        rest = tweet["text"][len(prompt) :]
        if tweet["text"].startswith(prompt) and rest.strip():
            demos.append(Demonstration(prompt, rest))
    return demos


class SFT(TRLAlgorithm):
    """TRL's SFTTrainer on demonstrations, then the adapter merged into a full model."""

    name = "sft"
    generates = False

    def __init__(self, settings: SFTSettings) -> None:
        super().__init__()
        self.settings = settings
        self.demonstrations: list[Demonstration] = []

    def validate(self, settings: RunSettings) -> None:
        check_ranges(self.settings, at_least_one=["max_examples", "max_length"],
                     unit_interval=["min_confidence"])  # fmt: skip
        if settings.normalize_reward or settings.reward_clip is not None:
            raise ConfigError(
                "SFT learns from demonstrations, not from rewards: --normalize-reward and "
                "--reward-clip do not apply (the evaluation's reward stays raw)"
            )

    def prepare(self, env: TextEnv, settings: RunSettings) -> None:
        """The demonstrations: the file's rows, or the environment's own."""
        if self.settings.demonstrations is not None:
            self.demonstrations = read_demonstrations(self.settings.demonstrations)
        elif env.env_id == SENTIMENT_ENV:
            self.demonstrations = sentiment_demonstrations(
                env, self.settings.label, self.settings.min_confidence
            )
        else:
            raise ConfigError(
                f"{env.env_id} has no built-in demonstrations: pass --demonstrations FILE.jsonl "
                'with {"prompt": ..., "completion": ...} rows'
            )
        if not self.demonstrations:
            raise ConfigError(
                f"no {self.settings.label} tweet of the training split has a confidence of at "
                f"least --min-confidence {self.settings.min_confidence}: lower it"
            )

    def build_trainer(self, run: Run) -> Any:
        from trl import SFTConfig, SFTTrainer  # imported here: a second of start-up for --help

        settings, demos = run.settings, self.demonstrations
        dataset = sft_dataset(demos, prompt_format=run.prompt_kind).shuffle(seed=settings.seed)
        dataset = dataset.select(range(min(self.settings.max_examples, len(dataset))))
        passes = settings.steps * settings.batch_size / len(dataset)
        print(
            f"{len(dataset)} demonstrations (of {len(demos)}), {passes:.2f} passes over them "
            f"in {settings.steps} steps; e.g. {demos[0]}"
        )
        args = SFTConfig(
            **trainer_arguments(settings, run.checkpoints_dir), max_length=self.settings.max_length
        )
        trainer = SFTTrainer(
            run.policy.policy, args=args, train_dataset=dataset, processing_class=run.tokenizer
        )
        kept = trainer.train_dataset  # TRL drops what truncation leaves no completion of
        if isinstance(kept, Sized) and len(kept) == 0:
            raise ConfigError(
                f"no demonstration fits in --max-length {self.settings.max_length} tokens with "
                f"the {run.prompt_kind} prompt format: raise --max-length"
            )
        return trainer

    def save_policy(self, run: Run, folder: Path) -> None:
        """The full model, the adapter merged, where any script's --model reads it."""
        if run.state.is_main_process:
            model: Any = (  # no trainer when resumed after the end: the runner's model
                run.policy.policy
                if self.trainer is None
                else self.trainer.accelerator.unwrap_model(self.trainer.model)
            )
            if hasattr(model, "merge_and_unload"):
                model = model.merge_and_unload()
            model.save_pretrained(str(folder))
            run.tokenizer.save_pretrained(str(folder))
            print(f"start RL from it: python experiments/ppo.py --model {folder}")


def main(config: Config) -> dict[str, Any] | None:
    """Train; return the summary (held-out reward before and after, KL to the start)."""
    return run_experiment(config.run, SFT(config.sft), config)


def cli(argv: list[str] | None = None) -> int:
    """Parse flags (and --config), train, and turn user errors into one line and exit 2."""
    return run_cli(main, Config, argv, algorithm=SFT.name)


if __name__ == "__main__":
    sys.exit(cli())
