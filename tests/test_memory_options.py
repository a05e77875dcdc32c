"""The settings that trade time for memory (``--activation-checkpointing``, PPO's
``--forward-batch-size``), and the message of a run out of memory.

Run: ``python -m pytest tests/test_memory_options.py -q``
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlm.ppo_update import PPOSettings
from rlm.settings import RunSettings
from rlm.tracking import TrackingSettings
from tests.helpers import computed_metrics, load_experiment, only_run, read_json


def _layer_parts_run(
    algorithm: str, model: Path, folder: Path, *, ppo: PPOSettings | None = None, **settings: object
) -> int:
    """Run the tiny experiment in this process; how many times a decoder layer's MLP ran
    (activation checkpointing wraps the layer's forward: its parts run again when the
    backward pass recomputes it)."""
    calls: list[str] = []

    def count(module: torch.nn.Module, args: object) -> None:
        if type(module).__name__.endswith("MLP"):
            calls.append(type(module).__name__)

    experiment = load_experiment(algorithm)
    # length:target=3 rewards the tiny model's completions unevenly: the updates move.
    run = RunSettings(
        model=str(model), reward="length:target=3", steps=2, batch_size=4, max_new_tokens=6,
        eval_prompts=4, eval_batch_size=4, eval_every=2, checkpoint_every=2, lora_r=4, threads=1,
        tracking=TrackingSettings(output_dir=folder, wandb="disabled", tensorboard=False),
        **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        experiment.main(experiment.Config(run=run, **({"ppo": ppo} if ppo else {})))
    finally:
        hook.remove()
    return len(calls)


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_activation_checkpointing_recomputes_the_layers_and_trains_the_same(
    algorithm, tiny_model_path, tmp_path
):
    """rlm's PPO update and TRL's trainer, each on the same model: with the flag, the
    backward pass runs the layers again, and the run logs the same numbers."""
    plain = _layer_parts_run(algorithm, tiny_model_path, tmp_path / "plain")
    checkpointed = _layer_parts_run(
        algorithm, tiny_model_path, tmp_path / "checkpointed", activation_checkpointing=True
    )
    # Generation and evaluation run the same passes; only the updates' layers run twice.
    assert checkpointed > plain
    assert computed_metrics(only_run(tmp_path / "checkpointed")) == computed_metrics(
        only_run(tmp_path / "plain")
    )


def test_out_of_memory_stops_the_run_naming_the_settings_that_need_less(
    tiny_model_path, tmp_path, capsys, monkeypatch
):
    from rlm.ppo_learner import PPOLearner

    def no_memory_left(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nmore")

    monkeypatch.setattr(PPOLearner, "step", no_memory_left)
    flags = ["--model", str(tiny_model_path), "--output-dir", str(tmp_path), "--wandb",
             "disabled", "--max-new-tokens", "4", "--eval-prompts", "4", "--batch-size", "4",
             "--minibatches", "2", "--no-lora"]  # fmt: skip
    assert load_experiment("ppo").cli(flags) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB.): lower "
        "--batch-size (now 4), --eval-batch-size (now 32) or --max-new-tokens (now 4); raise "
        "--minibatches (now 2) or --grad-accum (now 1): fewer episodes in each backward "
        "pass; lower --forward-batch-size (now 2): fewer in each pass without gradients; "
        "turn on --activation-checkpointing; train a LoRA adapter (--lora) instead of every "
        "weight"
    )
    meta = read_json(only_run(tmp_path) / "meta.json")
    assert meta["status"] == "failed" and meta["error"] == "OutOfMemory: " + last[7:]


def test_ppo_forward_batch_size_splits_the_passes_without_gradients(tiny_model_path, tmp_path):
    """--forward-batch-size 1: a pass per episode instead of one per minibatch (2 of 4
    episodes), through the policy and the reference; the numbers stay the same."""
    minibatch = _layer_parts_run("ppo", tiny_model_path, tmp_path / "minibatch")
    single = _layer_parts_run(
        "ppo", tiny_model_path, tmp_path / "single", ppo=PPOSettings(forward_batch_size=1)
    )
    layers = read_json(tiny_model_path / "config.json")["num_hidden_layers"]
    # layers x 2 steps x (policy + reference) x (4 passes instead of 2)
    assert single - minibatch == layers * 2 * 2 * (4 - 2)
    rows = computed_metrics(only_run(tmp_path / "single"))
    expected = computed_metrics(only_run(tmp_path / "minibatch"))
    assert [row.keys() for row in rows] == [row.keys() for row in expected]
    for row, want in zip(rows, expected, strict=True):  # (padding differs between passes)
        assert row == pytest.approx(want, rel=1e-4, abs=1e-6), row["step"]


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_mixed_precision_runs_the_update_in_bfloat16_over_float32_weights(
    algorithm, tiny_model_path, tmp_path
):
    def update_passes(folder: Path, **settings: object) -> set[tuple[torch.dtype, torch.dtype]]:
        """(output, weight) dtypes of the decoder layers' MLPs in passes with gradients."""
        seen: set[tuple[torch.dtype, torch.dtype]] = set()

        def record(module: torch.nn.Module, args: object, output: object) -> None:
            if type(module).__name__.endswith("MLP") and torch.is_grad_enabled():
                assert isinstance(output, torch.Tensor)
                seen.add((output.dtype, next(module.parameters()).dtype))

        hook = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            _layer_parts_run(algorithm, tiny_model_path, folder, **settings)
        finally:
            hook.remove()
        return seen

    assert update_passes(tmp_path / "plain") == {(torch.float32, torch.float32)}
    mixed = update_passes(tmp_path / "mixed", mixed_precision="bf16")
    assert mixed == {(torch.bfloat16, torch.float32)}
    run = only_run(tmp_path / "mixed")
    assert read_json(run / "meta.json")["status"] == "finished"
