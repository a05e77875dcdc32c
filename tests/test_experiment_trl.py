"""End-to-end runs of experiments/grpo.py, rloo.py and sft_warm_start.py with the tiny model.

    python -m pytest tests/test_experiment_trl.py -q
    python -m pytest tests/test_experiment_trl.py -m slow -q   # GRPO and RLOO on the default model

Runs are subprocesses, as a user runs them; bad input is checked in-process through each
script's ``cli`` (the same code path, without a second start-up).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from safetensors.torch import load_file

from tests.run_python import run_python

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = [
    "--steps", "2", "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "6",
    "--eval-prompts", "4", "--eval-batch-size", "4", "--eval-every", "1", "--lora-r", "4",
    "--threads", "1",
]  # fmt: skip


def run_script(name: str, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return run_python(ROOT / "experiments" / name, args, timeout=timeout)


def only_run(output_dir: Path) -> Path:
    runs = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def metrics_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_trained_and_logged(run: Path, result: subprocess.CompletedProcess, steps: int) -> None:
    """LoRA's B matrices start at zero: a non-zero one was trained. Metrics as PPO's."""
    adapter = load_file(run / "policy" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0
    rows = metrics_of(run)
    assert [r["step"] for r in rows] == list(range(steps + 1))
    for row in rows:  # evaluated before training and after every step (--eval-every 1)
        assert {"eval/reward_mean", "eval/kl", "perf/tokens"} <= set(row)
    for key in ["reward/mean", "reward/std", "train/loss", "train/kl_per_token",
                "train/completion_length", "perf/episodes", "perf/time_iteration"]:  # fmt: skip
        assert key in rows[1], key
    assert 0 < rows[1]["perf/tokens"] < rows[2]["perf/tokens"]
    summary = json.loads((run / "summary.json").read_text())
    for key in ["eval_reward_before", "eval_reward_after", "eval_kl_after",
                "generated_tokens", "wall_time_s", "episodes"]:  # fmt: skip
        assert key in summary, key
    assert summary["generated_tokens"] == rows[-1]["perf/tokens"]
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "reward", "step"} <= set(samples[0])
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "held-out reward" in result.stdout


def test_grpo_single_turn_trains_and_logs_everywhere(tiny_model_path, tmp_path):
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "offline"]
    result = run_script("grpo.py", [*flags, *TINY_FLAGS])
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert_trained_and_logged(run, result, steps=2)
    assert metrics_of(run)[-1]["perf/episodes"] == 8  # 2 steps x 4 completions
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["model"] == str(tiny_model_path) and config["loss_type"] == "dapo"


def test_grpo_multi_turn_masks_the_environment(tiny_model_path, tmp_path):
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    env = ["--env-id", "tests.fixture_envs:rlm_test/Chatty-v0", "--prompt-format", "chat"]
    result = run_script("grpo.py", [*flags, *env, *TINY_FLAGS])
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert_trained_and_logged(run, result, steps=2)
    rows = metrics_of(run)
    # TRL counts only the policy's tokens (env_mask): 3 turns of at most 6 tokens.
    assert 3 <= rows[1]["train/completion_length"] <= 18
    assert rows[-1]["perf/tokens"] <= 8 * 18
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert "[env] Tell me more." in samples[0]["completion"]


def test_grpo_multi_turn_plays_with_the_reward_given(tiny_model_path, tmp_path):
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    env = ["--env-id", "tests.fixture_envs:rlm_test/Chatty-v0", "--reward", "env + length:target=2"]
    result = run_script("grpo.py", [*flags, *env, *TINY_FLAGS])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics_of(only_run(tmp_path))
    assert any("reward/length" in r for r in rows[1:])  # the rollout scored with --reward
    assert "eval/reward/length" in rows[-1]


def test_rloo_single_turn_trains_and_stops_at_the_token_budget(tiny_model_path, tmp_path):
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    # A step generates at most 4 x 6 = 24 tokens: a budget of 25 ends the run after step 2.
    budget = ["--steps", "5", "--token-budget", "25"]
    result = run_script("rloo.py", [*flags, *TINY_FLAGS, *budget])
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert_trained_and_logged(run, result, steps=2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algorithm"] == "rloo" and summary["iterations"] == 2


def test_rloo_takes_a_composite_reward_and_logs_its_parts(tiny_model_path, tmp_path):
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    reward = ["--reward", "0.5*vader + 0.5*length:target=3"]
    result = run_script("rloo.py", [*flags, *TINY_FLAGS, *reward])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics_of(only_run(tmp_path))
    trained = [r for r in rows if "reward/vader" in r]
    assert trained and all("reward/length" in r for r in trained)
    # Evaluation scores the same composite: its mean is the weighted sum of its parts.
    last = rows[-1]
    assert last["eval/reward_mean"] == pytest.approx(
        0.5 * last["eval/reward/vader"] + 0.5 * last["eval/reward/length"]
    )


def test_sft_warm_start_saves_a_model_the_rl_scripts_load(tiny_model_path, tmp_path):
    from rlm.models import load_causal_lm, resolve_model_path

    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb", "disabled"]
    small = ["--max-examples", "16", "--batch-size", "8", "--max-length", "24", "--lr", "1e-2",
             "--eval-prompts", "4", "--eval-batch-size", "4", "--max-new-tokens", "6",
             "--lora-r", "4", "--threads", "1"]  # fmt: skip
    result = run_script("sft_warm_start.py", [*flags, *small])
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    assert rows[0]["step"] == 0 and "eval/reward_mean" in rows[0]
    assert "train/loss" in rows[1] and "eval/kl" in rows[-1]  # 16 examples / 8 = 2 steps
    model_dir = run / "model"
    assert resolve_model_path(str(model_dir)) == str(model_dir)
    model, _ = load_causal_lm(str(model_dir))
    start = load_file(tiny_model_path / "model.safetensors")
    weights = model.state_dict()  # lm_head is tied to the embeddings: not in the file
    moved = max(float((weights[n] - start[n]).abs().max()) for n in start)
    assert moved > 0  # the merged adapter changed the weights
    assert "start RL from it" in result.stdout


def load_experiment(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("grpo", ["--batch-size", "6", "--num-generations", "4"], "multiple of --num-generations"),
        ("grpo", ["--num-generations", "1"], "--num-generations must be at least 2"),
        ("grpo", ["--env-id", "rlm/Nope-v0"], "unknown environment 'rlm/Nope-v0'"),
        ("rloo", ["--lr", "0"], "--lr must be a positive number"),
        ("rloo", ["--env-id", "rlm/GuessNumber-v0"], "RLOOTrainer takes no rollout_func"),
        ("rloo", ["--model", "./no/such/model"], "does not exist"),
        ("sft_warm_start", ["--env-id", "rlm/GuessNumber-v0"], "--demonstrations FILE.jsonl"),
        ("sft_warm_start", ["--demonstrations", "/no/such.jsonl"], "does not exist"),
    ],
)
def test_bad_input_fails_in_one_line_without_a_run_folder(
    tiny_model_path, tmp_path, capsys, script, flags, message
):
    output = tmp_path / "runs"
    base = ["--model", str(tiny_model_path), "--output-dir", str(output), "--wandb", "disabled"]
    assert load_experiment(script).cli([*base, *flags]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not output.exists() or not any(output.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("script", ["grpo.py", "rloo.py"])
def test_real_default_model_runs_a_step(tmp_path, script):
    flags = "--steps 1 --batch-size 4 --num-generations 2 --max-new-tokens 8"
    flags += " --eval-prompts 4 --eval-batch-size 4 --threads 2 --wandb disabled"
    result = run_script(script, ["--output-dir", str(tmp_path), *flags.split()], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert metrics_of(run)[-1]["perf/episodes"] == 4
    adapter = load_file(run / "policy" / "adapter_model.safetensors")
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 0
