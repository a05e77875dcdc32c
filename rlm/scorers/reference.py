"""Reference metrics: BLEU and chrF (sacrebleu) and ROUGE (rouge-score), sentence level.

They are called directly rather than through ``evaluate.load``, which fetches metric
scripts from the hub. Each compares the completion with a reference: one fixed ``target``
for every sample, or the environment's per-sample info column (``"reference"`` by default).
All return values in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import sacrebleu

from rlm.errors import RewardError


def reference_texts(
    name: str, target: str | None, column: str, info: Mapping[str, Sequence[Any]], n: int
) -> list[str]:
    """The reference of each of ``n`` samples: ``target`` repeated, or ``info[column]``.

    Raises:
        RewardError: neither a target nor the column is there.
    """
    if target is not None:
        return [target] * n
    if column in info:
        return [str(r) for r in info[column]]
    raise RewardError(
        f"{name}: no target text and no {column!r} column in the environment's info; give "
        f"target=... or use an environment whose tasks have a {column!r} field"
    )


class _ReferenceMetric:
    """Shared shape: a per-pair metric over (completion, reference)."""

    reward_range = (0.0, 1.0)
    __name__ = "reference_metric"

    def __init__(self, target: str | None = None, *, column: str = "reference") -> None:
        self.target = target
        self.column = column

    def pair(self, completion: str, reference: str) -> float:
        raise NotImplementedError

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        references = reference_texts(
            self.__name__, self.target, self.column, info, len(completions)
        )
        return [self.pair(c, r) for c, r in zip(completions, references, strict=True)]


class Bleu(_ReferenceMetric):
    """Sentence BLEU (sacrebleu, exponential smoothing) / 100, in [0, 1].

    Example:
        >>> Bleu(target="the cat sat on the mat")([""], ["the cat sat on the mat"])
        [1.0]
    """

    __name__ = "bleu"

    def pair(self, completion: str, reference: str) -> float:
        # Rounding can push a perfect match a hair above 100.
        return min(sacrebleu.sentence_bleu(completion, [reference]).score / 100.0, 1.0)


class Chrf(_ReferenceMetric):
    """Sentence chrF (character n-gram F-score, sacrebleu) / 100, in [0, 1]; robust to
    inflection and tokenisation, so it suits short texts better than BLEU.

    Example:
        >>> Chrf(target="the cat sat on the mat")([""], ["the cat sat on the mat"])
        [1.0]
    """

    __name__ = "chrf"

    def pair(self, completion: str, reference: str) -> float:
        return sacrebleu.sentence_chrf(completion, [reference]).score / 100.0


class Rouge(_ReferenceMetric):
    """ROUGE F-measure (``rouge1``, ``rouge2`` or ``rougeL``, Porter-stemmed), in [0, 1].

    Example:
        >>> Rouge(target="the cat sat on the mat")([""], ["the cat sat on the mat"])
        [1.0]
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        column: str = "reference",
        variant: Literal["rouge1", "rouge2", "rougeL"] = "rougeL",
    ) -> None:
        super().__init__(target, column=column)
        self.variant = variant
        self.__name__ = variant
        from rouge_score import rouge_scorer  # imports nltk, a second: only when used

        self._scorer = rouge_scorer.RougeScorer([variant], use_stemmer=True)

    def pair(self, completion: str, reference: str) -> float:
        return float(self._scorer.score(reference, completion)[self.variant].fmeasure)
