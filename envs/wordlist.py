"""Common English words by part of speech, and a stable hash split for any text.

The words come from the data files of the installed ``textblob`` package: the part of
speech from Brill's tagger lexicon (``en-lexicon.txt``, trained on the Brown corpus and the
Penn Treebank) and the frequency from Norvig's spelling counts (``en-spelling.txt``, from
Project Gutenberg books and the British National Corpus). Only lower-case alphabetic words
of at least three letters seen at least ``min_count`` times are kept.

Example:
    >>> "water" in common_words("NN")
    True
    >>> split_of("any text") in ("train", "eval")
    True
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import textblob

from rlm.errors import ConfigError

_DATA = Path(textblob.__file__).parent / "en"
TAGS = {"NN": "noun", "VB": "verb (base form)", "JJ": "adjective"}


def _entries(name: str) -> list[list[str]]:
    lines = (_DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith(";;;")]


@functools.cache
def word_counts() -> dict[str, int]:
    """Lower-case word -> count in Norvig's spelling corpus."""
    return {word: int(count) for word, count in _entries("en-spelling.txt")}


@functools.cache
def lexicon_tags() -> dict[str, str]:
    """Word -> its most frequent part-of-speech tag in Brill's lexicon."""
    return {parts[0]: parts[1] for parts in _entries("en-lexicon.txt")}


@functools.cache
def common_words(tag: str, min_count: int = 20) -> tuple[str, ...]:
    """Sorted lower-case words whose usual tag is ``tag`` ("NN", "VB", "JJ")."""
    if tag not in TAGS:
        raise ConfigError(f"tag must be one of {sorted(TAGS)}, got {tag!r}")
    counts = word_counts()
    return tuple(
        sorted(
            word
            for word, word_tag in lexicon_tags().items()
            if word_tag == tag
            and word.isalpha()
            and word.islower()
            and len(word) >= 3
            and counts.get(word, 0) >= min_count
        )
    )


@functools.cache
def english_vocabulary() -> frozenset[str]:
    """Every lower-case word of both files: what counts as a known English word."""
    words = set(word_counts())
    words.update(word.lower() for word in lexicon_tags() if word.isalpha())
    return frozenset(words)


def split_of(text: str, eval_fraction: float = 0.1) -> str:
    """``"eval"`` for about ``eval_fraction`` of texts, chosen by a stable hash of the text."""
    digest = hashlib.sha1(" ".join(text.casefold().split()).encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 10_000
    return "eval" if bucket < eval_fraction * 10_000 else "train"
