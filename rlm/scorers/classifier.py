"""A trained text classifier or preference model as a reward, loaded from a folder.

:class:`ClassifierReward` loads any of:

- a folder written by ``scripts/train_reward_classifier.py`` (LSTM or transformer
  classifier) or ``scripts/train_preference_reward.py`` (TRL ``RewardTrainer``), or the
  run folder holding it in ``model/``;
- any Hugging Face sequence-classification folder (any tokenizer), for example a
  sentiment model saved with ``save_pretrained``.

What is scored: classifiers see the completion alone, as they were trained on single
texts (so a continuation is judged by what the policy wrote, not by the prompt it was
given); preference models were trained by TRL on prompt + completion, so they see
``prompt + completion`` (plus the EOS text TRL appended in training). ``include_prompt``
overrides either default.

The reward is the chosen label's softmax probability (``output="probability"``, in
[0, 1]) or its raw logit (``output="logit"``). A one-output preference model gives its
raw score by default; ``"probability"`` then means its sigmoid. For a sentiment
classifier, ``output="polarity"`` gives P(positive) - P(negative), in [-1, 1]: the scale
of VADER, and one on which neutral text sits between positive and negative (the
probability of "positive" alone does not order neutral and negative text).

Example:
    >>> reward = ClassifierReward("runs/reward_models/lstm")  # doctest: +SKIP
    >>> reward(["", ""], ["I love this so much!", "This is awful."])  # doctest: +SKIP
    [0.93, 0.02]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch

from rlm.errors import ConfigError
from rlm.reward_models.loading import LoadedRewardModel, load_reward_model

OUTPUTS = ("probability", "logit", "polarity")


def _choose_label(labels: list[str], label: str | None) -> int:
    """The index of ``label`` (case-insensitive) in ``labels``; by default "positive"."""
    lowered = [name.lower() for name in labels]
    if label is None:
        if "positive" in lowered:
            return lowered.index("positive")
        if len(labels) == 1:
            return 0
        raise ConfigError(
            f"this reward model has labels {labels} and none is 'positive'; choose the one "
            "to reward with label=..."
        )
    if label.lower() not in lowered:
        raise ConfigError(
            f"label {label!r} is not one of this reward model's labels {labels}; pass one of those"
        )
    return lowered.index(label.lower())


class ClassifierReward:
    """A batched reward from a classifier or preference-model folder.

    Args:
        path: the model folder (or a training run folder with ``model/`` inside).
        label: the class whose score is the reward, by name (case-insensitive); default
            "positive" when the model has it, else the single output of a preference model.
        output: ``"probability"``, ``"logit"`` or ``"polarity"`` (P(positive) -
            P(negative)); default ``"probability"`` for classifiers, ``"logit"`` for
            one-output models.
        include_prompt: score ``prompt + completion`` instead of the completion; default
            True for preference models and False for classifiers.
        batch_size: texts per forward pass.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        max_length: longest input in tokens; longer texts are truncated.
        name: the reward's name in logs and metric keys.

    Raises:
        ModelNotFoundError: ``path`` does not exist or holds no model.
        ConfigError: an unknown label or output, or an unloadable folder.
    """

    def __init__(
        self,
        path: str | Path,
        label: str | None = None,
        output: Literal["probability", "logit", "polarity"] | None = None,
        *,
        include_prompt: bool | None = None,
        batch_size: int = 32,
        device: str | None = None,
        max_length: int | None = None,
        name: str = "classifier",
    ) -> None:
        if output is not None and output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.model: LoadedRewardModel = load_reward_model(
            path, device=device, max_length=max_length
        )
        self.labels = self.model.labels
        single = len(self.labels) == 1
        self.output = output or ("logit" if single else "probability")
        if self.output == "polarity":
            lowered = [name.lower() for name in self.labels]
            if label is not None or not {"positive", "negative"} <= set(lowered):
                raise ConfigError(
                    "output='polarity' is P(positive) - P(negative): it needs a model with "
                    f"labels 'positive' and 'negative' and no label=; this model has {self.labels}"
                )
            self.negative_index = lowered.index("negative")
        self.label_index = _choose_label(self.labels, label)
        self.label = self.labels[self.label_index]
        self.include_prompt = self.model.score_prompt if include_prompt is None else include_prompt
        self.batch_size = batch_size
        self.__name__ = name
        self.reward_range = {
            "probability": (0.0, 1.0),
            "polarity": (-1.0, 1.0),
            "logit": (-math.inf, math.inf),
        }[self.output]

    def texts(self, prompts: list[str], completions: list[str]) -> list[str]:
        """The texts the model scores: completions, or prompt + completion."""
        if not self.include_prompt:
            return [str(c) for c in completions]
        if len(prompts) != len(completions):
            raise ConfigError(
                f"{self.__name__}: {len(prompts)} prompts for {len(completions)} completions"
            )
        return [str(p) + str(c) for p, c in zip(prompts, completions, strict=True)]

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        logits = self.model.logits(self.texts(list(prompts), list(completions)), self.batch_size)
        if self.output == "logit":
            values = logits[:, self.label_index]
        elif self.output == "polarity":
            probabilities = torch.softmax(logits, dim=-1)
            values = probabilities[:, self.label_index] - probabilities[:, self.negative_index]
        elif len(self.labels) == 1:
            values = torch.sigmoid(logits[:, 0])
        else:
            values = torch.softmax(logits, dim=-1)[:, self.label_index]
        return [float(v) for v in values]
