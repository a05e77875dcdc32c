"""The run folder of a reward-model training script: folder and tracker, then its metrics.

Both scripts (scripts/train_reward_classifier.py, scripts/train_preference_reward.py) take
the tracking flags every script shares (:class:`rlm.tracking.TrackingSettings`:
``--output-dir``, the parent of run folders, ``--run-name``, ``--wandb``...), here with
run folders under ``runs/reward_models`` and the W&B project ``rlm-reward-models`` by
default. A run writes ``config.json``, ``meta.json``, ``metrics.jsonl``, TensorBoard and W&B
through :func:`rlm.tracking.open_run`, and ends with ``metrics.json`` and ``metrics.md``;
the trained model goes to ``model/`` inside the run folder.

Example:
    >>> import tempfile
    >>> settings = TrackingSettings(Path(tempfile.mkdtemp()), wandb="disabled", tensorboard=False)
    >>> with reward_model_run(settings, "lstm__1__1700000000", {"seed": 1}) as (run, tracker):
    ...     tracker.log({"train/loss": 0.5}, step=1)
    >>> run.name, run.read_meta()["status"]
    ('lstm__1__1700000000', 'finished')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlm.run import RunDir
from rlm.tracking import Tracker, TrackingSettings, open_run

PROJECT = "rlm-reward-models"
OUTPUT_DIR = Path("runs/reward_models")


def reward_model_tracking() -> TrackingSettings:
    """The scripts' tracking defaults: runs under runs/reward_models, W&B project
    rlm-reward-models, W&B "auto" (online when logged in, else offline)."""
    return TrackingSettings(output_dir=OUTPUT_DIR, wandb_project=PROJECT)


def default_run_name(model: str, seed: int) -> str:
    """The run folder's name when ``--run-name`` is not given: ``<model>__<seed>__<time>``."""
    return f"{model}__{seed}__{int(time.time())}"


@contextlib.contextmanager
def reward_model_run(
    settings: TrackingSettings, default_name: str, config: Any
) -> Iterator[tuple[RunDir, Tracker]]:
    """:func:`rlm.tracking.open_run` for the ``with`` block: the folder
    ``<output_dir>/<run_name or default_name>`` and its tracker, marked failed on an error."""
    run, tracker = open_run(settings, default_name, config)
    with tracker:
        yield run, tracker


def fingerprint(texts: Iterable[str]) -> str:
    """A short digest of ``texts`` in order: equal digests, the same evaluation data."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


def write_metrics(run: RunDir, summary: dict[str, Any], markdown: str) -> None:
    """The final metrics, as JSON for programs and markdown for people."""
    (run.path / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run.path / "metrics.md").write_text(markdown)
