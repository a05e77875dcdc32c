"""Short real texts: inspirational quotes and programmer jokes, from installed packages.

``inspirational-quotes`` ships 326 quotes with their authors (``quotes.json``), ``pyjokes``
283 English one-liners. Texts are whitespace-normalised and de-duplicated; each is put in
the train or eval split by a stable hash of its text, so the splits are disjoint.

Example:
    >>> texts = short_texts("eval")  # doctest: +SKIP
    >>> texts[0]["text"], texts[0]["source"]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from envs.wordlist import split_of
from rlm.env import SPLITS
from rlm.errors import ConfigError

EVAL_FRACTION = 0.2


def _quotes() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("inspirational_quotes")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the quotes need inspirational-quotes: `pip install inspirational-quotes`"
        )
    rows = json.loads((Path(spec.origin).parent / "quotes.json").read_text(encoding="utf-8"))
    return [{"text": row["text"], "source": "quote", "author": row["from"]} for row in rows]


def _jokes() -> list[dict[str, str]]:
    try:
        import pyjokes
    except ImportError:
        raise ConfigError("the jokes need the package pyjokes: `pip install pyjokes`") from None
    jokes = pyjokes.get_jokes(language="en", category="all")
    return [{"text": joke, "source": "joke", "author": ""} for joke in jokes]


@functools.cache
def all_short_texts() -> tuple[dict[str, Any], ...]:
    """Every quote and joke once, in a fixed order, with its split."""
    seen: set[str] = set()
    rows = []
    for row in _quotes() + _jokes():
        text = " ".join(row["text"].split())
        if not text or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        rows.append({**row, "text": text, "split": split_of(text, EVAL_FRACTION)})
    return tuple(rows)


def short_texts(split: str, min_words: int = 1) -> tuple[dict[str, Any], ...]:
    """The quotes and jokes of ``split`` with at least ``min_words`` words."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    return tuple(
        row
        for row in all_short_texts()
        if row["split"] == split and len(row["text"].split()) >= min_words
    )
