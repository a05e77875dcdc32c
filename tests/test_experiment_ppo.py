"""End-to-end runs of experiments/ppo.py, as a user runs it, with the tiny model.

    python -m pytest tests/test_experiment_ppo.py -q
    python -m pytest -m slow -q          # only the runs with the real default model

Training runs are subprocesses (the same command line, start-up and exit status a user
sees); bad input goes through the script's ``cli`` in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rlm.checkpoint import list_checkpoints
from rlm.diagnostics import heldout_gap
from tests.helpers import (
    ROOT,
    alerts_of,
    assert_diagnostics_logged,
    computed_metrics,
    load_experiment,
    metrics_of,
    only_run,
    read_json,
    run_experiment,
    run_tiny,
    samples_of,
    tiny_run,
    two_processes,
    wandb_offline_run,
)


def assert_wandb_conventions(run: Path, *, group: str, job_type: str) -> None:
    """Read back with wandb's reader: the group and job type, curves against generated
    tokens (define_metric), and the summary's final evaluation and diagnostics."""
    records, wandb_summary = wandb_offline_run(run)
    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    assert (run_record["run_group"], run_record["job_type"]) == (group, job_type)
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    steps = {m["glob_name"]: m["step_metric"] for m in metrics if "glob_name" in m}
    assert steps == {f"{p}*": "perf/tokens" for p in ("eval/", "train/", "reward/", "heldout/")}
    summary, last = read_json(run / "summary.json"), metrics_of(run)[-1]
    values = wandb_summary["summary"]
    assert values["eval_reward_after"] == summary["eval_reward_after"]
    assert values["diagnostics_after"] == pytest.approx(summary["diagnostics_after"])
    assert values["eval/distinct_2"] == last["eval/distinct_2"]
    assert values["alerts"] == summary["alerts"]


def final_trainable(run: Path) -> dict:
    return load_file(list_checkpoints(run / "checkpoints")[-1] / "trainable.safetensors")


def test_smoke_run_trains_and_logs_everywhere(tiny_model_path, tmp_path):
    result = run_tiny(
        "ppo", tiny_model_path, tmp_path, "--wandb-group", "smoke", "--wandb-job-type", "arm",
        wandb="offline",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert run.name.startswith("rlm_Sentiment-v0__ppo__1__")

    # Parameters changed: LoRA's B matrices start at zero, so any non-zero one was trained.
    tensors = final_trainable(run)
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0
    assert any("value_head" in k for k in tensors)
    adapter = load_file(run / "policy" / "adapter_model.safetensors")  # the final policy
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 0

    rows = metrics_of(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert "eval/reward_mean" in rows[0] and "eval/reward_mean" in rows[-1]
    for key in ["reward/mean", "reward/std", "train/kl", "train/entropy", "train/policy_loss",
                "train/value_loss", "train/clipfrac", "train/explained_variance",
                "train/completion_length", "perf/tokens_per_second", "perf/time_generate",
                "perf/time_score", "perf/time_update", "perf/time_iteration"]:  # fmt: skip
        assert key in rows[1], key
    assert rows[-1]["perf/episodes"] == 16

    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert {"prompt", "completion", "reward", "step"} <= set(samples_of(run)[0])
    meta = read_json(run / "meta.json")
    assert meta["status"] == "finished" and meta["packages"]["torch"]
    config = read_json(run / "config.json")
    assert config["algorithm"] == "ppo" and set(config) == {"algorithm", "run", "ppo"}
    assert config["run"]["model"] == str(tiny_model_path) and config["run"]["steps"] == 4
    assert config["ppo"]["minibatches"] == 2
    summary = read_json(run / "summary.json")
    assert summary["episodes"] == 16 and summary["steps"] == 4 and summary["wall_time_s"] > 0
    assert "held-out reward" in result.stdout
    assert_diagnostics_logged(run)
    assert_wandb_conventions(run, group="smoke", job_type="arm")
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "checkpoint-2", "checkpoint-4",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny run without interruption, which resumed runs must end as."""
    return tiny_run("ppo", tiny_model_path, tmp_path_factory.mktemp("straight"))


def test_resume_continues_where_the_run_stopped(tiny_model_path, tmp_path, straight_run):
    first = run_tiny("ppo", tiny_model_path, tmp_path / "split", "--stop-after", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    run = only_run(tmp_path / "split")
    assert read_json(run / "meta.json")["status"] == "stopped"
    assert [r["step"] for r in metrics_of(run)] == [0, 1]
    assert f"--resume {run}" in first.stdout

    resumed = run_experiment("ppo", ["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_json(run / "meta.json")["status"] == "finished"

    # Restored weights, optimizer, RNG and rollout seeds: the same run as without the stop.
    reference = straight_run
    assert computed_metrics(run) == computed_metrics(reference)
    expected, got = final_trainable(reference), final_trainable(run)
    assert expected.keys() == got.keys()
    for key in expected:
        assert (expected[key] - got[key]).abs().max() < 1e-5, key

    again = run_experiment("ppo", ["--resume", str(run)])
    assert again.returncode == 2 and "already finished" in again.stderr


def test_a_run_resumed_twice_ends_as_the_uninterrupted_one(
    tiny_model_path, tmp_path, capsys, straight_run
):
    first = run_tiny("ppo", tiny_model_path, tmp_path / "split", "--stop-after", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    run = only_run(tmp_path / "split")
    ppo = load_experiment("ppo")
    # The checkpoint is after step 1: stopping "after step 1" again is refused.
    assert ppo.cli(["--resume", str(run), "--stop-after", "1"]) == 2
    assert "is not after it" in capsys.readouterr().err
    assert ppo.cli(["--resume", str(run), "--stop-after", "3"]) == 0
    assert read_json(run / "meta.json")["status"] == "stopped"
    assert ppo.cli(["--resume", str(run)]) == 0
    assert read_json(run / "meta.json")["status"] == "finished"
    assert computed_metrics(run) == computed_metrics(straight_run)


REWARD_FLAGS = [
    "--reward", "0.5*vader + 0.5*repetition:n=2", "--heldout-reward", "textblob",
    "--normalize-reward", "--reward-clip", "3", "--alarm-distinct-drop", "1.5",
]  # fmt: skip


def test_composite_heldout_and_normalised_rewards_log_and_resume_exactly(tiny_model_path, tmp_path):
    straight = run_tiny("ppo", tiny_model_path, tmp_path / "straight", *REWARD_FLAGS)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = only_run(tmp_path / "straight")
    rows = metrics_of(run)
    # --alarm-distinct-drop 1.5 trips unless distinct-2 rises by half: one line at the first
    # evaluation after training, kept, not repeated while it stays tripped; the run goes on.
    trips = [line for line in straight.stderr.splitlines() if line.startswith("alarm at")]
    assert len(trips) == 1
    assert trips[0].startswith("alarm at step 2: distinct_drop: eval/distinct_2 ")
    before, after = rows[0]["eval/distinct_2"], rows[2]["eval/distinct_2"]
    assert trips[0].endswith(f"({before:.4g} -> {after:.4g}; alarm below 1.5x)")
    alerts = alerts_of(run)
    assert [a["text"] for a in alerts] == trips and alerts[0]["step"] == 2
    assert alerts[0]["value"] == rows[2]["eval/distinct_2"]
    assert_diagnostics_logged(run)
    # (NaN here: the tiny model's text is all neutral to TextBlob, a std of 0 before.)
    for row in (rows[0], rows[-1]):
        assert row["eval/heldout_gap"] == pytest.approx(heldout_gap(row, rows[0]), nan_ok=True)
    for row in rows[1:]:
        # Each component raw, the normalised total within the clip, the held-out reward.
        for key in ("reward/vader", "reward/repetition", "reward/composite_raw"):
            assert key in row, key
        assert -3.0 <= row["reward/mean"] <= 3.0
        assert -1.0 <= row["heldout/reward_mean"] <= 1.0
        assert row["reward/composite_raw"] == pytest.approx(
            0.5 * row["reward/vader"] + 0.5 * row["reward/repetition"]
        )
    for row in (rows[0], rows[-1]):
        # Evaluation scores the raw composite: its mean is the weighted sum of its parts.
        assert row["eval/reward_mean"] == pytest.approx(
            0.5 * row["eval/reward/vader"] + 0.5 * row["eval/reward/repetition"]
        )
        assert "eval/heldout_reward_mean" in row
    summary = read_json(run / "summary.json")
    assert summary["eval_heldout_reward_after"] == rows[-1]["eval/heldout_reward_mean"]
    assert "heldout_textblob" in samples_of(run)[0]

    # The normaliser's running statistics are checkpointed: a resumed run is the same run.
    split = run_tiny("ppo", tiny_model_path, tmp_path / "split", *REWARD_FLAGS, "--stop-after", "3")
    assert split.returncode == 0, split.stderr[-3000:]
    resumed = run_experiment("ppo", ["--resume", str(only_run(tmp_path / "split"))])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert computed_metrics(only_run(tmp_path / "split")) == computed_metrics(run)

    def untitled(alerts: list[dict]) -> list[dict]:  # (the title names the run's folder)
        return [{k: v for k, v in alert.items() if k != "title"} for alert in alerts]

    assert untitled(alerts_of(only_run(tmp_path / "split"))) == untitled(alerts)  # once, kept


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--env-id", "rlm/Nope-v0"], "unknown environment 'rlm/Nope-v0'"),
        (["--model", "./no/such/model"], "does not exist"),
        (["--lr", "-0.001"], "--lr must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "6", "--minibatches", "4"], "divisible by --minibatches x --grad-accum"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--env-id", "tests.fixture_envs:rlm_test/NaNReward-v0"], "rlm_test/NaNReward-v0"),
        (["--env-id", "tests.fixture_envs:rlm_test/ShortReward-v0"], "short_reward"),
        (["--reward", "vaderr"], "unknown reward 'vaderr'"),
        (["--reward", "runs/no-such-reward-model"], "no folder 'runs/no-such-reward-model'"),
        (["--heldout-reward", "length"], "reward 'length'"),
        (["--reward", "repetition:m=2"], "has no option 'm'"),
        (["--reward-clip", "0"], "--reward-clip must be"),
        (["--value-model", "./no/such/critic"], "does not exist"),
        (["--resume", "/no/such/run"], "no config.json there"),
        (["--config", "/no/such.yaml"], "does not exist"),
    ],
)
def test_bad_input_fails_in_one_line_without_a_run_folder(
    tiny_model_path, tmp_path, capsys, flags, message
):
    output = tmp_path / "runs"
    base = ["--model", str(tiny_model_path), "--output-dir", str(output), "--wandb", "disabled"]
    assert load_experiment("ppo").cli([*base, "--max-new-tokens", "4", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err[-3:]
    assert not any("Traceback" in line for line in err)
    assert not output.exists() or not any(output.iterdir())


def test_nan_reward_message_names_env_and_reward(tiny_model_path, tmp_path, capsys):
    env_id = "tests.fixture_envs:rlm_test/NaNReward-v0"
    base = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    assert load_experiment("ppo").cli([*base, "--env-id", env_id, "--max-new-tokens", "4"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nan_reward" in last and "rlm_test/NaNReward-v0" in last and "nan" in last


@pytest.mark.slow
def test_real_default_model_runs_a_ppo_step(tmp_path):
    flags = "--steps 1 --batch-size 4 --minibatches 1 --epochs 1 --max-new-tokens 8"
    flags += " --eval-prompts 4 --eval-batch-size 4 --threads 2 --wandb disabled"
    result = run_experiment("ppo", ["--output-dir", str(tmp_path), *flags.split()], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    assert rows[-1]["perf/episodes"] == 4
    assert rows[-1]["train/completion_length"] > 0
    tensors = final_trainable(run)
    assert max(float(v.abs().max()) for k, v in tensors.items() if "lora_B" in k) > 0
    assert read_json(run / "config.json")["run"]["model"] == "default"


def test_token_budget_stops_after_the_step_that_reaches_it(tiny_model_path, tmp_path):
    # A step generates at most 4 x 6 = 24 tokens: a budget of 25 takes two steps or more.
    result = run_tiny("ppo", tiny_model_path, tmp_path, "--token-budget", "25")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    tokens = [r["perf/tokens"] for r in rows]
    assert tokens[0] == 0 and tokens[-1] >= 25 and all(t < 25 for t in tokens[:-1])
    assert 2 <= len(rows) - 1 < 4  # stopped at the first step that spent it, before --steps
    assert "eval/reward_mean" in rows[-1]  # the final evaluation still ran
    summary = read_json(run / "summary.json")
    assert summary["steps"] == rows[-1]["step"] and summary["algorithm"] == "ppo"
    assert summary["generated_tokens"] == tokens[-1]
    assert read_json(run / "meta.json")["status"] == "finished"
    # A run that spent its budget is finished: resuming it is refused, not continued.
    again = run_experiment("ppo", ["--resume", str(run)])
    assert again.returncode == 2 and "already finished" in again.stderr


def test_multi_turn_environment_trains(tiny_model_path, tmp_path):
    env = ["--env-id", "tests.fixture_envs:rlm_test/Chatty-v0", "--prompt-format", "chat"]
    result = run_tiny("ppo", tiny_model_path, tmp_path, *env, "--steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert metrics_of(run)[-1]["train/turns"] == 3
    assert max(float(v.abs().max()) for k, v in final_trainable(run).items() if "lora_B" in k) > 0
    assert "[env] " in samples_of(run)[0]["completion"]


@pytest.mark.parametrize(
    ("flags", "changed"),
    [
        (["--value-model", "TINY"], "value_model."),  # a separate critic trunk
        (["--no-lora"], "policy.model.layers.0.mlp"),  # full fine-tuning, reference copy
    ],
)
def test_separate_critic_and_full_fine_tuning_train_their_weights(
    tiny_model_path, tmp_path, flags, changed
):
    flags = [str(tiny_model_path) if f == "TINY" else f for f in flags]
    # A reward every completion of the random model earns something of (VADER scores its
    # gibberish 0 more often than not, and an all-zero batch has nothing to learn from).
    result = run_tiny("ppo", tiny_model_path, tmp_path, "--steps", "2",
                      "--reward", "length:target=3", *flags)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tensors = final_trainable(only_run(tmp_path))
    trained = {k: v for k, v in tensors.items() if changed in k}
    assert trained, list(tensors)[:5]
    initial = load_file(tiny_model_path / "model.safetensors")

    # The policy's keys are "policy.model.…", the critic trunk's "value_model.…" (an
    # AutoModel has no "model." level); the tiny model's file has "model.…".
    def initial_key(key: str) -> str:
        if key.startswith("policy."):
            return key.removeprefix("policy.")
        return "model." + key.removeprefix("value_model.")

    moved = [float((v - initial[initial_key(k)]).abs().max()) for k, v in trained.items()]
    assert max(moved) > 0


def test_adaptive_kl_moves_the_coefficient_and_k3_is_the_penalty(tiny_model_path, tmp_path):
    """With k1 the per-episode penalty is -kl_coef x the sequence KL (train/kl); with k3
    it is -kl_coef x the sum of k3 estimates, never positive and not that product."""
    fixed = run_tiny("ppo", tiny_model_path, tmp_path / "k1", "--lr", "1e-2")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    k1 = metrics_of(only_run(tmp_path / "k1"))[1:]
    assert any(abs(r["train/kl"]) > 1e-4 for r in k1)  # the policy left the reference
    for row in k1:
        assert row["train/kl_coef"] == 0.05
        assert row["train/non_score_reward"] == pytest.approx(
            -0.05 * row["train/kl"], rel=1e-5, abs=1e-7
        )

    flags = ["--lr", "1e-2", "--kl-estimator", "k3", "--adaptive-kl", "--target-kl", "0.5",
             "--kl-horizon", "10"]  # fmt: skip
    adaptive = run_tiny("ppo", tiny_model_path, tmp_path / "k3", *flags)
    assert adaptive.returncode == 0, adaptive.stderr[-3000:]
    k3 = metrics_of(only_run(tmp_path / "k3"))[1:]
    # The controller's rule (Ziegler et al. 2019) on the logged KL of each batch of 4:
    # value *= 1 + clip(kl / target - 1, -0.2, 0.2) * 4 / horizon.
    used = 0.05  # the coefficient of a step's penalty is the one before its update
    for row in k3:
        error = min(max(row["train/kl"] / 0.5 - 1, -0.2), 0.2)
        assert row["train/kl_coef"] == pytest.approx(used * (1 + error * 4 / 10), rel=1e-9)
        assert row["train/kl_coef"] != used
        assert row["train/non_score_reward"] <= 1e-9  # k3 >= 0
        if abs(row["train/kl"]) > 1e-4:
            assert row["train/non_score_reward"] != pytest.approx(-used * row["train/kl"], rel=1e-3)
        used = row["train/kl_coef"]


def test_linear_schedule_lowers_the_learning_rate_every_step(tiny_model_path, tmp_path):
    result = run_tiny("ppo", tiny_model_path, tmp_path, "--lr-schedule", "linear")
    assert result.returncode == 0, result.stderr[-3000:]
    lrs = [r["train/lr"] for r in metrics_of(only_run(tmp_path))[1:]]
    # 4 steps x 2 epochs x 2 minibatches = 16 optimizer steps from 1e-3 down to 0.
    assert lrs == pytest.approx([1e-3 * (1 - 4 * k / 16) for k in range(1, 5)])


def test_list_envs_cli():
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "list-envs"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    assert "rlm/Sentiment-v0" in result.stdout and "rlm/GuessNumber-v0" in result.stdout


def test_processes_stay_in_sync(tiny_model_path, tmp_path):
    """Different data on each rank, the same weights after the update: gradients are averaged."""
    script = ROOT / "tests" / "scripts" / "ddp_sync_check.py"
    command = [*two_processes(), str(script)]
    result = subprocess.run(
        [*command, str(tiny_model_path), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank_{i}.json").read_text()) for i in (0, 1)]
    assert reports[0]["prompt"] != reports[1]["prompt"]  # different episodes on each rank
    assert reports[0]["checksum"] == reports[1]["checksum"]  # and still the same weights
