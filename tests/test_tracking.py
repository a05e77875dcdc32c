"""Metrics to W&B, TensorBoard and JSON Lines through :mod:`rlm.tracking`.

W&B runs here are real offline runs (no account, no network); one run and its resumption
are shared by the tests that read their files back.

Run: ``python -m pytest tests/test_tracking.py -q``
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlm.errors import ConfigError
from rlm.run import RunDir
from rlm.tracking import NullTracker, Tracker, has_wandb_credentials, wandb_mode

WANDB_VARS = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC")
SAMPLES = [
    {"prompt": "Say hi", "completion": "hi | there\nfriend", "reward": np.float32(0.5)},
    {"prompt": "Say bye", "completion": "bye", "reward": 1.0, "judge": "ok"},
]


def isolate_wandb(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No W&B variable from the outside and an empty home: no credentials anywhere."""
    for name in WANDB_VARS:
        mp.delenv(name, raising=False)
    home.mkdir(parents=True, exist_ok=True)
    mp.setenv("HOME", str(home))


@pytest.fixture(autouse=True)
def no_wandb_credentials(monkeypatch, tmp_path):
    isolate_wandb(monkeypatch, tmp_path / "home")


def write_netrc(path: Path, machine: str) -> Path:
    path.write_text(f"machine {machine}\n  login user\n  password {'k' * 40}\n")
    path.chmod(0o600)
    return path


# --- wandb_mode --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["online", "offline", "disabled"])
def test_explicit_mode_wins_over_the_environment(monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", "offline" if mode == "online" else "online")
    assert wandb_mode(mode) == mode


@pytest.mark.parametrize("bad", ["", "Online", "dryrun", "sync"])
def test_bad_requested_mode_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="wandb mode must be one of"):
        wandb_mode(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [("offline", "offline"), ("online", "online"), ("disabled", "disabled"), ("dryrun", "offline")],
)
def test_auto_takes_wandb_mode_from_the_environment(monkeypatch, env, expected):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # WANDB_MODE wins over credentials
    monkeypatch.setenv("WANDB_MODE", env)
    assert wandb_mode("auto") == expected


def test_auto_rejects_a_bad_wandb_mode_variable(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "cloud")
    with pytest.raises(ConfigError, match="WANDB_MODE='cloud'"):
        wandb_mode()


def test_auto_without_credentials_is_offline():
    assert not has_wandb_credentials()
    assert wandb_mode() == "offline"


def test_auto_with_an_api_key_is_online(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"


def test_auto_with_a_netrc_entry_in_home_is_online(tmp_path):
    write_netrc(Path(os.environ["HOME"]) / ".netrc", "api.wandb.ai")
    assert wandb_mode() == "online"


def test_auto_with_the_netrc_variable_is_online(monkeypatch, tmp_path):
    monkeypatch.setenv("NETRC", str(write_netrc(tmp_path / "my-netrc", "api.wandb.ai")))
    assert wandb_mode() == "online"


def test_netrc_entry_for_another_host_does_not_count(monkeypatch, tmp_path):
    write_netrc(Path(os.environ["HOME"]) / ".netrc", "github.com")
    assert wandb_mode() == "offline"


def test_netrc_is_read_for_the_host_of_wandb_base_url(monkeypatch, tmp_path):
    write_netrc(Path(os.environ["HOME"]) / ".netrc", "api.wandb.ai")
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com:8080")
    assert wandb_mode() == "offline"  # the api.wandb.ai key is not for this server

    write_netrc(Path(os.environ["HOME"]) / ".netrc", "wandb.example.com:8080")
    assert wandb_mode() == "online"


def test_unreadable_netrc_means_offline_not_an_error(tmp_path):
    (Path(os.environ["HOME"]) / ".netrc").write_text('machine "unterminated\n')
    assert wandb_mode() == "offline"
    (Path(os.environ["HOME"]) / ".netrc").unlink()
    (Path(os.environ["HOME"]) / ".netrc").mkdir()  # a folder: OSError when read
    assert wandb_mode() == "offline"


# --- one real offline run, then its resumption, shared by the tests below ----------------


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """Log to all three sinks, finish, then resume the same run and log one more step."""
    root = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, root / "home")
        run = RunDir.create(root / "runs", "demo", {"lr": 3e-5, "out": Path("/x")})
        with Tracker(run, project="rlm-test", run_name="demo", config={"lr": 3e-5}) as tracker:
            assert tracker.wandb_mode == "offline"  # "auto" without credentials
            first_id = tracker.wandb_run.id
            tracker.log({"train/loss": 0.5, "perf/step": 1}, step=0)
            tracker.log(
                {"train/loss": np.float32(0.25), "perf/step": torch.tensor(2), "kl": math.nan},
                step=1,
            )
            tracker.log_samples(SAMPLES, step=1)
        first_meta = run.read_meta()

        resumed = RunDir.open(run.path)
        tracker = Tracker(
            resumed, project="rlm-test", run_name="demo", config={}, wandb="offline",
            resume_after=1,
        )  # fmt: skip
        resumed_meta_while_running = resumed.read_meta()
        resumed_id = tracker.wandb_run.id
        tracker.log({"train/loss": 0.125}, step=2)
        tracker.finish()
        tracker.finish()  # idempotent
    return {
        "run": run,
        "first_id": first_id,
        "first_meta": first_meta,
        "resumed_id": resumed_id,
        "resumed_meta_while_running": resumed_meta_while_running,
    }


def test_offline_run_writes_a_wandb_file(offline_run):
    run, run_id = offline_run["run"], offline_run["first_id"]
    folders = sorted((run.path / "wandb").glob("offline-run-*"))
    assert folders, f"no offline run in {run.path / 'wandb'}"
    assert folders[0].name.endswith(run_id)
    assert (folders[0] / f"run-{run_id}.wandb").is_file()
    assert (folders[0] / f"run-{run_id}.wandb").stat().st_size > 0


def test_meta_records_the_wandb_run(offline_run):
    meta = offline_run["first_meta"]
    assert meta["status"] == "finished"
    assert meta["end_time"] is not None
    assert meta["wandb_mode"] == "offline"
    assert meta["wandb_id"] == offline_run["first_id"]
    assert meta["wandb_project"] == "rlm-test"
    assert meta["wandb_url"] is None
    assert Path(meta["wandb_sync_dir"]).is_dir()
    assert Path(meta["wandb_sync_dir"]).parent == offline_run["run"].path / "wandb"


def test_resume_continues_the_same_wandb_run(offline_run):
    run = offline_run["run"]
    assert offline_run["resumed_id"] == offline_run["first_id"]
    while_running = offline_run["resumed_meta_while_running"]
    assert while_running["status"] == "running"
    assert while_running["end_time"] is None
    assert while_running["resume_time"]
    final = run.read_meta()
    assert final["status"] == "finished"
    assert final["wandb_id"] == offline_run["first_id"]
    # Offline, each session gets its own folder; `wandb sync` uploads both to one run.
    folders = list((run.path / "wandb").glob(f"offline-run-*-{offline_run['first_id']}*"))
    assert len(folders) == 2


def test_metrics_jsonl_holds_every_step(offline_run):
    lines = offline_run["run"].metrics_path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert [row["train/loss"] for row in rows] == [0.5, 0.25, 0.125]
    assert rows[1]["perf/step"] == 2 and isinstance(rows[1]["perf/step"], int)
    assert math.isnan(rows[1]["kl"])
    assert all(isinstance(row["time"], float) for row in rows)
    assert rows[0]["time"] <= rows[1]["time"] <= rows[2]["time"]


def test_samples_jsonl_holds_the_rows(offline_run):
    lines = offline_run["run"].samples_path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows == [
        {"step": 1, "key": "eval/samples", **SAMPLES[0], "reward": 0.5},
        {"step": 1, "key": "eval/samples", **SAMPLES[1]},
    ]


def test_tensorboard_holds_the_scalars_and_samples(offline_run):
    events = EventAccumulator(str(offline_run["run"].tensorboard_dir))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert math.isnan(events.Scalars("kl")[0].value)
    (text,) = events.Tensors("eval/samples/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert text.step == 1
    assert markdown.splitlines()[0] == "| prompt | completion | reward | judge |"
    assert r"hi \| there<br>friend" in markdown  # the pipe and newline stay inside the cell


# --- without W&B -------------------------------------------------------------------------


def test_disabled_wandb_and_tensorboard_write_only_jsonl(tmp_path):
    run = RunDir.create(tmp_path / "runs", "demo", {})
    with Tracker(
        run, project="p", run_name="demo", config={}, wandb="disabled", tensorboard=False
    ) as tracker:
        assert tracker.wandb_run is None
        tracker.log({"x": 1}, step=0)
        tracker.log_samples(SAMPLES, step=0)
        tracker.log_samples([], step=1)  # nothing to write
    assert sorted(p.name for p in run.path.iterdir()) == [
        "config.json",
        "meta.json",
        "metrics.jsonl",
        "samples.jsonl",
    ]
    meta = run.read_meta()
    assert meta["wandb_mode"] == "disabled"
    assert "wandb_id" not in meta


def test_exception_in_the_block_marks_the_run_failed(tmp_path):
    run = RunDir.create(tmp_path / "runs", "demo", {})
    with (
        pytest.raises(RuntimeError, match="diverged"),
        Tracker(run, project="p", run_name="demo", config={}, wandb="disabled") as tracker,
    ):
        tracker.log({"x": 1.0}, step=0)
        raise RuntimeError("loss diverged")
    meta = run.read_meta()
    assert meta["status"] == "failed"
    assert meta["error"] == "RuntimeError: loss diverged"
    assert json.loads(run.metrics_path.read_text())["x"] == 1.0


def test_non_numeric_metric_is_a_type_error(tmp_path):
    run = RunDir.create(tmp_path / "runs", "demo", {})
    tracker = Tracker(run, project="p", run_name="demo", config={}, wandb="disabled")
    with pytest.raises(TypeError, match="'note' must be a number"):
        tracker.log({"note": "hello"}, step=0)
    with pytest.raises(TypeError, match="'vec' must be a scalar"):
        tracker.log({"vec": torch.ones(3)}, step=0)
    tracker.finish()


def test_online_without_credentials_is_a_config_error(tmp_path):
    run = RunDir.create(tmp_path / "runs", "demo", {})
    with pytest.raises(ConfigError, match="wandb login"):
        Tracker(run, project="p", run_name="demo", config={}, wandb="online", tensorboard=False)


def test_null_tracker_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with NullTracker() as tracker:
        assert tracker.log({"x": 1.0}, step=0) is None
        assert tracker.log_samples(SAMPLES, step=0) is None
        assert tracker.wandb_run is None
    tracker.finish("failed")
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]  # only the fixture's empty home
    assert list((tmp_path / "home").iterdir()) == []
    with pytest.raises(ValueError), NullTracker():
        raise ValueError("not swallowed")
