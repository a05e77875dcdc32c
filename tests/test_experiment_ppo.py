"""End-to-end runs of experiments/ppo_sentiment.py, as a user runs it, with the tiny model.

    python -m pytest tests/test_experiment_ppo.py -q
    python -m pytest -m slow -q          # only the run with the real default model

Every run is a subprocess: the same command line, the same process start-up, the same
exit status a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.run_python import run_python

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "ppo_sentiment.py"
TINY_FLAGS = [
    "--iterations", "4", "--batch-size", "4", "--minibatches", "2", "--max-new-tokens", "6",
    "--eval-prompts", "4", "--eval-batch-size", "4", "--eval-every", "2",
    "--checkpoint-every", "2", "--lora-r", "4", "--threads", "1",
]  # fmt: skip


def run_script(args: list[str], *, launcher: list[str] | None = None, timeout: int = 300):
    return run_python(SCRIPT, args, launcher=launcher, timeout=timeout)


def run_tiny(model: Path, output_dir: Path, *flags: str, wandb: str = "disabled", **kwargs):
    """The experiment on the tiny model with a tiny budget, plus ``flags``."""
    args = ["--model", str(model), "--output-dir", str(output_dir), "--wandb", wandb]
    return run_script([*args, *TINY_FLAGS, *flags], **kwargs)


def only_run(output_dir: Path) -> Path:
    runs = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def metrics_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_trainable(run: Path) -> dict:
    checkpoints = sorted((run / "checkpoints").glob("iter_*"))
    return load_file(checkpoints[-1] / "trainable.safetensors")


def test_smoke_run_trains_and_logs_everywhere(tiny_model_path, tmp_path):
    result = run_tiny(tiny_model_path, tmp_path, wandb="offline")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)

    # Parameters changed: LoRA's B matrices start at zero, so any non-zero one was trained.
    tensors = final_trainable(run)
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0
    assert any("value_head" in k for k in tensors)

    rows = metrics_of(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert "eval/reward_mean" in rows[0] and "eval/reward_mean" in rows[-1]
    for key in ["reward/mean", "reward/std", "train/kl", "train/entropy", "train/policy_loss",
                "train/value_loss", "train/clipfrac", "train/explained_variance",
                "train/completion_length", "perf/tokens_per_second", "perf/time_generate",
                "perf/time_score", "perf/time_update"]:  # fmt: skip
        assert key in rows[1], key
    assert rows[-1]["perf/episodes"] == 16

    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "reward", "step"} <= set(samples[0])
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["packages"]["torch"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == str(tiny_model_path) and config["iterations"] == 4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["episodes"] == 16 and summary["wall_time_s"] > 0
    assert "held-out reward" in result.stdout


def test_resume_continues_where_the_run_stopped(tiny_model_path, tmp_path):
    straight = run_tiny(tiny_model_path, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    first = run_tiny(tiny_model_path, tmp_path / "split", "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    run = only_run(tmp_path / "split")
    assert json.loads((run / "meta.json").read_text())["status"] == "stopped"
    assert [r["step"] for r in metrics_of(run)] == [0, 1, 2]

    resumed = run_script(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in metrics_of(run)] == [0, 1, 2, 3, 4]
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"

    # Restored weights, optimizer, RNG and rollout seeds: the same run as without the stop.
    expected = final_trainable(only_run(tmp_path / "straight"))
    got = final_trainable(run)
    assert expected.keys() == got.keys()
    for key in expected:
        assert (expected[key] - got[key]).abs().max() < 1e-5, key
    straight_rewards = [r["reward/mean"] for r in metrics_of(only_run(tmp_path / "straight"))[1:]]
    assert [r["reward/mean"] for r in metrics_of(run)[1:]] == pytest.approx(straight_rewards)


REWARD_FLAGS = [
    "--reward", "0.5*vader + 0.5*repetition:n=2", "--heldout-reward", "textblob",
    "--normalize-reward", "--reward-clip", "3",
]  # fmt: skip


def test_composite_heldout_and_normalised_rewards_log_and_resume_exactly(tiny_model_path, tmp_path):
    straight = run_tiny(tiny_model_path, tmp_path / "straight", *REWARD_FLAGS)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run = only_run(tmp_path / "straight")
    rows = metrics_of(run)
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
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_heldout_reward_after"] == rows[-1]["eval/heldout_reward_mean"]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert "heldout_textblob" in samples[0]

    # The normaliser's running statistics are checkpointed: a resumed run is the same run.
    split = run_tiny(tiny_model_path, tmp_path / "split", *REWARD_FLAGS, "--stop-after", "3")
    assert split.returncode == 0, split.stderr[-3000:]
    resumed = run_script(["--resume", str(only_run(tmp_path / "split"))])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = [r["reward/mean"] for r in metrics_of(only_run(tmp_path / "split"))[1:]]
    assert got == pytest.approx([r["reward/mean"] for r in rows[1:]])


def test_two_processes(tiny_model_path, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = run_tiny(
        tiny_model_path, tmp_path, "--iterations", "2",
        launcher=[torchrun, "--standalone", "--nproc_per_node", "2"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    # Both processes rolled out their own batch: twice the episodes of one process.
    assert rows[-1]["perf/episodes"] == 2 * 2 * 4
    last = sorted((run / "checkpoints").glob("iter_*"))[-1]
    assert sorted(p.name for p in last.glob("rng_state_*.pt")) == [
        "rng_state_0.pt",
        "rng_state_1.pt",
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--env-id", "rlm/Nope-v0"], "unknown environment 'rlm/Nope-v0'"),
        (["--model", "./no/such/model"], "does not exist"),
        (["--lr", "-0.001"], "--lr must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--env-id", "tests.fixture_envs:rlm_test/NaNReward-v0"], "rlm_test/NaNReward-v0"),
        (["--env-id", "tests.fixture_envs:rlm_test/ShortReward-v0"], "short_reward"),
        (["--reward", "vaderr"], "unknown reward 'vaderr'"),
        (["--reward", "runs/no-such-reward-model"], "no folder 'runs/no-such-reward-model'"),
        (["--heldout-reward", "length"], "reward 'length'"),
        (["--reward", "repetition:m=2"], "has no option 'm'"),
        (["--reward-clip", "0"], "--reward-clip must be"),
    ],
)
def test_bad_input_fails_in_one_line_without_a_run_folder(
    tiny_model_path, tmp_path, flags, message
):
    output = tmp_path / "runs"
    result = run_tiny(tiny_model_path, output, *flags, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not output.exists() or not any(output.iterdir())


def test_nan_reward_message_names_env_and_reward(tiny_model_path, tmp_path):
    env_id = "tests.fixture_envs:rlm_test/NaNReward-v0"
    result = run_tiny(tiny_model_path, tmp_path / "runs", "--env-id", env_id, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert "nan_reward" in last and "rlm_test/NaNReward-v0" in last and "nan" in last


@pytest.mark.slow
def test_real_default_model_runs_a_ppo_step(tmp_path):
    flags = "--iterations 1 --batch-size 4 --minibatches 1 --epochs 1 --max-new-tokens 8"
    flags += " --eval-prompts 4 --eval-batch-size 4 --threads 2 --wandb disabled"
    result = run_script(["--output-dir", str(tmp_path), *flags.split()], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    assert rows[-1]["perf/episodes"] == 4
    assert rows[-1]["train/completion_length"] > 0
    tensors = final_trainable(run)
    assert max(float(v.abs().max()) for k, v in tensors.items() if "lora_B" in k) > 0
    assert json.loads((run / "config.json").read_text())["model"] == "default"


def test_token_budget_stops_after_the_iteration_that_reaches_it(tiny_model_path, tmp_path):
    result = run_tiny(tiny_model_path, tmp_path, "--token-budget", "10")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    tokens = [r["perf/tokens"] for r in rows]
    assert tokens[0] == 0 and tokens[-1] >= 10 and all(t < 10 for t in tokens[:-1])
    assert len(rows) - 1 < 4  # stopped before --iterations
    assert "eval/reward_mean" in rows[-1]  # the final evaluation still ran
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == rows[-1]["step"] and summary["algorithm"] == "ppo"
    assert summary["generated_tokens"] == tokens[-1]
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"


def test_multi_turn_environment_runs(tiny_model_path, tmp_path):
    flags = "--env-id rlm/GuessNumber-v0 --prompt-format chat --iterations 2"
    result = run_tiny(tiny_model_path, tmp_path, *flags.split())
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    # The random tiny model never finds the number: every episode runs all five turns.
    assert metrics_of(run)[-1]["train/turns"] == 5
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert "[env] " in samples[0]["completion"]


def test_multi_turn_environment_trains(tiny_model_path, tmp_path):
    flags = "--env-id tests.fixture_envs:rlm_test/Chatty-v0 --prompt-format chat --iterations 2"
    result = run_tiny(tiny_model_path, tmp_path, *flags.split())
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert metrics_of(run)[-1]["train/turns"] == 3
    assert max(float(v.abs().max()) for k, v in final_trainable(run).items() if "lora_B" in k) > 0


@pytest.mark.parametrize(
    ("flags", "changed"),
    [
        (["--value-model", "TINY"], "value_model."),  # a separate critic trunk
        (["--no-lora"], "policy.model.layers.0.mlp"),  # full fine-tuning, reference copy
        (["--adaptive-kl", "--kl-estimator", "k3"], "lora_B"),
        (["--grad-accum", "2", "--lr-schedule", "linear"], "lora_B"),
    ],
)
def test_options_train(tiny_model_path, tmp_path, flags, changed):
    flags = [str(tiny_model_path) if f == "TINY" else f for f in flags]
    result = run_tiny(tiny_model_path, tmp_path, "--iterations", "2", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    tensors = final_trainable(only_run(tmp_path))
    trained = {k: v for k, v in tensors.items() if changed in k}
    assert trained, list(tensors)[:5]
    if "lora_B" in changed:
        assert max(float(v.abs().max()) for v in trained.values()) > 0
    else:  # trunk weights: compare with the tiny model they started from
        initial = load_file(tiny_model_path / "model.safetensors")

        # The policy's keys are "policy.model.…", the critic trunk's "value_model.…" (an
        # AutoModel has no "model." level); the tiny model's file has "model.…".
        def initial_key(key: str) -> str:
            if key.startswith("policy."):
                return key.removeprefix("policy.")
            return "model." + key.removeprefix("value_model.")

        moved = [float((v - initial[initial_key(k)]).abs().max()) for k, v in trained.items()]
        assert max(moved) > 0
    rows = metrics_of(only_run(tmp_path))
    if "--adaptive-kl" in flags:
        assert rows[-1]["train/kl_coef"] != 0.05  # the controller moved the coefficient


def test_list_envs_cli():
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "list-envs"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    assert "rlm/Sentiment-v0" in result.stdout and "rlm/GuessNumber-v0" in result.stdout


def test_processes_stay_in_sync(tiny_model_path, tmp_path):
    """Different data on each rank, the same weights after the update: gradients are averaged."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    script = ROOT / "tests" / "scripts" / "ddp_sync_check.py"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(
        [*command, str(tiny_model_path), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank_{i}.json").read_text()) for i in (0, 1)]
    assert reports[0]["prompt"] != reports[1]["prompt"]  # different episodes on each rank
    assert reports[0]["checksum"] == reports[1]["checksum"]  # and still the same weights
