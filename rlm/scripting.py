"""The entry point shared by the experiments and scripts: flags in, one-line errors out."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import tyro

from rlm.errors import RlmError

ConfigT = TypeVar("ConfigT")


def run_cli(
    main: Callable[[ConfigT], object], config_type: type[ConfigT], argv: list[str] | None = None
) -> int:
    """Parse ``argv`` into ``config_type`` with tyro and run ``main`` on it.

    A user error (:class:`rlm.errors.RlmError`: a bad flag value, a missing model, an
    unknown environment) prints ``error: <message>`` on stderr and returns exit status 2
    instead of a traceback; anything else is a bug and keeps its traceback.
    """
    # Tokenizer threads only compete with torch's for the same cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main(tyro.cli(config_type, args=argv))
    except RlmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
