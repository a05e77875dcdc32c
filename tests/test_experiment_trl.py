"""End-to-end runs of experiments/grpo.py, rloo.py and sft.py with the tiny model.

    python -m pytest tests/test_experiment_trl.py -q
    python -m pytest tests/test_experiment_trl.py -m slow -q   # GRPO and RLOO on the default model

Training runs are subprocesses, as a user runs them; bad input is checked in-process
through each script's ``cli`` (the same code path, without a second start-up).
"""

from __future__ import annotations

import subprocess

import pytest
from safetensors.torch import load_file

from rlm.settings import RunSettings
from rlm.trl_runner import GroupSettings, sampling_arguments, trainer_arguments
from tests.helpers import (
    assert_diagnostics_logged,
    load_experiment,
    metrics_of,
    only_run,
    read_json,
    run_experiment,
    run_tiny,
    samples_of,
)

CHATTY = ["--env-id", "tests.fixture_envs:rlm_test/Chatty-v0", "--prompt-format", "chat"]


def assert_trained_and_logged(run, result: subprocess.CompletedProcess, steps: int) -> None:
    """LoRA's B matrices start at zero: a non-zero one was trained. Metrics as PPO's."""
    adapter = load_file(run / "policy" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0
    rows = metrics_of(run)
    assert [r["step"] for r in rows] == list(range(steps + 1))
    for row in rows[::2]:  # evaluated before training and every 2 steps (--eval-every 2)
        assert {"eval/reward_mean", "eval/kl", "perf/tokens"} <= set(row)
    for key in ["reward/mean", "reward/std", "train/loss", "train/completion_length",
                "perf/episodes", "perf/time_iteration"]:  # fmt: skip
        assert key in rows[1], key
    assert 0 < rows[1]["perf/tokens"] < rows[2]["perf/tokens"]
    summary = read_json(run / "summary.json")
    for key in ["eval_reward_before", "eval_reward_after", "eval_kl_after",
                "generated_tokens", "wall_time_s", "episodes"]:  # fmt: skip
        assert key in summary, key
    assert summary["generated_tokens"] == rows[-1]["perf/tokens"]
    assert read_json(run / "meta.json")["status"] == "finished"
    assert {"prompt", "completion", "reward", "step"} <= set(samples_of(run)[0])
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "held-out reward" in result.stdout
    assert_diagnostics_logged(run)


def test_grpo_single_turn_trains_and_logs_everywhere(tiny_model_path, tmp_path):
    result = run_tiny("grpo", tiny_model_path, tmp_path, wandb="offline")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert run.name.startswith("rlm_Sentiment-v0__grpo__1__")
    assert_trained_and_logged(run, result, steps=4)
    rows = metrics_of(run)
    assert rows[-1]["perf/episodes"] == 16  # 4 steps x 4 completions
    assert "train/kl_per_token" in rows[1]  # --kl-coef 0.05: TRL computes the KL term
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    config = read_json(run / "config.json")
    assert config["algorithm"] == "grpo" and set(config) == {"algorithm", "run", "grpo"}
    assert config["run"]["model"] == str(tiny_model_path) and config["grpo"]["loss_type"] == "dapo"
    assert (run / "checkpoints" / "checkpoint-4" / "run_state.json").is_file()


def test_grpo_multi_turn_masks_the_environment(tiny_model_path, tmp_path):
    result = run_tiny("grpo", tiny_model_path, tmp_path, *CHATTY, "--steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert_trained_and_logged(run, result, steps=2)
    rows = metrics_of(run)
    # TRL counts only the policy's tokens (env_mask): 3 turns of at most 6 tokens.
    assert 3 <= rows[1]["train/completion_length"] <= 18
    assert rows[-1]["perf/tokens"] <= 8 * 18
    assert "[env] Tell me more." in samples_of(run)[0]["completion"]


def test_grpo_multi_turn_plays_with_the_reward_given_and_no_kl_term(tiny_model_path, tmp_path):
    reward = ["--reward", "env + length:target=2", "--kl-coef", "0"]
    result = run_tiny("grpo", tiny_model_path, tmp_path, *CHATTY, *reward, "--steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics_of(only_run(tmp_path))
    assert any("reward/length" in r for r in rows[1:])  # the rollout scored with --reward
    assert "eval/reward/length" in rows[-1]
    assert not any("train/kl_per_token" in r for r in rows)  # beta 0: TRL skips the KL


def test_rloo_single_turn_trains_and_stops_at_the_token_budget(tiny_model_path, tmp_path):
    # A step generates at most 4 x 6 = 24 tokens: a budget of 25 ends the run after step 2.
    result = run_tiny("rloo", tiny_model_path, tmp_path, "--token-budget", "25")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert_trained_and_logged(run, result, steps=2)
    summary = read_json(run / "summary.json")
    assert summary["algorithm"] == "rloo" and summary["steps"] == 2


def test_rloo_takes_a_composite_reward_and_logs_its_parts(tiny_model_path, tmp_path):
    reward = ["--reward", "0.5*vader + 0.5*length:target=3", "--steps", "2"]
    result = run_tiny("rloo", tiny_model_path, tmp_path, *reward)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics_of(only_run(tmp_path))
    trained = [r for r in rows if "reward/vader" in r]
    assert trained and all("reward/length" in r for r in trained)
    # Evaluation scores the same composite: its mean is the weighted sum of its parts.
    last = rows[-1]
    assert last["eval/reward_mean"] == pytest.approx(
        0.5 * last["eval/reward/vader"] + 0.5 * last["eval/reward/length"]
    )


def test_grpo_epochs_are_passes_over_each_batch_within_one_step(tiny_model_path, tmp_path):
    result = run_tiny("grpo", tiny_model_path, tmp_path, "--epochs", "2", "--steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    # Two steps of one batch each (4 completions), each batch trained on twice by TRL.
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["perf/episodes"] == 8
    state = read_json(run / "checkpoints" / "checkpoint-4" / "trainer_state.json")
    assert state["global_step"] == 4
    assert read_json(run / "checkpoints" / "checkpoint-4" / "run_state.json")["step"] == 2


def test_sft_saves_a_model_the_rl_scripts_load(tiny_model_path, tmp_path):
    from rlm.models import load_causal_lm, resolve_model_path

    # The chat template: demonstrations as conversations, evaluation in the same format.
    chat = ["--prompt-format", "chat", "--max-length", "96"]  # the template's system prompt
    result = run_tiny("sft", tiny_model_path, tmp_path, "--steps", "2", *chat)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    rows = metrics_of(run)
    assert rows[0]["step"] == 0 and "eval/reward_mean" in rows[0]
    assert "train/loss" in rows[1] and "eval/kl" in rows[-1]
    summary = read_json(run / "summary.json")
    assert summary["generated_tokens"] == 0 and summary["episodes"] == 2 * 4  # demonstrations
    model_dir = run / "policy"
    assert resolve_model_path(str(model_dir)) == str(model_dir)
    model, _ = load_causal_lm(str(model_dir))
    start = load_file(tiny_model_path / "model.safetensors")
    weights = model.state_dict()  # lm_head is tied to the embeddings: not in the file
    moved = max(float((weights[n] - start[n]).abs().max()) for n in start)
    assert moved > 0  # the merged adapter changed the weights
    assert f"--model {model_dir}" in result.stdout
    assert_diagnostics_logged(run)  # SFT's evaluations too


def test_shared_settings_map_onto_trl_arguments(tmp_path):
    from trl import GRPOConfig, RLOOConfig

    settings = RunSettings(
        steps=7, batch_size=8, lr=3e-4, lr_schedule="linear", top_p=0.9, top_k=5,
        max_new_tokens=11, temperature=0.7, max_grad_norm=0.5,
    )  # fmt: skip
    group = GroupSettings(num_generations=4, kl_coef=0.3, epochs=2, clip_range=0.1)
    for config_type in (GRPOConfig, RLOOConfig):
        args = config_type(
            **trainer_arguments(settings, tmp_path, updates_per_step=2),
            **sampling_arguments(settings, group),
        )
        # 7 batches of 8 completions, each trained on twice (--epochs 2): 14 optimizer steps.
        assert (args.max_steps, args.per_device_train_batch_size) == (14, 8)
        assert (args.learning_rate, args.lr_scheduler_type, args.max_grad_norm) == (
            3e-4, "linear", 0.5,
        )  # fmt: skip
        assert (args.beta, args.num_iterations, args.epsilon) == (0.3, 2, 0.1)
        assert (args.top_p, args.top_k, args.temperature) == (0.9, 5, 0.7)
        assert args.max_completion_length == 11 and args.num_generations == 4
        assert args.save_strategy == "no" and args.output_dir == str(tmp_path)


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("grpo", ["--batch-size", "6", "--num-generations", "4"], "multiple of --num-generations"),
        ("grpo", ["--num-generations", "1"], "--num-generations must be at least 2"),
        ("grpo", ["--env-id", "rlm/Nope-v0"], "unknown environment 'rlm/Nope-v0'"),
        ("grpo", ["--kl-coef", "-1"], "--kl-coef must be >= 0"),
        ("rloo", ["--lr", "0"], "--lr must be a positive number"),
        ("rloo", ["--env-id", "rlm/GuessNumber-v0"], "RLOOTrainer takes no rollout_func"),
        ("rloo", ["--model", "./no/such/model"], "does not exist"),
        ("sft", ["--env-id", "rlm/GuessNumber-v0"], "--demonstrations FILE.jsonl"),
        ("sft", ["--demonstrations", "/no/such.jsonl"], "does not exist"),
        ("sft", ["--token-budget", "100"], "sft generates no tokens"),
        ("sft", ["--normalize-reward"], "not from rewards"),
        ("sft", ["--min-confidence", "1.5"], "--min-confidence must be in [0, 1]"),
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
@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_real_default_model_runs_a_step(tmp_path, algorithm):
    flags = "--steps 1 --batch-size 4 --num-generations 2 --max-new-tokens 8"
    flags += " --eval-prompts 4 --eval-batch-size 4 --threads 2 --wandb disabled"
    result = run_experiment(algorithm, ["--output-dir", str(tmp_path), *flags.split()], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert metrics_of(run)[-1]["perf/episodes"] == 4
    adapter = load_file(run / "policy" / "adapter_model.safetensors")
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 0
