"""The run folder of a reward-model training script: folder and tracker, then its metrics.

Both scripts (scripts/train_reward_classifier.py, scripts/train_preference_reward.py) write
``config.json``, ``meta.json``, ``metrics.jsonl``, TensorBoard and W&B through the shared
:class:`rlm.run.RunDir` and :class:`rlm.tracking.Tracker`, under the W&B project
``rlm-reward-models``, and end with ``metrics.json`` and ``metrics.md``; the trained model
goes to ``model/`` inside the run folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm.run import RunDir
from rlm.tracking import Tracker

PROJECT = "rlm-reward-models"


@contextlib.contextmanager
def reward_model_run(
    output_dir: str | Path, config: Any, *, wandb: str
) -> Iterator[tuple[RunDir, Tracker]]:
    """Create the run folder ``output_dir`` and open its tracker for the ``with`` block."""
    out = Path(output_dir)
    run = RunDir.create(out.parent, out.name, config)
    with Tracker(run, project=PROJECT, run_name=out.name, config=config, wandb=wandb) as tracker:
        yield run, tracker


def write_metrics(run: RunDir, summary: dict[str, Any], markdown: str) -> None:
    """The final metrics, as JSON for programs and markdown for people."""
    (run.path / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run.path / "metrics.md").write_text(markdown)
