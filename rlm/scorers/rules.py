"""Rule rewards: format, keywords, length, repetition and unfinished text.

Cheap, transparent checks, mostly used as parts of a weighted composite next to a learned
or lexicon reward (to keep a policy from gaming it with long, repetitive or cut-off text).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from rlm.errors import ConfigError, RewardError

_WORD = re.compile(r"\w+", re.UNICODE)


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens (any script; punctuation and emoji are not words)."""
    return _WORD.findall(text.lower())


class RegexMatch:
    """1.0 when the completion matches ``pattern`` (anywhere, or as a whole), else 0.0.

    Example:
        >>> RegexMatch(r"answer: \\d+")([""] * 2, ["answer: 42", "I think 42"])
        [1.0, 0.0]
    """

    __name__ = "regex"
    reward_range = (0.0, 1.0)

    def __init__(self, pattern: str, *, full: bool = False, ignore_case: bool = False) -> None:
        try:
            self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise ConfigError(f"regex reward: invalid pattern {pattern!r}: {exc}") from None
        self.full = full

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        match = self.pattern.fullmatch if self.full else self.pattern.search
        return [float(match(c.strip() if self.full else c) is not None) for c in completions]


class KeywordsPresent:
    """The fraction of required keywords that appear as whole words, in [0, 1].

    The keywords are fixed (``words``) or per sample (the info column ``column``, a list
    of words or a comma-separated string). Case-insensitive.

    Example:
        >>> KeywordsPresent(["sun", "beach"])([""] * 2, ["Sun and beach!", "sunny day"])
        [1.0, 0.0]
    """

    __name__ = "keywords"
    reward_range = (0.0, 1.0)

    def __init__(self, words: Sequence[str] | None = None, *, column: str = "keywords"):
        self.keywords = [w.lower() for w in words] if words is not None else None
        self.column = column

    def _required(self, info: dict[str, Any], n: int) -> list[list[str]]:
        if self.keywords is not None:
            return [self.keywords] * n
        if self.column not in info:
            raise RewardError(
                f"keywords: no keywords given and no {self.column!r} column in the "
                "environment's info; give words=a|b|c"
            )
        return [
            [w.strip().lower() for w in (k.split(",") if isinstance(k, str) else k)]
            for k in info[self.column]
        ]

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        scores = []
        for completion, required in zip(
            completions, self._required(info, len(completions)), strict=True
        ):
            present = set(word_tokens(completion))
            scores.append(sum(w in present for w in required) / len(required) if required else 1.0)
        return scores


class LengthTarget:
    """1 at the target length, falling linearly to 0 at 0 and at twice the target, in [0, 1].

    Example:
        >>> LengthTarget(4)([""] * 3, ["one two three four", "one two", ""])
        [1.0, 0.5, 0.0]
    """

    __name__ = "length"
    reward_range = (0.0, 1.0)

    def __init__(self, target: int, *, unit: Literal["words", "chars"] = "words") -> None:
        if target < 1:
            raise ConfigError(f"length reward: target must be at least 1, got {target}")
        if unit not in ("words", "chars"):
            raise ConfigError(f"length reward: unit must be 'words' or 'chars', got {unit!r}")
        self.target = target
        self.unit = unit

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        lengths = [len(word_tokens(c)) if self.unit == "words" else len(c) for c in completions]
        return [max(0.0, 1.0 - abs(n - self.target) / self.target) for n in lengths]


class RepetitionPenalty:
    """Minus the fraction of word n-grams that repeat an earlier one, in [-1, 0].

    "good good good good" has 3 bigrams of which 2 are repeats: -2/3. Text shorter than
    ``n`` words has nothing to repeat: 0.

    Example:
        >>> RepetitionPenalty(2)([""] * 2, ["good good good good", "a fine day"])
        [-0.6666666666666666, 0.0]
    """

    __name__ = "repetition"
    reward_range = (-1.0, 0.0)

    def __init__(self, n: int = 3) -> None:
        if n < 1:
            raise ConfigError(f"repetition reward: n must be at least 1, got {n}")
        self.n = n

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        scores = []
        for completion in completions:
            tokens = word_tokens(completion)
            grams = [tuple(tokens[i : i + self.n]) for i in range(len(tokens) - self.n + 1)]
            repeats = sum(count - 1 for count in Counter(grams).values())
            scores.append(-repeats / len(grams) if grams else 0.0)
        return scores


class UnfinishedPenalty:
    """``penalty`` (default -1) for a completion that stops mid-sentence, else 0.

    Finished means it ends with sentence-final punctuation (. ! ? … and closing quotes or
    brackets after them) or an emoji; an empty completion is unfinished. Generation that hit
    the token limit usually fails this check, which is what it is for.

    Example:
        >>> UnfinishedPenalty()([""] * 3, ["All done.", "and then we", "Great 🎉"])
        [0.0, -1.0, 0.0]
    """

    __name__ = "unfinished"

    _FINISHED = re.compile(r"([.!?…]+[\"'”’)\]]*|[\U0001F300-\U0001FAFF\u2600-\u27BF])\s*$")

    def __init__(self, penalty: float = -1.0) -> None:
        self.penalty = penalty
        self.reward_range = (min(penalty, 0.0), max(penalty, 0.0))

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        return [0.0 if self._FINISHED.search(c) else self.penalty for c in completions]
