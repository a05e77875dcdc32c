"""Runs that survive: faults injected into real runs of the tiny model, each followed by
``--resume`` where a run can continue, ending as the run without the fault.

    python -m pytest tests/test_reliability.py -q

The faults: SIGTERM (preemption) and a second one, a truncated newest checkpoint, a full
disk while a checkpoint is written, a run with no checkpoint at all, a malicious pickle in
a checkpoint, a model that ships its own code or pickled weights, a reward that raises
or hangs, non-finite numbers in the update; and arbitrary text into every environment's
``step`` and the reward-spec parser (hypothesis). The rewards that misbehave are in
``tests/fault_rewards.py``.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import envs  # noqa: F401  (registers the environments)
import rlm.checkpoint
from rlm.checkpoint import RUN_STATE, complete_checkpoint, find_resume_checkpoint
from rlm.env import TextEnv, registered_text_env_ids
from rlm.env_check import text_env
from rlm.errors import ConfigError, ModelNotFoundError, RlmError
from rlm.files import manifest, read_jsonl, truncate_jsonl, write_json
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic
from rlm.preemption import PREEMPTED_EXIT_CODE
from rlm.scorers import make_reward
from tests.helpers import (
    ALGORITHMS,
    ForkedRuns,
    computed_metrics,
    load_experiment,
    metrics_of,
    only_run,
    read_json,
    run_experiment,
    run_tiny,
    tiny_flags,
    tiny_run,
    two_processes,
)

SIGNALLING = ["--reward", "tests.fault_rewards:signal_at_call"]


# --- files ------------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"reward": 0.5})

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"reward": 0.75})
    assert json.loads(path.read_text()) == {"reward": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_truncating_a_log_keeps_whole_lines_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = ['{"step": 0, "a": 1}\n', '{"step": 1, "a": 2}\n', '{"step": 2, "a": 3}\n']
    path.write_text("".join(lines) + '{"step": 3, "a"')  # the last line half-written
    assert truncate_jsonl(path, lambda row: row["step"] <= 1) == 2  # step 2 and the half line
    assert path.read_text() == "".join(lines[:2])
    assert truncate_jsonl(path, lambda row: row["step"] <= 1) == 0  # nothing left to drop


def _checkpoint(folder: Path, step: int, payload: bytes) -> Path:
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "weights.bin").write_bytes(payload)
    complete_checkpoint(checkpoint, {"step": step, "finished": False}, keep=10)
    return checkpoint


def test_the_newest_sound_checkpoint_is_found_and_why_the_others_are_not(tmp_path):
    older = _checkpoint(tmp_path, 2, b"a" * 100)
    truncated = _checkpoint(tmp_path, 4, b"b" * 100)
    (truncated / "weights.bin").write_bytes(b"b" * 40)
    assert read_json(truncated / RUN_STATE)["files"]["weights.bin"]["bytes"] == 100
    changed = _checkpoint(tmp_path, 6, b"c" * 100)
    (changed / "weights.bin").write_bytes(b"x" * 100)
    unfinished = tmp_path / "checkpoint-8"
    unfinished.mkdir()  # the run died before run_state.json
    found, skipped = find_resume_checkpoint(tmp_path)
    assert found == older
    assert [(p.name, why.split(" (")[0]) for p, why in skipped] == [
        ("checkpoint-8", "incomplete"), ("checkpoint-6", "corrupt"), ("checkpoint-4", "corrupt"),
    ]  # fmt: skip
    assert "40 bytes, 100 were written" in skipped[2][1]
    assert "SHA-256 differs" in skipped[1][1]


# --- preemption, corrupt and missing checkpoints: real runs, resumed -------------------------


@pytest.fixture(scope="module")
def reference(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny PPO run with the signalling reward and no signal: what faulty runs end as."""
    return tiny_run("ppo", tiny_model_path, tmp_path_factory.mktemp("reference"), *SIGNALLING)


def _steps(run: Path) -> list[int]:
    return [row["step"] for row in metrics_of(run)]


def test_sigterm_checkpoints_the_step_and_resume_ends_as_the_straight_run(
    tiny_model_path, tmp_path, reference, monkeypatch
):
    # Reward calls: 1 the evaluation before training, 2 step 1, 3 step 2's rollout.
    monkeypatch.setenv("RLM_TEST_SIGNAL_AT", "3")
    first = run_tiny("ppo", tiny_model_path, tmp_path, *SIGNALLING)
    assert first.returncode == PREEMPTED_EXIT_CODE, first.stderr[-3000:]
    run = only_run(tmp_path)
    assert "SIGTERM: finishing this step" in first.stderr
    assert f"preempted (SIGTERM) after step 2; continue with --resume {run}" in first.stdout
    assert read_json(run / "meta.json")["status"] == "preempted"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-2"]
    assert _steps(run) == [0, 1, 2]

    monkeypatch.delenv("RLM_TEST_SIGNAL_AT")
    resumed = run_experiment("ppo", ["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_json(run / "meta.json")["status"] == "finished"
    assert computed_metrics(run) == computed_metrics(reference)


# length:target=3 rewards the tiny random model's completions unevenly: advantages, losses
# and evaluations all carry signal to compare. GRPO takes two passes a batch (checkpoints
# fall between batches).
KILLED_FLAGS = {
    "ppo": ["--reward", "length:target=3"],
    "grpo": ["--reward", "length:target=3", "--epochs", "2"],
    "rloo": ["--reward", "length:target=3"],
    "sft": ["--reward", "length:target=3"],
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_kill_9_at_six_random_moments_then_resume_ends_as_the_straight_run(
    algorithm, tiny_model_path, tmp_path
):
    """Stop the run cleanly after step 1 (``--stop-after``), then SIGKILL it six times, each
    a random moment (up to 0.8 s) after a random step was logged by the running process: in
    a rollout, an update, an evaluation or a checkpoint write, wherever it falls; resume
    after each; then let it finish. It ends as the run that met none of this, to the
    metric and the weight. Then the moment after the last checkpoint: without its policy
    and summary.json, the run resumes to write them."""
    flags = KILLED_FLAGS[algorithm]
    out = tmp_path / "killed"
    first = [*tiny_flags(algorithm, tiny_model_path, out), *flags]
    with ForkedRuns() as runs:  # each run a real process, killed for real: see ForkedRuns
        straight_flags = [*tiny_flags(algorithm, tiny_model_path, tmp_path / "straight"), *flags]
        assert runs.run(algorithm, straight_flags) == 0
        straight = only_run(tmp_path / "straight")
        assert runs.run(algorithm, [*first, "--stop-after", "1"]) == 0
        assert read_json(only_run(out) / "meta.json")["status"] == "stopped"
        reached = _kill_at_random_moments(runs, algorithm, out, first, kills=6)
        run = only_run(out)
        if not (run / "summary.json").exists():  # else the last kill came after the end
            assert runs.run(algorithm, ["--resume", str(run)]) == 0
        print("last step logged at each kill:", reached)
        assert read_json(run / "meta.json")["status"] == "finished"
        # TRL's SFTTrainer does not checkpoint its count of tokens seen (train/num_tokens).
        ignore = ("train/num_tokens",) if algorithm == "sft" else ()
        got = computed_metrics(run, ignore)
        assert [row["step"] for row in got] == [0, 1, 2, 3, 4]
        assert got == computed_metrics(straight, ignore)
        loss = "train/policy_loss" if algorithm == "ppo" else "train/loss"
        assert len({row[loss] for row in got[1:]}) > 1  # the metrics carry signal
        weights = "model.safetensors" if algorithm == "sft" else "adapter_model.safetensors"
        a, b = load_file(run / "policy" / weights), load_file(straight / "policy" / weights)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6

        # Killed after its final checkpoint, before its policy and summary.json.
        summary = read_json(run / "summary.json")
        (run / "summary.json").unlink()
        shutil.rmtree(run / "policy")
        assert runs.run(algorithm, ["--resume", str(run)]) == 0
    assert computed_metrics(run, ignore) == got  # no step trained again
    again = read_json(run / "summary.json")
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in summary.items() if k != "wall_time_s"
    }
    a, b = load_file(run / "policy" / weights), load_file(straight / "policy" / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _kill_at_random_moments(
    runs: ForkedRuns, algorithm: str, out: Path, first: list[str], *, kills: int
) -> list[int]:
    """Run (or resume) the run in ``out`` and SIGKILL it, ``kills`` times; the last step the
    running process had logged at each kill (-1: none yet)."""
    moments = random.Random(0)
    reached: list[int] = []
    while len(reached) < kills:
        found = [p for p in out.iterdir() if p.is_dir()]
        if found and (found[0] / "summary.json").exists():
            shutil.rmtree(found[0])  # it finished before the kill: start over
            found = []
        args = ["--resume", str(found[0])] if found else first
        started = time.time()
        pid = runs.start(algorithm, args)
        target, logged = moments.randint(0, 4), None
        while runs.poll() is None and logged is None:
            found = [p for p in out.iterdir() if p.is_dir()]
            rows = read_jsonl(found[0] / "metrics.jsonl") if found else []
            mine = [row["step"] for row in rows if row["time"] >= started]
            logged = mine[-1] if mine and mine[-1] >= target else None
            time.sleep(0.02)
        time.sleep(moments.uniform(0.0, 0.8))
        if runs.poll() is None:
            os.kill(pid, signal.SIGKILL)  # no handler, no clean-up
        status = runs.wait()
        assert status in (0, -signal.SIGKILL)  # 0: it finished before the kill
        if status != 0:
            reached.append(logged if logged is not None else -1)
    return reached


def test_a_sigterm_while_the_run_sets_up_stops_it_after_its_first_step(
    tiny_model_path, tmp_path, monkeypatch
):
    # Call 1: the evaluation before training, before the run folder exists (a sweep killed
    # while its trial starts). Uncaught, the signal would kill the run unmarked.
    monkeypatch.setenv("RLM_TEST_SIGNAL_AT", "1")
    result = run_tiny("ppo", tiny_model_path, tmp_path, *SIGNALLING)
    assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert f"preempted (SIGTERM) after step 1; continue with --resume {run}" in result.stdout
    assert read_json(run / "meta.json")["status"] == "preempted"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-1"]


def test_a_second_signal_exits_at_once(tiny_model_path, tmp_path, monkeypatch):
    # Calls 3 and 4: step 2's rollout, then its evaluation, before the step has ended.
    monkeypatch.setenv("RLM_TEST_SIGNAL_AT", "3,4")
    result = run_tiny("ppo", tiny_model_path, tmp_path, *SIGNALLING)
    assert result.returncode == -signal.SIGTERM, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert _steps(run) == [0, 1]
    assert find_resume_checkpoint(run / "checkpoints") == (None, [])


def test_a_truncated_newest_checkpoint_is_skipped_for_the_one_before(
    tiny_model_path, tmp_path, reference
):
    first = run_tiny("ppo", tiny_model_path, tmp_path, *SIGNALLING, "--stop-after", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    run = only_run(tmp_path)
    newest = run / "checkpoints" / "checkpoint-3"
    weights = newest / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    resumed = run_experiment("ppo", ["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "warning: skipping checkpoint-3: corrupt (trainable.safetensors has" in resumed.stderr
    # Step 3 was logged before the stop and again after the resume: once in the log.
    assert _steps(run) == [0, 1, 2, 3, 4]
    assert computed_metrics(run) == computed_metrics(reference)


def test_a_full_disk_during_a_checkpoint_then_resume_from_nothing(
    tiny_model_path, tmp_path, reference, monkeypatch, capsys
):
    ppo = load_experiment("ppo")

    def full_disk(path: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    # The first checkpoint's run_state.json cannot be written: the run fails there.
    monkeypatch.setattr(rlm.checkpoint, "write_json", full_disk)
    flags = [*tiny_flags("ppo", tiny_model_path, tmp_path), *SIGNALLING]
    with pytest.raises(OSError, match="No space left"):
        ppo.cli(flags)
    run = only_run(tmp_path)
    assert read_json(run / "meta.json")["status"] == "failed"
    assert _steps(run) == [0, 1, 2]
    monkeypatch.undo()

    # Its only checkpoint is incomplete: the run starts again from step 0 in its folder.
    assert ppo.cli(["--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping checkpoint-2: incomplete" in err
    assert "no complete checkpoint; the run starts again from step 0" in err
    assert read_json(run / "meta.json")["status"] == "finished"
    assert computed_metrics(run) == computed_metrics(reference)


# --- no code from files -----------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


# PPO's optimizer file is rlm's; GRPO's (as RLOO's and SFT's) is written and read by
# transformers' Trainer.
@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_a_malicious_pickle_in_a_checkpoint_is_refused_not_run(
    algorithm, tiny_model_path, tmp_path, capsys
):
    experiment = load_experiment(algorithm)
    flags = [*tiny_flags(algorithm, tiny_model_path, tmp_path / "runs"), "--stop-after", "2"]
    assert experiment.cli(flags) == 0
    run = only_run(tmp_path / "runs")
    checkpoint = run / "checkpoints" / "checkpoint-2"
    marker = tmp_path / "code-ran"
    (checkpoint / "optimizer.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    # A shared checkpoint's manifest matches its files: the attacker wrote both.
    state = read_json(checkpoint / RUN_STATE)
    state["files"] = manifest(checkpoint, exclude=(RUN_STATE,))
    (checkpoint / RUN_STATE).write_text(json.dumps(state))

    capsys.readouterr()
    assert experiment.cli(["--resume", str(run)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        f"error: checkpoint {checkpoint}: optimizer.pt holds more than tensors and numbers; "
        "rlm refuses to unpickle it (that could run code). Resume only checkpoints you trust"
    ]
    assert not marker.exists()


def test_a_model_that_ships_code_needs_the_flag_and_runs_nothing_without_it(
    tiny_model_path, tmp_path
):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_path, folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'custom-llama'\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    config = read_json(folder / "config.json")
    config["model_type"] = "custom-llama"
    config["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="pass --trust-remote-code to run it"):
        load_causal_lm(str(folder))
    assert not marker.exists()


def test_pickled_weights_are_refused_with_the_way_to_convert_them(tiny_model_path, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_path, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=r"pickled weights only \(\*.bin\)"):
        load_causal_lm(str(folder))


# --- rewards that fail or hang ----------------------------------------------------------------


def test_a_reward_that_raises_is_named_and_keeps_its_traceback(tiny_model_path, tmp_path):
    result = run_tiny("ppo", tiny_model_path, tmp_path, "--reward", "tests.fault_rewards:broken")
    assert result.returncode == 1
    assert (
        "RewardFailed: reward 'broken' of environment 'rlm/Sentiment-v0' raised "
        "ZeroDivisionError: division by zero" in result.stderr
    )
    assert "in _divide" in result.stderr and "return total / count" in result.stderr


def test_a_hanging_reward_stops_the_run_after_the_timeout(tiny_model_path, tmp_path, capsys):
    ppo = load_experiment("ppo")
    flags = [*tiny_flags("ppo", tiny_model_path, tmp_path), "--reward",
             "tests.fault_rewards:hang", "--reward-timeout", "1"]  # fmt: skip
    assert ppo.cli(flags) == 2
    err = capsys.readouterr().err
    assert "reward 'hang' of environment 'rlm/Sentiment-v0' gave no answer within 1 s" in err


# --- numerical guards -------------------------------------------------------------------------


def test_non_finite_updates_are_skipped_and_stop_the_run_before_bad_weights(
    tiny_model_path, tmp_path, monkeypatch, capsys
):
    forward = ActorCritic.forward

    def nan_values(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = forward(self, *args, **kwargs)
        out.values = out.values * float("nan")  # the update's loss, then gradients: NaN
        return out

    monkeypatch.setattr(ActorCritic, "forward", nan_values)
    ppo = load_experiment("ppo")
    assert ppo.cli(tiny_flags("ppo", tiny_model_path, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "step 3: 3 steps in a row had non-finite" in err and "lower --lr" in err
    run = only_run(tmp_path)
    rows = metrics_of(run)
    assert [row["train/skipped_updates"] for row in rows[1:]] == [4, 4, 4]  # 2 epochs x 2
    # Every update was skipped: the checkpoint holds the untrained adapter (LoRA B = 0).
    weights = load_file(run / "checkpoints" / "checkpoint-2" / "trainable.safetensors")
    assert all(not v.any() for k, v in weights.items() if "lora_B" in k)
    assert read_json(run / "meta.json")["status"] == "failed"


def test_the_trl_callback_drops_non_finite_gradients():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from rlm.trl_runner import RunCallback

    layer = torch.nn.Linear(2, 2)
    layer(torch.tensor([[1.0, float("inf")]])).sum().backward()
    callback = RunCallback.__new__(RunCallback)
    callback._skipped = 0
    args = TrainingArguments(output_dir="unused", report_to=[])
    callback.on_pre_optimizer_step(args, TrainerState(), TrainerControl(), model=layer)
    assert callback._skipped == 1 and all(p.grad is None for p in layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()  # finite: kept
    callback.on_pre_optimizer_step(args, TrainerState(), TrainerControl(), model=layer)
    assert callback._skipped == 1 and all(p.grad is not None for p in layer.parameters())


# --- several processes ------------------------------------------------------------------------

FAULTY = ["--reward", "tests.fault_rewards:fault_at_call"]


def _fault(monkeypatch: pytest.MonkeyPatch, fault: str, *, rank: int, at: int) -> None:
    """Make ``fault_at_call`` do ``fault`` on process ``rank`` at its reward call ``at``."""
    for name, value in (("FAULT", fault), ("FAULT_RANK", str(rank)), ("FAULT_AT", str(at))):
        monkeypatch.setenv(f"RLM_TEST_{name}", value)


def test_a_process_that_raises_stops_the_other_naming_its_rank_and_error(
    tiny_model_path, tmp_path, monkeypatch
):
    _fault(monkeypatch, "raise", rank=1, at=2)  # rank 1's calls: 1 step 1's rollout, 2 step 2's
    result = run_tiny("ppo", tiny_model_path, tmp_path, *FAULTY, launcher=two_processes(),
                      timeout=120)  # fmt: skip
    assert result.returncode != 0
    error = (
        "process 1 failed: RewardFailed: reward 'fault_at_call' of environment "
        "'rlm/Sentiment-v0' raised RuntimeError: reward server lost at call 2"
    )
    assert f"error: process 0 of 2 stops: {error}" in result.stderr
    meta = read_json(only_run(tmp_path) / "meta.json")
    assert meta["status"] == "failed" and error in meta["error"]
    # torchrun's summary shows rank 1's error too (rlm wrote it to torchrun's error file).
    summary = result.stderr.split("experiments/ppo.py FAILED")[1]
    assert "rank      : 1 (local_rank: 1)" in summary
    assert "RuntimeError: reward server lost at call 2" in summary


def test_a_killed_process_then_a_preempted_job_then_resume_ends_as_the_straight_run(
    tiny_model_path, tmp_path, monkeypatch
):
    straight = run_tiny("ppo", tiny_model_path, tmp_path / "straight", *FAULTY,
                        launcher=two_processes())  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    # Both processes rolled out their own batches (twice the episodes of one) and keep
    # their own random state.
    assert metrics_of(only_run(tmp_path / "straight"))[-1]["perf/episodes"] == 2 * 4 * 4
    last = only_run(tmp_path / "straight") / "checkpoints" / "checkpoint-4"
    assert sorted(p.name for p in last.glob("rng_state_*.json")) == [
        "rng_state_0.json", "rng_state_1.json",
    ]  # fmt: skip

    # 1. Rank 1 dies (SIGKILL) in step 3's rollout, its reward call 3: rank 0 stops too.
    _fault(monkeypatch, "kill", rank=1, at=3)
    killed = run_tiny("ppo", tiny_model_path, tmp_path / "faulty", *FAULTY,
                      launcher=two_processes(), timeout=120)  # fmt: skip
    assert killed.returncode != 0
    assert "error: process 0 of 2 stops: another process of this run died" in killed.stderr
    run = only_run(tmp_path / "faulty")
    assert read_json(run / "meta.json")["status"] == "failed"

    # 2. Resumed from checkpoint-2, the scheduler preempts the whole job (SIGTERM to the
    # launcher and both processes) in step 3, rank 0's first reward call: both finish the
    # step and save it. torchrun passes its own SIGTERM on: that is not a second signal.
    _fault(monkeypatch, "sigterm-job", rank=0, at=1)
    preempted = run_experiment("ppo", ["--resume", str(run)], launcher=two_processes(),
                               timeout=120)  # fmt: skip
    assert f"preempted (SIGTERM) after step 3; continue with --resume {run}" in preempted.stdout
    assert read_json(run / "meta.json")["status"] == "preempted"
    assert (run / "checkpoints" / "checkpoint-3" / RUN_STATE).is_file()

    # 3. Resumed again, it ends as the run that met none of this.
    monkeypatch.delenv("RLM_TEST_FAULT")
    resumed = run_experiment("ppo", ["--resume", str(run)], launcher=two_processes())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert computed_metrics(run) == computed_metrics(only_run(tmp_path / "straight"))


# --- arbitrary input: a result or a clear error, never a crash -------------------------------


@functools.cache
def _env(env_id: str) -> TextEnv:
    return text_env(env_id, split="train")


@pytest.mark.parametrize("env_id", registered_text_env_ids())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300))
def test_any_text_is_a_step_or_a_clear_error(env_id, text):
    env = _env(env_id)
    env.reset(seed=0)
    try:
        observation, reward, terminated, truncated, info = env.step(text)
    except (RlmError, ValueError) as exc:  # a user's error, with a message that says so
        assert str(exc)
        return
    assert isinstance(observation, str) and isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)


SPEC_PIECES = ["vader", "textblob", "length", "repetition", "keywords", "env", "bleu", "*",
               "+", "-", ":", "=", ",", "n=2", "0.5", "1e3", " ", "(", "nan", "inf",
               "target=3"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(spec=st.one_of(st.text(max_size=40), st.lists(st.sampled_from(SPEC_PIECES)).map("".join)))
@example(spec="~0")  # found by hypothesis: the home of a user who does not exist
def test_any_reward_spec_is_a_reward_or_a_clear_error(spec):
    try:
        reward = make_reward(spec, lambda p, c, **info: [0.0] * len(c))
    except RlmError:
        return
    assert callable(reward)
