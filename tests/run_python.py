"""Scripts run as a user runs them: a subprocess from the project root, offline, one thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def script_env() -> dict[str, str]:
    """The environment of a script run: this checkout importable, no hub, no W&B account."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_SILENT": "true",
    }
    env.pop("WANDB_API_KEY", None)
    return env


def run_python(
    script: Path, args: list[str], *, launcher: list[str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``python script args`` (or ``launcher script args``, e.g. torchrun), output captured."""
    command = (launcher or [sys.executable]) + [str(script), *args]
    return subprocess.run(
        command, env=script_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
