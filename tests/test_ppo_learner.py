"""PPOLearner, the algorithm as one object: what one iteration does with its options.

python -m pytest tests/test_ppo_learner.py -q
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import make_text_vector_env
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_learner import Optimization, PPOLearner
from rlm.ppo_update import PPOSettings
from rlm.rollout import GenerationSettings, PlainFormat


def learner_for(model_path: Path, settings: PPOSettings) -> PPOLearner:
    torch.manual_seed(0)
    policy, tokenizer = load_causal_lm(str(model_path))
    return PPOLearner(
        ActorCritic(add_lora(policy, LoraSettings(r=4))), tokenizer, settings,
        optimization=Optimization(lr=1e-3, total_steps=10, schedule="linear"),
        generation=GenerationSettings(max_new_tokens=4), prompt_format=PlainFormat(), seed=0,
    )  # fmt: skip


@pytest.mark.parametrize(("grad_accum", "calls", "rows"), [(1, 4, 4), (2, 8, 2)])
def test_gradient_accumulation_splits_minibatches_and_keeps_the_optimizer_steps(
    tiny_model_path, monkeypatch, grad_accum, calls, rows
):
    learner = learner_for(tiny_model_path, PPOSettings(epochs=2, minibatches=2,
                                                       grad_accum=grad_accum))  # fmt: skip
    seen: list[tuple[int, bool]] = []
    forward = ActorCritic.forward

    def spy(self: ActorCritic, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append((input_ids.shape[0], torch.is_grad_enabled()))
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(ActorCritic, "forward", spy)
    result = learner.step(make_text_vector_env("rlm/Sentiment-v0", 8, split="train"), 0)

    # 8 episodes, 2 epochs x 2 minibatches of 4, each in grad_accum micro-batches.
    trained = [n for n, grad in seen if grad]
    assert trained == [rows] * calls
    # The optimizer and the schedule step once per minibatch, however it is split.
    steps = {int(s["step"]) for s in learner.optimizer.state_dict()["state"].values()}
    assert steps == {4}
    assert result.metrics["train/lr"] == pytest.approx(1e-3 * (1 - 4 / 40))
    assert result.episodes == 8 and 8 <= result.tokens <= 32


def test_an_iterations_prompts_depend_on_its_number_not_on_what_ran_before(tiny_model_path):
    """What a resumed run relies on: iteration 2 draws the same tasks whether or not
    iterations 0 and 1 ran (and changed the weights) in this process."""

    def tasks_of(learner: PPOLearner, vector_env: Any, iteration: int) -> list[int]:
        learner.step(vector_env, iteration)
        return [int(env._task_index) for env in vector_env.envs]

    settings = PPOSettings(epochs=1, minibatches=1)
    vector_env = make_text_vector_env("rlm/Sentiment-v0", 4, split="train")
    fresh = tasks_of(learner_for(tiny_model_path, settings), vector_env, 2)
    trained = learner_for(tiny_model_path, settings)
    before = [tasks_of(trained, vector_env, i) for i in (0, 1)]
    assert tasks_of(trained, vector_env, 2) == fresh
    assert fresh not in before  # other iterations draw other tasks
