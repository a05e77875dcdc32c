"""The run folder: one directory per training run holding its config, provenance and outputs.

Layout of ``<root>/<name>/``::

    config.json      the resolved config, as plain JSON
    meta.json        git commit, command line, versions, host, times, status
    metrics.jsonl    one line per logged step (written by :class:`rlm.tracking.Tracker`)
    samples.jsonl    generated samples with their step
    tb/              TensorBoard event files
    checkpoints/     model and optimizer state
    wandb/           W&B's own folder (offline runs land in ``wandb/offline-run-*``)

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> run = RunDir.create(root, "rlm_Sentiment-v0__ppo__1__1700000000", {"lr": 3e-5})
    >>> run.read_config()
    {'lr': 3e-05}
    >>> run.set_status("finished")
    >>> run.read_meta()["status"]
    'finished'
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.errors import ConfigError
from rlm.files import read_jsonl, truncate_jsonl, write_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Packages whose versions decide what a run did; recorded in meta.json.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "peft",
    "gymnasium",
    "wandb",
    "tensorboard",
    "numpy",
    "rlm",
)
STATUSES = ("running", "stopped", "preempted", "finished", "failed")

# The folder holding the rlm package: the project's repository in an editable install.
_PROJECT_DIR = Path(__file__).resolve().parent.parent


def make_run_name(env_id: str, exp_name: str, seed: int) -> str:
    """A unique, sortable run name in CleanRL's style.

    Example:
        >>> make_run_name("rlm/Sentiment-v0", "ppo", 1)  # doctest: +SKIP
        'rlm_Sentiment-v0__ppo__1__1700000000'
    """
    # The slash of a namespaced env id would otherwise nest the run folder.
    return f"{env_id.replace('/', '_')}__{exp_name}__{seed}__{int(time.time())}"


def to_plain(value: Any) -> Any:
    """Convert a config value to plain JSON types (dict, list, str, int, float, bool, None).

    Dataclasses become dicts, paths and unknown objects strings, enums their values,
    numpy and torch scalars Python numbers.

    Example:
        >>> to_plain({"out": Path("/tmp/x"), "sizes": (1, 2)})
        {'out': '/tmp/x', 'sizes': [1, 2]}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy/torch scalar
        return value.item()
    return str(value)  # paths, dtypes, devices: their string is what a reader wants


def now_iso() -> str:
    """The local time with its UTC offset, to the second: ``2026-11-28T11:55:49+00:00``."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(directory: Path | str) -> tuple[str | None, bool | None]:
    """The commit checked out in ``directory`` and whether its work tree is dirty.

    Returns ``(None, None)`` outside a git repository; the commit is None in a repository
    with no commits yet. Untracked files count as dirty: a new script changes what ran.
    """
    status = _git(["status", "--porcelain"], Path(directory))
    if status is None:
        return None, None
    return _git(["rev-parse", "HEAD"], Path(directory)), bool(status)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names``; None for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A handle on a run folder. Make one with :meth:`create` or :meth:`open`.

    Attributes:
        path: The run folder, ``<root>/<name>``.
    """

    path: Path

    @classmethod
    def create(
        cls,
        root: Path | str,
        name: str,
        config: Mapping[str, Any] | DataclassInstance,
        *,
        source_dir: Path | str | None = None,
    ) -> RunDir:
        """Make ``root/name/`` and write ``config.json`` and ``meta.json`` (status "running").

        Args:
            root: Folder holding all runs; made if missing.
            name: The run's name, usually from :func:`make_run_name`.
            config: The resolved config, a mapping or a config dataclass.
            source_dir: Where to read the git commit; defaults to the folder holding rlm.

        Raises:
            ConfigError: ``root/name`` already exists.

        Example:
            >>> import tempfile
            >>> run = RunDir.create(tempfile.mkdtemp(), "demo", {"seed": 1})
            >>> sorted(p.name for p in run.path.iterdir())
            ['config.json', 'meta.json']
        """
        plain = to_plain(config)
        if not isinstance(plain, dict):
            raise TypeError(f"config must be a mapping or a dataclass, got {type(config).__name__}")
        path = Path(root) / name
        Path(root).mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # not exist_ok: two runs must never share a folder
        except FileExistsError:
            raise ConfigError(
                f"run folder {path} already exists; resume it with --resume {path} "
                "or choose another run name"
            ) from None
        commit, dirty = git_state(source_dir if source_dir is not None else _PROJECT_DIR)
        meta = {
            "status": "running",
            "start_time": now_iso(),
            "end_time": None,
            "git_commit": commit,
            "git_dirty": dirty,
            "command": list(sys.argv),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "hostname": socket.gethostname(),
            "packages": package_versions(),
        }
        run = cls(path)
        write_json(run.config_path, plain)
        write_json(run.meta_path, meta)
        return run

    @classmethod
    def open(cls, path: Path | str) -> RunDir:
        """Reopen an existing run folder, for example to resume it.

        Raises:
            ConfigError: ``path`` holds no ``config.json``.
        """
        run = cls(Path(path))
        if not run.config_path.is_file():
            raise ConfigError(
                f"{run.path} is not a run folder (no config.json); "
                "pass the folder of an earlier run, for example runs/<run name>"
            )
        return run

    @property
    def name(self) -> str:
        """The run's name (the folder's name)."""
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def alerts_path(self) -> Path:
        return self.path / "alerts.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def read_config(self) -> dict[str, Any]:
        """The config the run was created with, as plain JSON values."""
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def read_alerts(self) -> list[dict[str, Any]]:
        """The alarms the run tripped (``alerts.jsonl``, :mod:`rlm.alarms`), in order."""
        return read_jsonl(self.alerts_path)

    def read_meta(self) -> dict[str, Any]:
        """The contents of ``meta.json`` (empty if it is missing)."""
        if not self.meta_path.is_file():
            return {}
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into ``meta.json``.

        Example:
            >>> import tempfile
            >>> run = RunDir.create(tempfile.mkdtemp(), "demo", {})
            >>> run.update_meta(wandb_mode="offline")
            >>> run.read_meta()["wandb_mode"]
            'offline'
        """
        meta = self.read_meta()
        meta.update(to_plain(fields))
        write_json(self.meta_path, meta)

    def set_status(self, status: str, **extra: Any) -> None:
        """Record the run's status in ``meta.json``, with the end time and ``extra`` fields.

        Args:
            status: "running", "stopped" or "preempted" (both resumable), "finished" or
                "failed". Any status but "running" gets an ``end_time``; a resumed run
                has it cleared.
            **extra: More fields to record, for example ``error="ValueError: ..."``.

        Example:
            >>> import tempfile
            >>> run = RunDir.create(tempfile.mkdtemp(), "demo", {})
            >>> run.set_status("failed", error="out of memory")
            >>> run.read_meta()["error"]
            'out of memory'
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        end_time = None if status == "running" else now_iso()
        self.update_meta(status=status, end_time=end_time, **extra)

    def rewind(self, step: int) -> None:
        """Drop what was logged after ``step`` from ``metrics.jsonl``, ``samples.jsonl``
        and ``alerts.jsonl`` (a run resumed from the checkpoint of ``step`` logs those
        steps again); ``-1`` drops everything (a run that starts again from the beginning)."""
        for path in (self.metrics_path, self.samples_path, self.alerts_path):
            truncate_jsonl(path, lambda row: int(row["step"]) <= step)
