"""The entry point shared by the experiments and scripts: flags in, one-line errors out.

:func:`parse_config` reads a script's config from the command line. When the config has
``config`` and ``resume`` fields (the experiments' :class:`rlm.settings.RunSettings`),
``--config FILE`` first sets fields from a YAML file or a run's ``config.json``, and
flags override it; ``--resume RUN`` takes the run's own ``config.json`` and accepts no
other setting but ``--stop-after`` and ``--threads``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import tyro

from rlm.config_files import apply_settings, changed_settings, leaves, read_settings_file
from rlm.errors import ConfigError, RlmError

ConfigT = TypeVar("ConfigT")
# What may change when a run is resumed: how far it goes this time, and the machine.
_RESUME_MAY_CHANGE = {"resume", "stop_after", "threads"}


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` or ``flag=VALUE`` in ``argv``."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def parse_config(
    config_type: type[ConfigT], argv: Sequence[str], *, algorithm: str | None = None
) -> ConfigT:
    """``argv`` parsed into ``config_type`` by tyro, over the defaults a config file sets.

    Raises:
        ConfigError: a config file that cannot be read or names an unknown setting, or a
            resumed run given settings of its own.
    """
    argv = list(argv)
    fields = leaves(config_type)
    config_file = _flag_value(argv, "--config") if "config" in fields else None
    resume = _flag_value(argv, "--resume") if "resume" in fields else None
    if config_file is None and resume is None:
        return tyro.cli(config_type, args=argv)
    if config_file is not None and resume is not None:
        raise ConfigError("--resume takes the run's own settings: drop --config")
    default = config_type()
    if config_file is not None:
        path = Path(config_file)
        default = apply_settings(
            default, read_settings_file(path), source=str(path), algorithm=algorithm
        )
    if resume is not None:
        path = Path(resume) / "config.json"
        if not path.is_file():
            raise ConfigError(f"--resume {resume}: no config.json there; pass a run folder")
        default = apply_settings(
            default, read_settings_file(path), source=str(path), algorithm=algorithm
        )
    config = tyro.cli(config_type, default=default, args=argv)
    if resume is not None:
        changed = [n for n in changed_settings(config, default) if n not in _RESUME_MAY_CHANGE]
        if changed:
            flags = ", ".join("--" + n.replace("_", "-") for n in changed)
            raise ConfigError(
                f"--resume continues {resume} with its own settings; {flags} cannot change. "
                f"Start a new run instead: --config {path} {flags.split(', ')[0]} ..."
            )
    return config


def run_cli(
    main: Callable[[ConfigT], object],
    config_type: type[ConfigT],
    argv: list[str] | None = None,
    *,
    algorithm: str | None = None,
) -> int:
    """Parse ``argv`` (:func:`parse_config`) and run ``main`` on the config.

    A user error (:class:`rlm.errors.RlmError`: a bad flag value, a missing model, an
    unknown environment) prints ``error: <message>`` on stderr and returns exit status 2
    instead of a traceback; anything else is a bug and keeps its traceback.
    """
    # Tokenizer threads only compete with torch's for the same cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rlm.preemption import stop_with_parent  # (imports torch: the experiments need it)

    stop_with_parent()  # a sweep's trial: preempted if the sweep dies
    try:
        main(parse_config(config_type, sys.argv[1:] if argv is None else argv, algorithm=algorithm))
    except RlmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
