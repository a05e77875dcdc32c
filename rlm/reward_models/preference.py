"""Preference reward models: (prompt, chosen, rejected) pairs and TRL's ``RewardTrainer``.

No preference data is reachable offline, so a small set is built from the labelled
tweets: the prompt is the opening words of a random tweet; of the two answers (other
tweets) the chosen one is more positive than the rejected one (positive over neutral over
negative). Both answers are unrelated to the prompt alike, so the only thing that tells
them apart is sentiment, which is what the model learns. Pairs for training and for
evaluation come from different splits of the corpus.

Training is TRL's ``RewardTrainer`` (Bradley-Terry loss on a one-output
sequence-classification model) on any trunk, fully or with LoRA; TRL appends the
tokenizer's EOS text to every sequence, which is recorded in the folder so the reward
scores text exactly as the model saw it in training.

Example:
    >>> pairs = build_preference_pairs(splits.train, 500, seed=0)  # doctest: +SKIP
    >>> pairs[0].keys()  # doctest: +SKIP
    dict_keys(['prompt', 'chosen', 'rejected'])
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rlm.errors import ConfigError
from rlm.reward_models.data import LabelledTexts
from rlm.reward_models.transformer import (
    prepare_tokenizer,
    resolve_trunk,
    save_transformer_classifier,
)
from rlm.validation import check_ranges

PreferencePair = dict[str, str]


ORDER = ("positive", "neutral", "negative")
"""Preferred first: what a sentiment preference model should learn to rank."""


def build_preference_pairs(
    data: LabelledTexts,
    n_pairs: int,
    *,
    seed: int = 0,
    prompt_words: int = 5,
    order: tuple[str, ...] = ORDER,
) -> list[PreferencePair]:
    """Up to ``n_pairs`` pairs ranking tweets by ``order``, behind a tweet-opening prompt.

    The pairs cycle through every ordered couple of labels (positive over neutral,
    positive over negative, neutral over negative), so the model learns the whole order
    and not only its two ends. The prompt is the first ``prompt_words`` words of a random
    tweet of any label, so it carries no hint of which answer is preferred. Each answer
    tweet is used at most once; the count stops when a label runs out.

    Raises:
        ConfigError: a label name the data does not have, or no pairs can be made.
    """
    names = list(data.label_names)
    for label in order:
        if label not in names:
            raise ConfigError(f"label {label!r} is not one of the data's labels {names}")
    if len(order) < 2:
        raise ConfigError("a preference order needs at least two labels")
    rng = np.random.default_rng(seed)
    pools = {}
    for label in order:
        texts = [t for t, y in zip(data.texts, data.labels, strict=True) if names[y] == label]
        pools[label] = [texts[i] for i in rng.permutation(len(texts))]
    couples = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    pairs: list[PreferencePair] = []
    for i in range(n_pairs):
        chosen, rejected = couples[i % len(couples)]
        if not pools[chosen] or not pools[rejected]:
            break
        opening = data.texts[int(rng.integers(len(data)))].split()[:prompt_words]
        pairs.append(
            {
                "prompt": " ".join(opening) + " ",
                "chosen": pools[chosen].pop(),
                "rejected": pools[rejected].pop(),
            }
        )
    if not pairs:
        raise ConfigError(f"no preference pairs: the data lacks one of the labels {order}")
    return pairs


@dataclass(frozen=True)
class PreferenceSettings:
    """How to train a preference reward model with TRL's ``RewardTrainer``; every field is a
    flag of the same name in train_preference_reward.py."""

    tuning: Literal["full", "lora"] = "full"
    """Weights that learn: all of them, or LoRA adapters + the score head."""
    lr: float = 5e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    data_passes: float = 1.0
    """Passes over the training pairs (TRL's num_train_epochs; a fraction stops early)."""
    batch_size: int = 16
    """Pairs per training step."""
    max_length: int = 128
    """Longest prompt + answer in tokens; longer pairs are left out by TRL."""
    lora_rank: int = 8
    """LoRA rank (with --tuning lora)."""
    seed: int = 1
    """Seed of the head's initialisation, the batch order and the training pairs (--split-seed
    fixes the split and the evaluation pairs)."""
    logging_steps: int = 10
    """Log TRL's training loss every this many steps."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range (the flag named)."""
        if self.tuning not in ("full", "lora"):
            raise ConfigError(f"--tuning must be 'full' or 'lora', got {self.tuning!r}")
        check_ranges(
            self,
            at_least_one=["batch_size", "max_length", "lora_rank", "logging_steps"],
            positive=["lr", "data_passes"],
            non_negative=["weight_decay"],
        )


@dataclass
class PreferenceResult:
    """What :func:`train_preference_model` produced."""

    folder: Path
    metrics: dict[str, float]
    history: list[dict[str, Any]]


def _eos_text(tokenizer: Any) -> str:
    """The text TRL will append: the EOS token, or BERT's [SEP] for tokenizers without one."""
    if tokenizer.eos_token is not None:
        return str(tokenizer.eos_token)
    if tokenizer.sep_token is not None:
        return str(tokenizer.sep_token)
    raise ConfigError(
        f"tokenizer {tokenizer.name_or_path!r} has no EOS or SEP token to end sequences with"
    )


def train_preference_model(
    trunk: str,
    train_pairs: list[PreferencePair],
    output_dir: Path | str,
    settings: PreferenceSettings,
    *,
    eval_pairs: list[PreferencePair] | None = None,
    report_to: str = "none",
) -> PreferenceResult:
    """Train a one-output reward model on ``train_pairs`` and save it to ``output_dir``.

    Returns:
        The saved folder (loadable by :class:`rlm.scorers.classifier.ClassifierReward`),
        TRL's final training metrics and its log history.

    Raises:
        ConfigError: settings out of range (an unknown tuning, say), or no training pairs.
    """
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    settings.validate()
    if not train_pairs:
        raise ConfigError("no training pairs")
    path = resolve_trunk(trunk)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    eos_text = _eos_text(tokenizer)
    torch.manual_seed(settings.seed)  # the new head's initialisation
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=1,
        id2label={0: "reward"},
        label2id={"reward": 0},
        dtype=torch.float32,
        use_safetensors=True,  # a pickled .bin could run code as it loads
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if settings.tuning == "lora":
        from peft import LoraConfig, TaskType

        peft_config = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=settings.lora_rank, lora_alpha=2 * settings.lora_rank
        )
    with tempfile.TemporaryDirectory(prefix="rlm-reward-trainer-") as scratch:
        args = RewardConfig(
            output_dir=scratch,  # checkpoints are not kept: the model is saved below
            learning_rate=settings.lr,
            weight_decay=settings.weight_decay,
            num_train_epochs=settings.data_passes,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size,
            max_length=settings.max_length,
            eos_token=eos_text,
            seed=settings.seed,
            logging_steps=settings.logging_steps,
            save_strategy="no",
            eval_strategy="epoch" if eval_pairs else "no",
            report_to=report_to,
            bf16=False,  # bf16 matmuls are ~50x slower than fp32 on these CPUs
            activation_checkpointing=False,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        )
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_pairs),
            eval_dataset=Dataset.from_list(eval_pairs) if eval_pairs else None,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        output = trainer.train()
    folder = save_transformer_classifier(
        output_dir,
        trainer.model,
        tokenizer,
        ["reward"],
        kind="preference",
        score_prompt=True,
        text_suffix=eos_text,
        max_length=settings.max_length,
        trunk=trunk,
        tuning=settings.tuning,
    )
    return PreferenceResult(
        folder,
        {k: float(v) for k, v in output.metrics.items()},
        [dict(entry) for entry in trainer.state.log_history],
    )


def pairwise_accuracy(score: Any, pairs: list[PreferencePair]) -> dict[str, float]:
    """How often a reward ranks chosen above rejected, and the mean margin.

    ``score`` is a reward ``(prompts, completions) -> list[float]``.
    """
    prompts = [p["prompt"] for p in pairs]
    chosen = np.asarray(score(prompts, [p["chosen"] for p in pairs]))
    rejected = np.asarray(score(prompts, [p["rejected"] for p in pairs]))
    return {
        "pairwise_accuracy": float((chosen > rejected).mean()),
        "mean_margin": float((chosen - rejected).mean()),
        "n": float(len(pairs)),
    }
