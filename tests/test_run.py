"""The run folder of :mod:`rlm.run`: config.json, meta.json, status, reopening, removal.

Run: ``python -m pytest tests/test_run.py -q``
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

import rlm.run
from rlm.errors import ConfigError
from rlm.run import TRACKED_PACKAGES, RunDir, git_state, make_run_name, package_versions, to_plain

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


class Algo(enum.Enum):
    PPO = "ppo"


@dataclasses.dataclass
class Optim:
    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.95)


@dataclasses.dataclass
class Config:
    env_id: str = "rlm/Sentiment-v0"
    seed: int = 1
    out: Path = Path("/tmp/runs")
    algo: Algo = Algo.PPO
    optim: Optim = dataclasses.field(default_factory=Optim)


def git(cwd: Path, *args: str) -> str:
    env_args = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    done = subprocess.run(
        ["git", *env_args, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_make_run_name_is_cleanrl_style(monkeypatch):
    monkeypatch.setattr(rlm.run.time, "time", lambda: 1700000000.7)
    assert make_run_name("rlm/Sentiment-v0", "ppo", 3) == "rlm_Sentiment-v0__ppo__3__1700000000"


def test_to_plain_converts_config_values():
    value = {
        "path": Path("/a/b"),
        "algo": Algo.PPO,
        "np": np.float32(0.5),
        "npint": np.int64(7),
        "torch": torch.tensor(2.5),
        "tags": ("a", "b"),
        "nested": Optim(),
        "dtype": torch.float32,
    }
    assert to_plain(value) == {
        "path": "/a/b",
        "algo": "ppo",
        "np": 0.5,
        "npint": 7,
        "torch": 2.5,
        "tags": ["a", "b"],
        "nested": {"lr": 3e-5, "betas": [0.9, 0.95]},
        "dtype": "torch.float32",
    }
    json.dumps(to_plain(value))  # must not raise


def test_create_writes_config_json_from_a_dataclass(tmp_path):
    run = RunDir.create(tmp_path / "runs", "demo", Config())
    assert run.path == tmp_path / "runs" / "demo"
    assert json.loads(run.config_path.read_text()) == {
        "env_id": "rlm/Sentiment-v0",
        "seed": 1,
        "out": "/tmp/runs",
        "algo": "ppo",
        "optim": {"lr": 3e-5, "betas": [0.9, 0.95]},
    }
    assert run.read_config()["seed"] == 1


def test_create_writes_meta_json(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["experiments/ppo.py", "--seed", "2"])
    run = RunDir.create(tmp_path, "demo", {"seed": 2})
    meta = json.loads(run.meta_path.read_text())
    assert meta["status"] == "running"
    assert meta["end_time"] is None
    assert meta["command"] == ["experiments/ppo.py", "--seed", "2"]
    assert meta["python"] == platform.python_version()
    assert meta["platform"] == platform.platform()
    assert isinstance(meta["hostname"], str) and meta["hostname"]
    started = datetime.fromisoformat(meta["start_time"])
    assert started.tzinfo is not None
    assert abs((datetime.now().astimezone() - started).total_seconds()) < 60
    assert list(meta["packages"]) == list(TRACKED_PACKAGES)
    assert meta["packages"]["rlm"] == importlib.metadata.version("rlm")
    assert meta["packages"]["torch"] == importlib.metadata.version("torch")
    assert "git_commit" in meta and "git_dirty" in meta


def test_missing_package_version_is_none():
    versions = package_versions(("numpy", "no-such-package-rlm-test"))
    assert versions == {"numpy": np.__version__, "no-such-package-rlm-test": None}


@needs_git
def test_meta_records_the_projects_git_state(tmp_path):
    # The project may have no commits yet: compare with what git itself says, whatever it is.
    project = Path(rlm.run.__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True)
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True
    )
    meta = RunDir.create(tmp_path, "demo", {}).read_meta()
    if status.returncode != 0:  # not a repository
        assert (meta["git_commit"], meta["git_dirty"]) == (None, None)
    else:
        expected = head.stdout.strip() if head.returncode == 0 else None
        assert meta["git_commit"] == expected
        assert meta["git_dirty"] == bool(status.stdout.strip())


@needs_git
def test_git_state_in_a_fresh_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    assert git_state(repo) == (None, False)  # a repository with no commits yet

    (repo / "train.py").write_text("print('hi')\n")
    assert git_state(repo) == (None, True)  # untracked files count as dirty

    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    commit = git(repo, "rev-parse", "HEAD")
    assert len(commit) == 40
    assert git_state(repo) == (commit, False)

    (repo / "train.py").write_text("print('changed')\n")
    assert git_state(repo) == (commit, True)

    meta = RunDir.create(tmp_path / "runs", "demo", {}, source_dir=repo).read_meta()
    assert (meta["git_commit"], meta["git_dirty"]) == (commit, True)


def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    # A ceiling stops git from finding a repository above tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_state(tmp_path) == (None, None)


def test_create_refuses_an_existing_folder(tmp_path):
    RunDir.create(tmp_path, "demo", {"seed": 1})
    with pytest.raises(ConfigError, match="already exists"):
        RunDir.create(tmp_path, "demo", {"seed": 2})
    assert RunDir(tmp_path / "demo").read_config() == {"seed": 1}  # untouched


def test_create_rejects_a_config_that_is_not_a_mapping(tmp_path):
    with pytest.raises(TypeError, match="mapping or a dataclass"):
        RunDir.create(tmp_path, "demo", [1, 2])  # type: ignore[arg-type]
    assert not (tmp_path / "demo").exists()


def test_paths(tmp_path):
    run = RunDir.create(tmp_path, "demo", {})
    assert run.name == "demo"
    assert run.metrics_path == tmp_path / "demo" / "metrics.jsonl"
    assert run.samples_path == tmp_path / "demo" / "samples.jsonl"
    assert run.tensorboard_dir == tmp_path / "demo" / "tb"
    assert run.checkpoints_dir == tmp_path / "demo" / "checkpoints"


def test_set_status_keeps_other_fields(tmp_path):
    run = RunDir.create(tmp_path, "demo", {})
    before = run.read_meta()

    run.set_status("failed", error="ValueError: bad")
    meta = run.read_meta()
    assert meta["status"] == "failed"
    assert meta["error"] == "ValueError: bad"
    assert datetime.fromisoformat(meta["end_time"]) >= datetime.fromisoformat(meta["start_time"])
    assert {k: meta[k] for k in before if k not in ("status", "end_time")} == {
        k: v for k, v in before.items() if k not in ("status", "end_time")
    }

    run.set_status("running", error=None)  # resumed
    meta = run.read_meta()
    assert (meta["status"], meta["end_time"], meta["error"]) == ("running", None, None)

    run.set_status("finished", steps=10)
    meta = run.read_meta()
    assert (meta["status"], meta["steps"]) == ("finished", 10)
    assert meta["end_time"] is not None
    assert not list(run.path.glob("*.tmp"))


def test_set_status_rejects_unknown_status(tmp_path):
    run = RunDir.create(tmp_path, "demo", {})
    with pytest.raises(ValueError, match="status must be one of"):
        run.set_status("done")
    assert run.read_meta()["status"] == "running"


def test_open_reuses_an_existing_run(tmp_path):
    created = RunDir.create(tmp_path, "demo", {"seed": 5})
    opened = RunDir.open(str(created.path))
    assert opened == created
    assert opened.read_config() == {"seed": 5}


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_open_without_config_is_a_config_error(tmp_path, make):
    path = tmp_path / "demo"
    if make == "empty":
        path.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        RunDir.open(path)
