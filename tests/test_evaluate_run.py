"""scripts/evaluate_run.py and rlm.saved_runs on real run folders of the tiny model.

    python -m pytest tests/test_evaluate_run.py -q

A PPO run and a GRPO run are trained as a user trains them (subprocesses); their final
policies are then evaluated again in-process, which must repeat the runs' own final
evaluation, and against another reference, which must change the KL only.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.run_python import run_python
from tests.test_experiment_ppo import run_tiny
from tests.test_experiment_trl import TINY_FLAGS as TRL_FLAGS
from tests.test_experiment_trl import only_run
from tests.test_experiment_trl import run_script as run_trl_script

ROOT = Path(__file__).resolve().parents[1]


def evaluate_run(run: Path, **flags: object) -> dict:
    """scripts/evaluate_run.py's main on ``run``, in-process."""
    spec = importlib.util.spec_from_file_location(
        "evaluate_run", ROOT / "scripts" / "evaluate_run.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_run"] = script  # dataclasses resolve their annotations through it
    spec.loader.exec_module(script)
    return script.main(script.Config(run=run, **flags))


@pytest.fixture(scope="module")
def ppo_run(tiny_model_path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ppo")
    result = run_tiny(tiny_model_path, output)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(output)


def test_a_ppo_run_evaluated_again_repeats_its_final_evaluation(ppo_run):
    result = evaluate_run(ppo_run)
    summary = json.loads((ppo_run / "summary.json").read_text())
    assert result["eval/reward_mean"] == pytest.approx(summary["eval_reward_after"], abs=1e-6)
    assert result["eval/kl"] == pytest.approx(summary["eval_kl_after"], abs=1e-4)
    assert result["policy"].endswith("iter_000004/policy")
    assert json.loads((ppo_run / "eval_start.json").read_text()) == result


def test_another_reference_changes_the_kl_and_not_the_samples(ppo_run, tmp_path):
    from rlm.models import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)  # other random weights, same tokenizer
    output = tmp_path / "other.json"
    result = evaluate_run(ppo_run, reference=str(other), output=output)
    assert json.loads(output.read_text()) == result
    summary = json.loads((ppo_run / "summary.json").read_text())
    assert result["eval/reward_mean"] == pytest.approx(summary["eval_reward_after"], abs=1e-6)
    assert abs(result["eval/kl"] - summary["eval_kl_after"]) > 0.1


def test_a_grpo_run_evaluated_again_repeats_its_final_evaluation(tiny_model_path, tmp_path):
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    result = run_trl_script("grpo.py", [*flags, *TRL_FLAGS])
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    again = evaluate_run(run)
    summary = json.loads((run / "summary.json").read_text())
    assert again["eval/reward_mean"] == pytest.approx(summary["eval_reward_after"], abs=1e-6)
    assert again["eval/kl"] == pytest.approx(summary["eval_kl_after"], abs=1e-4)


def test_a_folder_that_is_not_a_finished_run_fails_in_one_line(tmp_path):
    result = run_python(ROOT / "scripts" / "evaluate_run.py", [str(tmp_path)], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a finished run folder" in result.stderr
