"""Range checks for configuration dataclasses, with messages that name the flag.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     batch_size: int = 0
    >>> check_ranges(C(), at_least_one=["batch_size"])
    Traceback (most recent call last):
    ...
    rlm.errors.ConfigError: --batch-size must be at least 1, got 0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rlm.errors import ConfigError


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def check_ranges(
    config: object,
    *,
    at_least_one: Iterable[str] = (),
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    unit_interval: Iterable[str] = (),
) -> None:
    """Raise :class:`ConfigError` for the first named field of ``config`` out of its range.

    ``positive`` also rejects NaN and infinity; the other checks reject NaN. A field that
    is ``None`` (an optional setting left unset) passes.
    """

    def values(names: Iterable[str]) -> list[tuple[str, Any]]:
        return [(n, getattr(config, n)) for n in names if getattr(config, n) is not None]

    for name, value in values(at_least_one):
        if value < 1:
            raise ConfigError(f"{flag(name)} must be at least 1, got {value}")
    for name, value in values(positive):
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{flag(name)} must be a positive number, got {value}")
    for name, value in values(non_negative):
        if not value >= 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
    for name, value in values(unit_interval):
        if not 0 <= value <= 1:
            raise ConfigError(f"{flag(name)} must be in [0, 1], got {value}")
