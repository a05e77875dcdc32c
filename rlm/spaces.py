"""A Gymnasium space for real text.

``gymnasium.spaces.Text`` admits only the characters of its charset, alphanumerics by
default, so a sentence with a space or a comma is not in it and the environment checker
warns. :class:`TextSpace` admits any Python string up to a length, and samples from
printable ASCII so that random actions are still readable.

Example:
    >>> space = TextSpace(max_length=64)
    >>> space.contains("Hello, world! 👋")
    True
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym

_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


class TextSpace(gym.spaces.Text):
    """Any string of ``min_length`` to ``max_length`` characters, in any script."""

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=_PRINTABLE, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace({self.min_length}, {self.max_length})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TextSpace)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    __hash__ = None  # type: ignore[assignment]  # mutable RNG state, like other spaces
