"""``rlm/Constrained-v0``: write one sentence that uses all of a set of given words.

Task: the prompt gives three common English words (two nouns and a verb, drawn from a real
word list, :mod:`envs.wordlist`); the completion should be one fluent sentence using all
of them, in any inflection ("dog, frisbee, catch" -> "The dog catches the frisbee.").
Reward: ``coverage * (0.5 + 0.5 * fluency)``, in [0, 1]: ``coverage`` is the share of the
given words used, ``fluency`` a rule-based score in [0, 1] (known English words, a
plausible sentence length, one sentence, no word repeated over and over). Both parts are
reported as ``reward/coverage`` and ``reward/fluency``. Single turn. Splits: word sets
generated from a fixed seed, put in train or eval by a hash of the set, so no set is in
both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.wordlist import common_words, english_vocabulary, split_of
from rlm.env import SPLITS, TextEnv
from rlm.errors import ConfigError

SEED = 20_240_601
TASKS_PER_SPLIT = {"train": 2000, "eval": 200}
MIN_WORDS, MAX_WORDS = 5, 30
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SUFFIXES = ("ing", "ies", "ied", "es", "ed", "s", "d", "e", "y")


def stem(word: str) -> str:
    """A crude stem that maps regular inflections to one form ("catches" -> "catch")."""
    word = word.casefold()
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words_of(text: str) -> list[str]:
    """The words of ``text``, lower-cased, without punctuation or digits."""
    return [w.casefold() for w in _WORD.findall(text)]


def coverage(completion: str, concepts: Sequence[str]) -> float:
    """The share of ``concepts`` used in ``completion`` (regular inflections count)."""
    stems = {stem(w) for w in words_of(completion)}
    return sum(stem(c) in stems for c in concepts) / len(concepts)


def fluency(completion: str) -> float:
    """A rule-based fluency score in [0, 1]; 0 for an empty completion.

    The product of: the share of known English words; 1 for 5-30 words, less for fewer or
    more; 1 for exactly one sentence ending in ``.!?``, 0.5 otherwise; and twice the share
    of distinct words, at most 1 (one word repeated over and over scores low).
    """
    words = words_of(completion)
    if not words:
        return 0.0
    vocabulary = english_vocabulary()
    known = sum(w in vocabulary or w.split("'")[0] in vocabulary for w in words) / len(words)
    n = len(words)
    length = min(1.0, n / MIN_WORDS) if n < MAX_WORDS else MAX_WORDS / n
    text = completion.strip()
    endings = len(re.findall(r"[.!?]+(?:\s|$)", text))
    one_sentence = 1.0 if endings == 1 and text[-1] in ".!?" else 0.5
    distinct = min(1.0, 2 * len(set(words)) / n)  # half the words may repeat ("the")
    return known * length * one_sentence * distinct


class ConstrainedSentenceReward:
    """``coverage * (0.5 + 0.5 * fluency)`` per completion, in [0, 1]; reports both parts."""

    __name__ = "constrained_sentence"
    reward_range = (0.0, 1.0)

    def __init__(self) -> None:
        self.last_components: dict[str, list[float]] = {}

    def __call__(
        self, prompts: list[str], completions: list[str], *, concepts: list[Any], **info: Any
    ) -> list[float]:
        covered = [coverage(c, words) for c, words in zip(completions, concepts, strict=True)]
        fluent = [fluency(c) for c in completions]
        self.last_components = {"coverage": covered, "fluency": fluent}
        return [c * (0.5 + 0.5 * f) for c, f in zip(covered, fluent, strict=True)]


def prompt_for(concepts: Sequence[str]) -> str:
    words = ", ".join(concepts)
    return f"Write one sentence that uses all of these words: {words}."


@functools.cache
def word_sets(split: str) -> tuple[tuple[str, ...], ...]:
    """Sets of two nouns and a verb for ``split``, drawn from a fixed seed."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    nouns, verbs = common_words("NN"), common_words("VB", min_count=10)
    rng = np.random.default_rng(SEED)
    sets: dict[tuple[str, ...], None] = {}
    while len(sets) < TASKS_PER_SPLIT[split]:
        first, second = rng.choice(len(nouns), size=2, replace=False)
        concepts = (nouns[first], nouns[second], verbs[rng.integers(len(verbs))])
        if split_of(" ".join(sorted(concepts))) == split:
            sets[concepts] = None
    return tuple(sets)


class ConstrainedSentenceEnv(TextEnv):
    """Write one sentence using all of three given words; reward in [0, 1]."""

    instruction = True  # the prompt asks for something: chat-formatted by default
    reward_range = ConstrainedSentenceReward.reward_range

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        tasks = [{"prompt": prompt_for(s), "concepts": list(s)} for s in word_sets(split)]
        super().__init__(tasks, ConstrainedSentenceReward(), render_mode=render_mode)
        self.split = split

    def example_action(self) -> str:
        first, second, verb = self.task["concepts"]
        return f"The {first} and the {second} {verb} together every day."
