"""Train a preference reward model with TRL's RewardTrainer on pairs built from the tweets.

    python scripts/train_preference_reward.py                           # MiniLM, 2,000 pairs
    python scripts/train_preference_reward.py --trunk default --tuning lora --pairs 500
    python scripts/train_preference_reward.py --help                     # every flag

Offline there is no preference data set, so pairs are made from the labelled tweets
(split stratified with ``--split-seed`` first, fixed whatever ``--seed``): prompt = the
opening words of a random tweet, chosen = a more positive tweet than rejected (positive >
neutral > negative, every couple in turn). Training pairs come from the train split
(drawn with ``--seed``), evaluation pairs from the test split (drawn with
``--split-seed``, so every model is evaluated on the same pairs). The model is a one-output
sequence classifier trained with the Bradley-Terry loss; the run folder
``<--output-dir>/<--run-name>`` (default
``runs/reward_models/preference-<trunk>-<tuning>__<seed>__<time>``) holds ``model/``
(loadable by :class:`rlm.scorers.classifier.ClassifierReward`, which scores prompt +
completion), ``metrics.json``, ``metrics.md``, ``config.json``, ``meta.json``,
``metrics.jsonl`` and TensorBoard events in ``tb/`` (TRL's training loss, the held-out
pairwise accuracy).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import tyro

from rlm.reward_models.data import load_labelled_tweets, split_dataset
from rlm.reward_models.preference import (
    PreferencePair,
    PreferenceSettings,
    build_preference_pairs,
    pairwise_accuracy,
    train_preference_model,
)
from rlm.reward_models.runs import (
    default_run_name,
    fingerprint,
    reward_model_run,
    reward_model_tracking,
    write_metrics,
)
from rlm.reward_models.transformer import resolve_trunk
from rlm.scorers.classifier import ClassifierReward
from rlm.scripting import run_cli
from rlm.tracking import TrackingSettings
from rlm.validation import check_ranges

# Texts whose order a sentiment preference model should get right: a quick sanity check.
PROBES = {
    "positive": "I love this, what a wonderful day! Best trip ever.",
    "neutral": "The train leaves at nine and arrives in Boston at noon.",
    "negative": "This is awful, I hate it. Worst service ever.",
}


@dataclass
class Config:
    """Train a preference reward model on (prompt, chosen, rejected) pairs from the tweets."""

    trunk: str = "minilm"
    """Trunk: 'minilm' (all-MiniLM-L6-v2), 'default' (SmolLM2-135M), or a model folder."""
    pairs: int = 2000
    """Training pairs (fewer if a label of the train split runs out)."""
    eval_pairs: int = 500
    """Evaluation pairs, from the test split."""
    prompt_words: int = 5
    """Words of a tweet's opening used as the prompt."""
    split_seed: int = 0
    """Seed of the train/validation/test split and of the evaluation pairs; fixed so that
    every model is tested on the same tweets."""
    train: Annotated[PreferenceSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=PreferenceSettings
    )
    """TRL RewardTrainer's settings: tuning, optimizer, passes, batches, the training seed."""
    tracking: Annotated[TrackingSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=reward_model_tracking
    )
    """Where the run folder goes and what it logs to."""
    threads: int | None = 1
    """torch CPU threads (one is fastest for small models on shared cores); None: torch's."""

    def __post_init__(self) -> None:
        self.train.validate()
        check_ranges(self, at_least_one=["pairs", "eval_pairs", "prompt_words", "threads"])

    @property
    def model_name(self) -> str:
        """'preference-<trunk>-<tuning>': the start of the default run name."""
        return f"preference-{Path(self.trunk).name}-{self.train.tuning}"


def make_pairs(config: Config) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Training pairs from the train split (``--seed``) and evaluation pairs from the test
    split (``--split-seed``): the split and the evaluation pairs never move with ``--seed``."""
    data, _ = load_labelled_tweets()
    splits = split_dataset(data, seed=config.split_seed)
    train_pairs = build_preference_pairs(
        splits.train, config.pairs, seed=config.train.seed, prompt_words=config.prompt_words
    )
    eval_pairs = build_preference_pairs(
        splits.test, config.eval_pairs, seed=config.split_seed + 1, prompt_words=config.prompt_words
    )
    return train_pairs, eval_pairs


def main(config: Config) -> dict[str, Any]:
    """Build the pairs, train, evaluate and save; return what metrics.json holds."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    resolve_trunk(config.trunk)  # a bad trunk fails now, before any folder is made
    default_name = default_run_name(config.model_name, config.train.seed)
    with reward_model_run(config.tracking, default_name, config) as (run, tracker):
        # --- pairs from disjoint splits of the cleaned tweets
        train_pairs, eval_pairs = make_pairs(config)
        print(f"{len(train_pairs)} training pairs, {len(eval_pairs)} evaluation pairs; e.g.")
        print(json.dumps(train_pairs[0], indent=2))

        # --- TRL's RewardTrainer: Bradley-Terry loss on a one-output classifier
        start = time.perf_counter()
        result = train_preference_model(config.trunk, train_pairs, run.path / "model", config.train)
        seconds = time.perf_counter() - start
        model_dir, train_metrics = result.folder, result.metrics
        for entry in result.history:  # TRL's periodic logs, into metrics.jsonl and TensorBoard
            if "loss" in entry and "step" in entry:
                scalars = {
                    f"train/{k}": v
                    for k, v in entry.items()
                    if k != "step" and isinstance(v, int | float)
                }
                tracker.log(scalars, step=int(entry["step"]))

        # --- evaluation through the reward interface, exactly as a policy will see it
        reward = ClassifierReward(
            model_dir, device="cpu" if not torch.cuda.is_available() else None
        )
        held_out = pairwise_accuracy(reward, eval_pairs)
        probes = dict(zip(PROBES, reward([""] * len(PROBES), list(PROBES.values())), strict=True))
        summary = {
            "eval": held_out,
            "probes": probes,
            "train": train_metrics,
            "train_seconds": seconds,
            "train_pairs": len(train_pairs),
            "split_seed": config.split_seed,
            "eval_fingerprint": fingerprint(
                json.dumps(pair, sort_keys=True) for pair in eval_pairs
            ),
            "model_dir": str(model_dir),
        }
        lines = [
            f"# Preference reward model {run.path.name}\n",
            f"Pairwise accuracy on {len(eval_pairs)} held-out pairs: "
            f"{held_out['pairwise_accuracy']:.3f} (chance 0.5); mean margin "
            f"{held_out['mean_margin']:.3f}.\n",
            "| probe | text | reward |",
            "| --- | --- | --- |",
            *[f"| {k} | {PROBES[k]} | {v:.3f} |" for k, v in probes.items()],
        ]
        write_metrics(run, summary, "\n".join(lines) + "\n")
        print("\n".join(lines))
        tracker.log(
            {
                "eval/pairwise_accuracy": held_out["pairwise_accuracy"],
                "eval/mean_margin": held_out["mean_margin"],
                "train/loss": train_metrics.get("train_loss", float("nan")),
                "perf/train_seconds": seconds,
            },
            step=max([int(e.get("step", 0)) for e in result.history] + [0]) + 1,
        )
        tracker.finish("finished", pairwise_accuracy=held_out["pairwise_accuracy"])
    print(f"model saved to {model_dir}; use it with ClassifierReward({str(model_dir)!r})")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main, Config))
