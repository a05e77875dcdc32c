"""Train a preference reward model with TRL's RewardTrainer on pairs built from the tweets.

    python scripts/train_preference_reward.py                           # MiniLM, 2,000 pairs
    python scripts/train_preference_reward.py --trunk default --tuning lora --pairs 500
    python scripts/train_preference_reward.py --help                     # every flag

Offline there is no preference data set, so pairs are made from the labelled tweets
(split stratified with a fixed seed first): prompt = the opening words of a random tweet,
chosen = a more positive tweet than rejected (positive > neutral > negative, every couple
in turn). Training pairs come from the
train split, evaluation pairs from the test split. The model is a one-output sequence
classifier trained with the Bradley-Terry loss; the run folder
(``runs/reward_models/<name>/`` by default) holds ``model/`` (loadable by
:class:`rlm.scorers.classifier.ClassifierReward`, which scores prompt + completion),
``metrics.json``, ``metrics.md``, ``config.json``, ``meta.json``, ``metrics.jsonl`` and
TensorBoard events in ``tb/`` (TRL's training loss, the held-out pairwise accuracy).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlm.reward_models.data import load_labelled_tweets, split_dataset
from rlm.reward_models.preference import (
    PreferenceSettings,
    build_preference_pairs,
    pairwise_accuracy,
    train_preference_model,
)
from rlm.reward_models.runs import reward_model_run, write_metrics
from rlm.reward_models.transformer import resolve_trunk
from rlm.scorers.classifier import ClassifierReward
from rlm.scripting import run_cli
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
    tuning: Literal["full", "lora"] = "full"
    """Weights that learn: all of them, or LoRA adapters + the score head."""
    lora_rank: int = 8
    """LoRA rank (with --tuning lora)."""
    pairs: int = 2000
    """Training pairs (fewer if a label of the train split runs out)."""
    eval_pairs: int = 500
    """Evaluation pairs, from the test split."""
    prompt_words: int = 5
    """Words of a tweet's opening used as the prompt."""
    lr: float = 5e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    epochs: float = 1.0
    """Passes over the training pairs."""
    batch_size: int = 16
    """Pairs per training step."""
    max_length: int = 128
    """Longest prompt + answer in tokens; longer pairs are left out by TRL."""
    seed: int = 0
    """Seed of the split, the pairs and the initialisation."""
    output_dir: str | None = None
    """Run folder; default runs/reward_models/preference-<trunk>-<tuning>__<seed>__<time>."""
    wandb: Literal["auto", "online", "offline", "disabled"] = "disabled"
    """W&B mode: off by default for this script; TensorBoard and metrics.jsonl always."""
    threads: int | None = 1
    """torch CPU threads (one is fastest for small models on shared cores); None: torch's."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            at_least_one=["pairs", "eval_pairs", "prompt_words", "batch_size", "max_length"],
            positive=["lr", "epochs"],
            non_negative=["weight_decay"],
        )
        if self.output_dir is None:
            name = f"preference-{Path(self.trunk).name}-{self.tuning}"
            self.output_dir = f"runs/reward_models/{name}__{self.seed}__{int(time.time())}"


def main(config: Config) -> dict[str, Any]:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    resolve_trunk(config.trunk)  # a bad trunk fails now, before any folder is made
    with reward_model_run(str(config.output_dir), config, wandb=config.wandb) as (run, tracker):
        # --- pairs from disjoint splits of the cleaned tweets
        data, _ = load_labelled_tweets()
        splits = split_dataset(data, seed=config.seed)
        train_pairs = build_preference_pairs(
            splits.train, config.pairs, seed=config.seed, prompt_words=config.prompt_words
        )
        eval_pairs = build_preference_pairs(
            splits.test, config.eval_pairs, seed=config.seed + 1, prompt_words=config.prompt_words
        )
        print(f"{len(train_pairs)} training pairs, {len(eval_pairs)} evaluation pairs; e.g.")
        print(json.dumps(train_pairs[0], indent=2))

        # --- TRL's RewardTrainer: Bradley-Terry loss on a one-output classifier
        settings = PreferenceSettings(
            tuning=config.tuning,
            lr=config.lr,
            weight_decay=config.weight_decay,
            epochs=config.epochs,
            batch_size=config.batch_size,
            max_length=config.max_length,
            lora_rank=config.lora_rank,
            seed=config.seed,
        )
        start = time.perf_counter()
        result = train_preference_model(config.trunk, train_pairs, run.path / "model", settings)
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
