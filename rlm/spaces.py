"""A Gymnasium space for real text.

``gymnasium.spaces.Text`` admits only the characters of its charset, alphanumerics by
default, so a sentence with a space or a comma is not in it and the environment checker
warns. :class:`TextSpace` admits any Python string up to a length, and samples from
printable ASCII so that random actions are still readable. Its shared-memory handlers
(below) let ``AsyncVectorEnv`` carry any text between processes.

Example:
    >>> space = TextSpace(max_length=64)
    >>> space.contains("Hello, world! 👋")
    True
"""

from __future__ import annotations

import multiprocessing
import string
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)

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


# --- shared memory for text, used by AsyncVectorEnv ------------------------------------
# AsyncVectorEnv reads its observations once, at construction, from shared memory, and
# relies on the result being a live view (a NumPy array over the buffer). Gymnasium's Text
# handlers return a snapshot tuple of charset characters instead, so text observations
# arrive as blanks. These handlers store any string (slot 0 the length, then one code point
# a slot) and read it back through a live view that deep-copies to a tuple of strings.


class SharedTexts(Sequence[str]):
    """A live, read-only view of the texts in an AsyncVectorEnv's shared memory."""

    def __init__(self, shared_memory: Any, n: int) -> None:
        self._shared_memory = shared_memory
        self._n = n

    def _rows(self) -> np.ndarray:
        return np.frombuffer(self._shared_memory.get_obj(), dtype=np.uint32).reshape(self._n, -1)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: Any) -> Any:
        texts = tuple(
            row[1 : 1 + int(row[0])].tobytes().decode("utf-32-le", "surrogatepass")
            for row in self._rows()
        )
        return texts[index]

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))


@create_shared_memory.register(TextSpace)
def _create_text_shared_memory(
    space: TextSpace, n: int = 1, ctx: ModuleType = multiprocessing
) -> Any:
    return ctx.Array(np.dtype(np.uint32).char, n * (space.max_length + 1))


@write_to_shared_memory.register(TextSpace)
def _write_text_to_shared_memory(
    space: TextSpace, index: int, values: str, shared_memory: Any
) -> None:
    size = space.max_length + 1
    codes = np.frombuffer(values.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if len(codes) > space.max_length:
        raise ValueError(f"a text of {len(codes)} characters exceeds {space.max_length}")
    row = np.frombuffer(shared_memory.get_obj(), dtype=np.uint32)[index * size : (index + 1) * size]
    row[0] = len(codes)
    row[1 : 1 + len(codes)] = codes


@read_from_shared_memory.register(TextSpace)
def _read_text_from_shared_memory(space: TextSpace, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(shared_memory, n)
