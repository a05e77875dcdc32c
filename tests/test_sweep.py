"""Sweeps (rlm/sweep.py): the sweep file, the objective, and a real sweep of tiny runs that
is killed with SIGKILL in the middle of a trial and resumed.

    python -m pytest tests/test_sweep.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlm.errors import ConfigError
from rlm.sweep import Objective, SweepSpec, trial_config
from tests.helpers import ROOT, metrics_of, read_json, script_env

SETTINGS = {
    "steps": 4, "batch_size": 4, "max_new_tokens": 6, "eval_prompts": 4, "eval_batch_size": 4,
    "eval_every": 2, "checkpoint_every": 1, "lora_r": 4, "threads": 1, "wandb": "disabled",
    "ppo": {"minibatches": 2},
}  # fmt: skip


def sweep_file(folder: Path, model: Path, **changes) -> Path:
    spec = {
        "name": "tiny", "base": str(ROOT / "configs" / "demo.yaml"), "trials": 3, "workers": 1,
        "pruner": "none", "output_dir": str(folder / "sweeps"),
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "ppo.kl_coef": {"type": "categorical", "choices": [0.02, 0.05, 0.1]},
        },
        "settings": {**SETTINGS, "model": str(model)},
        **changes,
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_trial_config_is_the_base_then_the_fixed_settings_then_the_trial(tmp_path) -> None:
    spec = SweepSpec.read(sweep_file(tmp_path, Path("tiny")))
    config = trial_config(spec, {"lr": 3e-4, "ppo.kl_coef": 0.1})
    # configs/demo.yaml's ppo section keeps its epochs; the fixed settings and the trial's
    # value are merged into it.
    assert config["ppo"] == {"epochs": 2, "minibatches": 2, "kl_coef": 0.1}
    assert (config["lr"], config["steps"], config["algorithm"]) == (3e-4, 4, "ppo")
    assert spec.settings["ppo"] == {"minibatches": 2}  # left as it was, for the next trial


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trails": 3}, "unknown sweep key(s) ['trails']"),
        ({"space": {"lr": {"type": "uniform", "low": 0, "high": 1}}}, "type is float, int or"),
        ({"space": {"lr": {"type": "float", "low": 1e-4}}}, "space.lr: 'high'"),
        ({"base": "/no/such.yaml"}, "base config /no/such.yaml does not exist"),
        ({"objective": {"metric": "eval/kl", "at": "last"}}, "objective.at is 'final' or 'best'"),
        ({"pruner": "threshold"}, "pruner 'threshold' needs pruner_lower"),
    ],
)
def test_a_bad_sweep_file_is_refused_naming_the_problem(tmp_path, changes, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        SweepSpec.read(sweep_file(tmp_path, Path("tiny"), **changes))


def test_the_objective_at_the_final_or_the_best_evaluation_with_a_kl_penalty() -> None:
    evaluations = [
        {"step": 0, "eval/reward_mean": 0.9, "eval/kl": 0.0},  # before training: not scored
        {"step": 10, "eval/reward_mean": 0.5, "eval/kl": 2.0},
        {"step": 20, "eval/reward_mean": 0.7, "eval/kl": 8.0},
    ]
    assert Objective().of_run(evaluations) == (0.7, 20)
    # 0.5 - 0.05 * 2 = 0.4 beats 0.7 - 0.05 * 8 = 0.3
    assert Objective(at="best", kl_penalty=0.05).of_run(evaluations) == (pytest.approx(0.4), 10)
    assert Objective(at="best", direction="minimize").of_run(evaluations) == (0.5, 10)
    assert Objective(metric="eval/heldout_reward_mean").of_run(evaluations) is None


def sweep(path: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rlm", "sweep", str(path)], cwd=ROOT, env=script_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
    )  # fmt: skip


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_sweep_killed_mid_trial_resumes_the_trials_and_finishes(tiny_model_path, tmp_path):
    settings = {**SETTINGS, "model": str(tiny_model_path), "steps": 8}
    path = sweep_file(tmp_path, tiny_model_path, workers=2, settings=settings)
    trials = tmp_path / "sweeps" / "tiny" / "trials"
    first = sweep(path)
    # SIGKILL the sweep once trial 1 (started with trial 0) has checkpointed its first step.
    wait_for(lambda: (trials / "trial-001" / "checkpoints" / "checkpoint-1").is_dir())
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # Each trial's run was told once that the sweep died: it checkpointed and stopped
    # (or had just finished).
    status = {}
    for meta in trials.glob("trial-*/meta.json"):
        wait_for(lambda meta=meta: read_json(meta)["status"] != "running", timeout=60)
        status[meta.parent.name] = read_json(meta)["status"]
    assert status["trial-001"] == "preempted", status
    assert set(status.values()) <= {"preempted", "finished"}, status

    second = sweep(path)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert "resuming trial(s) " in out
    import optuna

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{trials.parent}/study.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for number in range(3):  # every step of every trial logged once, resumed or not
        run = trials / f"trial-{number:03d}"
        assert [row["step"] for row in metrics_of(run)] == list(range(9)), run.name
    resumed = trials / "trial-001"
    assert read_json(resumed / "meta.json")["resume_time"]
    assert study.trials[1].value == read_json(resumed / "summary.json")["eval_reward_after"]
    # The sweep started again samples new points (a sampler seeded as at the start would
    # draw trial 0's settings again).
    assert study.trials[2].params["lr"] not in {t.params["lr"] for t in study.trials[:2]}
    # Every trial is a normal run folder, grouped for W&B under the sweep's name.
    for number, trial in enumerate(study.trials):
        config = read_json(trials / f"trial-{number:03d}" / "config.json")
        assert config["run"]["lr"] == trial.params["lr"]
        assert config["ppo"]["kl_coef"] == trial.params["ppo.kl_coef"]
        tracking = config["run"]["tracking"]
        assert (tracking["wandb_group"], tracking["wandb_job_type"]) == ("tiny", "trial")
    results = (trials.parent / "results.md").read_text()
    assert results.count("| complete |") == 3
    assert f"Best: trial {study.best_trial.number}" in results
    assert "optuna-dashboard sqlite:///" in results


def test_the_pruner_stops_a_trial_at_an_evaluation(tiny_model_path, tmp_path):
    # The tiny model's reward is 0: a threshold of 0.5 prunes at the first evaluation, of
    # a run long enough to be still running then.
    settings = {**SETTINGS, "model": str(tiny_model_path), "steps": 40, "checkpoint_every": 10}
    path = sweep_file(tmp_path, tiny_model_path, trials=1, pruner="threshold", pruner_lower=0.5,
                      settings=settings)  # fmt: skip
    result = sweep(path)
    out, _ = result.communicate(timeout=600)
    assert result.returncode == 0, out[-3000:]
    assert "trial 0: pruned, pruned after step 2" in out
    run = tmp_path / "sweeps" / "tiny" / "trials" / "trial-000"
    assert max(row["step"] for row in metrics_of(run)) < 40  # stopped before its last step
    assert "| pruned |" in (run.parent.parent / "results.md").read_text()
    assert " (step 2) |" in (run.parent.parent / "results.md").read_text()  # where it stopped
    assert json.loads((run / "meta.json").read_text())["status"] == "preempted"

    # A run's last evaluation is its result, not a reason to prune it: 2 steps, evaluated
    # at step 2, complete.
    path = sweep_file(tmp_path / "short", tiny_model_path, trials=1, pruner="threshold",
                      pruner_lower=0.5, settings={**SETTINGS, "model": str(tiny_model_path),
                                                  "steps": 2})  # fmt: skip
    result = sweep(path)
    out, _ = result.communicate(timeout=600)
    assert result.returncode == 0, out[-3000:]
    assert "trial 0: complete, objective +0.0000 at step 2" in out


def test_a_setting_the_experiment_refuses_stops_the_sweep_at_its_first_trial(
    tiny_model_path, tmp_path
):
    space = {"ppo.kl_cof": {"type": "float", "low": 0.01, "high": 0.1}}  # a typo
    result = sweep(sweep_file(tmp_path, tiny_model_path, space=space))
    out, _ = result.communicate(timeout=600)
    assert result.returncode == 2, out[-3000:]
    assert "error: trial 0 was refused: exit status 2 (error: " in out
    assert (
        "kl_cof" in out
        and not (tmp_path / "sweeps" / "tiny" / "trials" / "trial-001.yaml").exists()
    )
