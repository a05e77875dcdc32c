"""scripts/evaluate_run.py and rlm.saved_runs on real run folders of the tiny model.

    python -m pytest tests/test_evaluate_run.py -q

A PPO run and a GRPO run are trained as a user trains them (subprocesses); their final
policies are then evaluated again in-process, which must repeat the runs' own final
evaluation, and against another reference, which must change the KL only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm.saved_runs import SavedRun
from tests.helpers import ROOT, load_script, only_run, read_json, run_python, run_tiny, tiny_run


def evaluate_run(run: Path, **flags: object) -> dict:
    """scripts/evaluate_run.py's main on ``run``, in-process."""
    script = load_script("evaluate_run")
    return script.main(script.Config(run=run, **flags))


@pytest.fixture(scope="module")
def ppo_run(tiny_model_path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ppo")
    # A held-out reward too: the re-evaluation scores it as the run did.
    return tiny_run("ppo", tiny_model_path, output, "--heldout-reward", "length:target=3")


def test_a_ppo_run_evaluated_again_repeats_its_final_evaluation(ppo_run):
    result = evaluate_run(ppo_run)
    summary = read_json(ppo_run / "summary.json")
    assert result["eval/reward_mean"] == pytest.approx(summary["eval_reward_after"], abs=1e-6)
    assert result["eval/kl"] == pytest.approx(summary["eval_kl_after"], abs=1e-4)
    assert result["eval/heldout_reward_mean"] == pytest.approx(
        summary["eval_heldout_reward_after"], abs=1e-6
    )
    assert result["policy"].endswith("policy")
    assert json.loads((ppo_run / "eval_start.json").read_text()) == result


def test_a_saved_run_reads_its_settings_and_evaluations(ppo_run, tiny_model_path):
    saved = SavedRun.open(ppo_run)
    assert (saved.algorithm, saved.env_id, saved.seed) == ("ppo", "rlm/Sentiment-v0", 1)
    assert saved.model == str(tiny_model_path) and saved.eval_seed == 10_001
    assert saved.run_settings.steps == 4 and saved.run_settings.tracking.wandb == "disabled"
    assert [row["step"] for row in saved.evaluations()] == [0, 2, 4]


def test_another_reference_changes_the_kl_and_not_the_samples(ppo_run, tmp_path):
    """The samples are the policy's: with another reference their rewards, lengths and
    held-out scores stay what the run recorded; only the KL moves."""
    from rlm.models import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)  # other random weights, same tokenizer
    output = tmp_path / "other.json"
    result = evaluate_run(ppo_run, reference=str(other), output=output)
    assert json.loads(output.read_text()) == result
    summary = read_json(ppo_run / "summary.json")
    last = [row for row in SavedRun.open(ppo_run).evaluations()][-1]
    for key in ("eval/reward_mean", "eval/reward_std", "eval/completion_length",
                "eval/heldout_reward_mean"):  # fmt: skip
        assert result[key] == pytest.approx(last[key], abs=1e-6), key
    assert result["eval/reward_mean"] == pytest.approx(summary["eval_reward_after"], abs=1e-6)
    assert abs(result["eval/kl"] - summary["eval_kl_after"]) > 0.1


def test_a_grpo_run_evaluated_again_repeats_its_final_evaluation(tiny_model_path, tmp_path):
    result = run_tiny("grpo", tiny_model_path, tmp_path, "--steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    again = evaluate_run(run)
    summary = read_json(run / "summary.json")
    assert again["eval/reward_mean"] == pytest.approx(summary["eval_reward_after"], abs=1e-6)
    assert again["eval/kl"] == pytest.approx(summary["eval_kl_after"], abs=1e-4)


def test_a_folder_that_is_not_a_finished_run_fails_in_one_line(tmp_path):
    result = run_python(ROOT / "scripts" / "evaluate_run.py", [str(tmp_path)], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a finished run folder" in result.stderr
