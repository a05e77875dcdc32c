"""Run folders read back as data, for reports and diagnostics: no model is loaded.

Every run the runner writes has the same files (rlm/run.py): ``config.json``,
``meta.json``, ``metrics.jsonl``, ``samples.jsonl``, ``alerts.jsonl`` and, once finished,
``summary.json``. :func:`find_runs` takes run folders or folders that hold them (a
comparison's, a sweep's) and returns them sorted.

Example:
    >>> runs = find_runs([Path("runs/compare")])  # doctest: +SKIP
    >>> runs[0].group, runs[0].seed, runs[0].curve("eval/reward_mean")  # doctest: +SKIP
    ('grpo', 1, ([0, 4800, 9780], [0.07, 0.41, 0.80]))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError
from rlm.files import read_jsonl


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass(frozen=True)
class RunFolder:
    """One run's files, parsed."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    """None until the run has finished."""
    metrics: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    label: str | None = None
    """The group's name in reports, instead of the experiment's (a comparison's arm)."""

    @classmethod
    def open(cls, path: Path, label: str | None = None) -> RunFolder:
        """Read the run folder ``path``.

        Raises:
            ConfigError: ``path`` holds no ``config.json``.
        """
        config = _json(path / "config.json")
        if config is None:
            raise ConfigError(f"{path} is not a run folder (no config.json)")
        return cls(
            path=path,
            config=config,
            meta=_json(path / "meta.json") or {},
            summary=_json(path / "summary.json"),
            metrics=read_jsonl(path / "metrics.jsonl"),
            samples=read_jsonl(path / "samples.jsonl"),
            alerts=read_jsonl(path / "alerts.jsonl"),
            label=label,
        )

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def algorithm(self) -> str:
        return str(self.config.get("algorithm", "?"))

    @property
    def settings(self) -> dict[str, Any]:
        """The shared settings (``config.json``'s ``run``)."""
        return dict(self.config.get("run", {}))

    @property
    def group(self) -> str:
        """Runs that differ only by seed share a group: the label, or the experiment name
        (default: the algorithm's)."""
        return self.label or str(self.settings.get("exp_name") or self.algorithm)

    @property
    def seed(self) -> int | None:
        return self.settings.get("seed")

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """The metric rows of the run's evaluations (before training first)."""
        return [row for row in self.metrics if "eval/reward_mean" in row]

    @property
    def generates(self) -> bool:
        """Whether the run generated tokens in training (SFT does not)."""
        return any(row.get("perf/tokens", 0) > 0 for row in self.metrics)

    def curve(self, key: str) -> tuple[list[float], list[float]]:
        """``key`` at each evaluation against the generated tokens then (against the
        step, for a run that generates none); empty if the run never logged it."""
        x_key = "perf/tokens" if self.generates else "step"
        rows = [row for row in self.evaluations if row.get(key) is not None]
        return [row.get(x_key, 0) for row in rows], [row[key] for row in rows]

    def flat_config(self) -> dict[str, Any]:
        """The config as ``section.field`` keys (``run.lr``, ``run.tracking.output_dir``,
        ``ppo.epochs``), for side-by-side tables."""
        flat: dict[str, Any] = {}

        def walk(value: Any, prefix: str) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(inner, f"{prefix}.{key}" if prefix else key)
            else:
                flat[prefix] = value

        walk(self.config, "")
        return flat


def _is_run_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "meta.json").is_file()


def find_runs(paths: Iterable[Path]) -> list[RunFolder]:
    """The run folders among ``paths`` and under them, sorted by group, seed and name.

    Raises:
        ConfigError: a path does not exist or holds no run folder.
    """
    found: dict[Path, RunFolder] = {}
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        if _is_run_folder(path):
            folders = [path]
        else:
            folders = sorted(p.parent for p in path.rglob("meta.json") if _is_run_folder(p.parent))
        if not folders:
            raise ConfigError(f"{path} holds no run folder (a folder with config.json)")
        for folder in folders:
            found.setdefault(folder.resolve(), RunFolder.open(folder))
    return sorted(found.values(), key=lambda r: (r.group, r.seed or 0, r.name))
