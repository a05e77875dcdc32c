"""The pieces of PPO's vLLM rollouts that need no GPU: the weights the engine gets, when
it gets them, and episodes assembled from an engine's token ids.

vLLM itself cannot run here (no GPU, and it is not installed), so the engine in these
tests is the tiny model under transformers, called the way rlm calls ``vllm.LLM``
(``generate`` on token-id prompts, ``reset_prefix_cache``), with ``vllm.SamplingParams``
stood in by a namespace that keeps its arguments.

Run: ``python -m pytest tests/test_vllm_engine.py -q``
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import make_text_vector_env
from rlm.errors import ConfigError
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_learner import Optimization, PPOLearner
from rlm.ppo_update import PPOSettings
from rlm.rollout import GenerationSettings, PlainFormat
from rlm.samplers import left_padded_batch, trim_completion
from rlm.vllm_engine import VLLMSampler, check_vllm_available, engine_weights


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(3, 13).view(2, 5)
    with torch.no_grad():
        return model(input_ids=ids).logits


def _trained_lora_policy(path: Path) -> Any:
    torch.manual_seed(0)
    policy, _ = load_causal_lm(str(path))
    policy = add_lora(policy, LoraSettings(r=4))
    for name, param in policy.named_parameters():
        if "lora_B" in name:  # as after some updates: the adapter changes the outputs
            param.data.normal_(std=0.05)
    return policy


def _base_names(path: Path) -> set[str]:
    plain, _ = load_causal_lm(str(path))
    return {name for name, _ in plain.named_parameters()}


def test_a_lora_policys_engine_weights_are_the_merged_model_under_the_base_names(
    tiny_model_path,
):
    policy = _trained_lora_policy(tiny_model_path)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    weights = dict(engine_weights(policy))
    assert set(weights) == _base_names(tiny_model_path)
    # An engine loaded from the base checkpoint that takes these computes the policy.
    engine, _ = load_causal_lm(str(tiny_model_path))
    assert not torch.allclose(_logits(engine), _logits(policy), atol=1e-4)
    engine.load_state_dict(weights, strict=False)
    assert torch.allclose(_logits(engine), _logits(policy), atol=1e-5)
    # Merged apart: the policy's own weights are untouched.
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_a_fully_fine_tuned_policys_engine_weights_are_its_own(tiny_model_path):
    policy, _ = load_causal_lm(str(tiny_model_path))
    weights = dict(engine_weights(policy))
    assert weights.keys() == dict(policy.named_parameters()).keys()
    assert all(
        weights[k] is not None and torch.equal(weights[k], p) for k, p in policy.named_parameters()
    )


class TransformersEngine:
    """The tiny model under transformers, called as rlm calls a ``vllm.LLM``."""

    def __init__(self, path: Path) -> None:
        self.model, _ = load_causal_lm(str(path))
        self.loads = 0
        self.cache_resets = 0
        self.params: list[Any] = []
        self.sampled: list[list[int]] = []

    def load_weights(self, weights: Any) -> None:
        self.model.load_state_dict(dict(weights), strict=False)
        self.loads += 1

    def reset_prefix_cache(self) -> None:
        self.cache_resets += 1

    @torch.no_grad()
    def generate(self, prompts: list[dict[str, list[int]]], params: Any, use_tqdm: bool) -> list:
        self.params.append(params)
        contexts = [p["prompt_token_ids"] for p in prompts]
        ids, attention_mask = left_padded_batch(contexts, 0)
        out = self.model.generate(
            input_ids=ids, attention_mask=attention_mask,
            max_new_tokens=params.max_tokens, do_sample=True, temperature=params.temperature,
            eos_token_id=params.stop_token_ids, pad_token_id=0,
        )  # fmt: skip
        rows = []
        for row in out[:, ids.shape[1] :].tolist():
            # vLLM returns each completion unpadded, up to and with its stop token.
            rows.append(trim_completion(row, set(params.stop_token_ids))[0])
        self.sampled.extend(rows)
        completion = types.SimpleNamespace
        return [completion(outputs=[completion(token_ids=r)]) for r in rows]


@pytest.fixture
def sampling_params(monkeypatch):
    """``vllm.SamplingParams`` stood in by a namespace of its arguments."""
    module = types.ModuleType("vllm")
    module.SamplingParams = types.SimpleNamespace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)


def _learner_with_engine(path: Path) -> tuple[PPOLearner, VLLMSampler, TransformersEngine]:
    """PPO on a LoRA policy, sampling with an engine that starts with the policy's weights."""
    policy = _trained_lora_policy(path)
    engine = TransformersEngine(path)
    engine.load_weights(engine_weights(policy))  # as the run's start model
    engine.loads = 0
    sampler = VLLMSampler(engine, engine.load_weights)
    _, tokenizer = load_causal_lm(str(path))
    learner = PPOLearner(
        ActorCritic(policy), tokenizer, PPOSettings(epochs=1, minibatches=1),
        optimization=Optimization(lr=1e-2, total_steps=3),
        generation=GenerationSettings(max_new_tokens=5), prompt_format=PlainFormat(), seed=0,
        sampler=sampler,
    )  # fmt: skip
    return learner, sampler, engine


def test_ppo_samples_with_the_engine_and_pushes_the_weights_once_after_each_update(
    tiny_model_path, sampling_params
):
    learner, sampler, engine = _learner_with_engine(tiny_model_path)
    train_envs = make_text_vector_env("rlm/Sentiment-v0", 3, split="train")
    loads = []
    for iteration in range(3):
        result = learner.step(train_envs, iteration=iteration)
        loads.append(engine.loads)
        assert result.tokens == sum(len(r) for r in engine.sampled[-3:])
    # The first rollout samples the start weights; each later one after one push.
    assert loads == [0, 1, 2] and sampler.syncs == 2 and engine.cache_resets == 2
    assert sampler.stale  # the third update is pushed before the next rollout
    sampler.sync(learner.actor_critic.policy)
    assert torch.allclose(_logits(engine.model), _logits(learner.actor_critic.policy), atol=1e-5)
    # The run's sampling settings reached the engine (top-k 0: vLLM's -1, off).
    params = engine.params[-1]
    assert (params.max_tokens, params.temperature, params.top_k, params.n) == (5, 1.0, -1, 1)
    assert learner.tokenizer.eos_token_id in params.stop_token_ids


def test_a_checkpoint_loaded_marks_the_engines_weights_stale(tiny_model_path, tmp_path):
    learner, sampler, _ = _learner_with_engine(tiny_model_path)
    learner.save(tmp_path / "checkpoint")
    assert not sampler.stale
    learner.load(tmp_path / "checkpoint")
    assert sampler.stale


def test_use_vllm_is_refused_where_it_cannot_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[vllm\]'"):
        check_vllm_available(has_gpu=True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    with pytest.raises(ConfigError, match="needs a GPU"):
        check_vllm_available(has_gpu=False)
    check_vllm_available(has_gpu=True)


def test_grpo_and_rloo_hand_use_vllm_to_trls_colocated_engine():
    from trl import GRPOConfig

    from rlm.settings import RunSettings
    from rlm.trl_runner import GroupSettings, sampling_arguments

    assert "use_vllm" not in sampling_arguments(RunSettings(), GroupSettings())
    on = RunSettings(use_vllm=True, vllm_gpu_memory_utilization=0.5)
    config = GRPOConfig(
        output_dir="unused", use_cpu=True, **sampling_arguments(on, GroupSettings())
    )
    assert (config.use_vllm, config.vllm_mode, config.vllm_gpu_memory_utilization) == (
        True, "colocate", 0.5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("algorithm", "env_id", "message"),
    [
        ("sft", "rlm/Sentiment-v0", "sft does not sample with vLLM"),
        ("grpo", "rlm/GuessNumber-v0", "multi-turn.*drop --use-vllm"),
    ],
)
def test_use_vllm_is_refused_by_what_cannot_sample_with_it(
    monkeypatch, tiny_model_path, tmp_path, algorithm, env_id, message
):
    from rlm.settings import RunSettings
    from rlm.tracking import TrackingSettings
    from tests.helpers import load_experiment

    monkeypatch.setattr("rlm.runner.check_vllm_available", lambda: None)  # as on a GPU machine
    experiment = load_experiment(algorithm)
    run = RunSettings(
        model=str(tiny_model_path), env_id=env_id, steps=1, use_vllm=True,
        tracking=TrackingSettings(output_dir=tmp_path, wandb="disabled", tensorboard=False),
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        experiment.main(experiment.Config(run=run))
