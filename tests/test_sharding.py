"""rlm's PPO pieces on a policy FSDP2 shards (two CPU processes over gloo), and the
launches that cannot shard on a CPU.

Run: ``python -m pytest tests/test_sharding.py -q``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from rlm.errors import ConfigError
from rlm.settings import RunSettings
from rlm.sharding import (
    check_sharding_launch,
    full_weights,
    is_sharded,
    load_optimizer_state,
    whole_optimizer_state,
)
from rlm.tracking import TrackingSettings
from tests.helpers import ROOT, load_experiment, run_python, two_processes


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_rollout_update_and_checkpoints_run_on_a_policy_sharded_over_two_processes(
    tiny_model_path, tmp_path, kind
):
    script = ROOT / "tests" / "scripts" / "fsdp_check.py"
    result = run_python(
        script, [str(tiny_model_path), str(tmp_path), kind], launcher=two_processes()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    layers = AutoConfig.from_pretrained(tiny_model_path).num_hidden_layers
    for report in ranks:
        # Sharded one decoder layer at a time (accelerate's policy read the layers' class
        # from the ActorCritic), and every number as the unsharded model computes it.
        assert report["sharded"] and report["units"] == layers
        assert report["logprobs_match"] and report["reference_matches"] and report["values_match"]
        assert report["restored_scores_match"] and report["restored_optimizer_steps"] == [1]
    # The ranks generated different numbers of tokens in one gathered phase.
    assert ranks[0]["generated"] != ranks[1]["generated"]
    main = ranks[0]
    assert main["trained_changed"] and main["restored_weights_match"]
    assert main["saved_policy_matches"]


def test_a_model_that_is_not_sharded_is_left_as_it_is():
    model = torch.nn.Linear(3, 2)
    before = model.weight.detach().clone()
    with full_weights(model):
        model(torch.ones(1, 3))
    assert not is_sharded(model)
    assert torch.equal(model.weight, before)


def test_a_sharded_runs_optimizer_state_resumes_a_run_that_is_not_sharded():
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    # What a sharded run saves: the state keyed by parameter name.
    by_name = get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    assert set(by_name["state"]) == {"weight", "bias"}
    resumed = torch.nn.Linear(3, 2)  # a new process's model: no gradients yet
    resumed.load_state_dict(model.state_dict())
    fresh = torch.optim.AdamW(resumed.parameters())
    load_optimizer_state(resumed, fresh, by_name)
    restored, saved = fresh.state_dict()["state"], whole_optimizer_state(model, optimizer)["state"]
    assert restored.keys() == saved.keys() == {0, 1}
    for index in (0, 1):
        assert torch.equal(restored[index]["exp_avg"], saved[index]["exp_avg"])


def _tiny_run(algorithm: str, model: Path, folder: Path) -> None:
    experiment = load_experiment(algorithm)
    run = RunSettings(
        model=str(model), steps=1,
        tracking=TrackingSettings(output_dir=folder, wandb="disabled", tensorboard=False),
    )  # fmt: skip
    experiment.main(experiment.Config(run=run))


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_an_fsdp_or_deepspeed_launch_without_a_gpu_is_refused(
    monkeypatch, tiny_model_path, tmp_path, variable
):
    check_sharding_launch(has_gpu=False)  # a plain launch: nothing to refuse
    monkeypatch.setenv(variable, "true")
    check_sharding_launch(has_gpu=True)
    with pytest.raises(ConfigError, match="only on GPUs.*cpu_ddp.yaml"):
        _tiny_run("grpo", tiny_model_path, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before any run folder was written


def test_ppo_refuses_a_deepspeed_launch_and_names_fsdp(monkeypatch, tiny_model_path, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="PPO does not run under DeepSpeed.*fsdp.yaml"):
        _tiny_run("ppo", tiny_model_path, tmp_path)
