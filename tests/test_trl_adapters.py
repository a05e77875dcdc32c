"""The adapters from rlm environments to TRL: datasets, reward functions, the rollout function.

    python -m pytest tests/test_trl_adapters.py -q

The trainers themselves run in tests/test_experiment_trl.py; here each adapter is held to
what TRL 1.16 passes in and expects back (see ``GRPOTrainer._generate`` and
``_calculate_rewards``), and the multi-turn rollout runs with the tiny model.
"""

from __future__ import annotations

from itertools import groupby
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import tests.fixture_envs  # noqa: F401  (registers rlm_test/Chatty-v0)
from rlm.env import TextEnv
from rlm.errors import ConfigError, RewardError
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic
from rlm.rollout import Episodes, PlainFormat
from rlm.trl_adapters import (
    EnvReward,
    EnvRollout,
    EpisodeReward,
    TokenCounter,
    episodes_to_rollout,
    parse_task_key,
    task_dataset,
    task_key,
)
from tests.fixture_envs import ChattyEnv, length_reward


class PartsReward:
    """Reward = length part + keyword part; reports both, and records its keyword arguments."""

    __name__ = "parts"

    def __init__(self) -> None:
        self.last_components: dict[str, list[float]] = {}
        self.seen: dict[str, Any] = {}

    def __call__(self, prompts, completions, **info):
        self.seen = {"prompts": prompts, **info}
        length = [len(c) / 10 for c in completions]
        keyword = [float("yes" in c) for c in completions]
        self.last_components = {"length": length, "keyword": keyword}
        return [a + b for a, b in zip(length, keyword, strict=True)]


def single_turn_env(reward=None) -> TextEnv:
    tasks = [{"prompt": "Say yes", "topic": "a"}, {"prompt": "Say no", "topic": "b"}]
    return TextEnv(tasks, reward or PartsReward())


def test_single_turn_dataset_carries_prompt_and_metadata():
    rows = list(task_dataset(single_turn_env()))
    assert rows[1] == {"prompt": "Say no", "topic": "b", "task_index": 1, "turn": 0}
    chat = task_dataset(single_turn_env(), prompt_format="chat")
    assert chat[0]["prompt"] == [{"role": "user", "content": "Say yes"}]


def test_multi_turn_dataset_names_tasks_by_key():
    env = ChattyEnv()
    assert env.multi_turn and not single_turn_env().multi_turn
    dataset = task_dataset(env, limit=3)
    assert dataset["prompt"] == [task_key(0), task_key(1), task_key(2)]
    assert parse_task_key("rlm-task:12") == 12
    with pytest.raises(ConfigError, match="task key"):
        parse_task_key("Tell me a story")


def test_env_reward_scores_like_the_environment_and_logs_components():
    reward = PartsReward()
    counter = TokenCounter()
    adapter = EnvReward(single_turn_env(reward), counter)
    logged: dict[str, float] = {}
    # What TRL passes: prompts, completions, the dataset's other columns, and its own extras.
    values = adapter(
        ["Say yes", "Say no"],
        ["yes sir", "nope"],
        topic=["a", "b"],
        task_index=[0, 1],
        turn=[0, 0],
        completion_ids=[[1, 2, 3], [4, 5]],
        trainer_state=object(),
        log_extra=lambda *a: None,
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert values == pytest.approx([0.7 + 1.0, 0.4])
    # The environment's reward saw the task's columns, not TRL's extras.
    assert set(reward.seen) == {"prompts", "topic", "task_index", "turn"}
    assert logged == pytest.approx({"reward/length": 0.55, "reward/keyword": 0.5})
    assert (counter.tokens, counter.completions) == (5, 2)


def test_env_reward_reads_chat_messages_and_checks_the_reward():
    reward = PartsReward()
    adapter = EnvReward(single_turn_env(reward))
    prompts = [[{"role": "user", "content": "Say yes"}]]
    completions = [[{"role": "assistant", "content": "yes"}]]
    assert adapter(prompts, completions, topic=["a"]) == pytest.approx([1.3])
    assert reward.seen["prompts"] == ["Say yes"]  # the observation, as in PPO

    broken = EnvReward(single_turn_env(lambda prompts, completions, **info: [float("nan")]))
    with pytest.raises(RewardError, match="non-finite"):
        broken(["Say yes"], ["x"], topic=["a"])
    with pytest.raises(ConfigError, match="multi-turn"):
        EnvReward(ChattyEnv())


def test_episodes_become_trl_rollout_lists():
    # Two episodes: prompts of 2 and 3 tokens (left-padded to 3), responses of 4 and 2
    # tokens (right-padded to 4); the first has an environment reply (mask 0) in the middle.
    pad = 0
    input_ids = torch.tensor([[pad, 11, 12, 21, 22, 91, 23], [13, 14, 15, 24, 25, pad, pad]])
    attention = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    action_mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    episodes = Episodes(
        input_ids=input_ids, attention_mask=attention, action_mask=action_mask,
        scores=torch.zeros(2, 4), response_start=3, prompts=["a", "b"],
        completions=[["x", "y"], ["z"]], replies=[["r"], []], rewards=[[0.0, 1.0], [0.5]],
        infos=[{}, {}], reward_components=[{"reward/part": 0.25}, {}],
    )  # fmt: skip
    out = episodes_to_rollout(episodes)
    assert out["prompt_ids"] == [[11, 12], [13, 14, 15]]
    assert out["completion_ids"] == [[21, 22, 91, 23], [24, 25]]
    assert out["env_mask"] == [[1, 1, 0, 1], [1, 1]]
    assert out["logprobs"] is None
    assert out["episode_return"] == [1.0, 0.5]

    logged: dict[str, float] = {}
    values = EpisodeReward()(
        ["rlm-task:0", "rlm-task:1"], ["", ""],
        episode_return=out["episode_return"], episode_components=out["episode_components"],
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )  # fmt: skip
    assert values == [1.0, 0.5] and logged == {"reward/part": 0.25}
    with pytest.raises(ConfigError, match="EnvRollout"):
        EpisodeReward()(["p"], ["c"])


def fake_trainer(model: Any) -> SimpleNamespace:
    """The attributes of GRPOTrainer that a rollout_func reads."""
    accelerator = SimpleNamespace(
        process_index=0, num_processes=1, unwrap_model=lambda module: module
    )
    args = SimpleNamespace(max_completion_length=4, temperature=1.0, top_k=0, top_p=1.0)
    return SimpleNamespace(
        model=model, accelerator=accelerator, args=args, state=SimpleNamespace(global_step=3)
    )


def test_rollout_func_plays_the_environment_and_masks_its_replies(tiny_model_path):
    model, tokenizer = load_causal_lm(str(tiny_model_path))
    counter = TokenCounter()
    rollout = EnvRollout("rlm_test/Chatty-v0", tokenizer, PlainFormat(), seed=1, counter=counter)
    prompts = [task_key(5), task_key(5), task_key(9), task_key(9)]  # 2 generations per prompt
    out = rollout(prompts, fake_trainer(model))

    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == 4
    assert tokenizer.decode(out["prompt_ids"][2]).endswith("about the number 9.")
    for ids, mask in zip(out["completion_ids"], out["env_mask"], strict=True):
        assert len(ids) == len(mask)
        # Three turns of at most 4 policy tokens; the environment's two replies are masked.
        assert 3 <= sum(mask) <= 12
        env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        assert env_text.count("Tell me more.") == 2
    assert counter.tokens == sum(sum(m) for m in out["env_mask"])
    # Each episode's return is the sum of what the environment's reward gave its turns:
    # Chatty scores each turn's completion by its length.
    for ids, mask, episode_return in zip(
        out["completion_ids"], out["env_mask"], out["episode_return"], strict=True
    ):
        pairs = zip(ids, mask, strict=True)
        turns = [[t for t, _ in run] for m, run in groupby(pairs, key=lambda x: x[1]) if m]
        texts = [tokenizer.decode(turn, skip_special_tokens=True) for turn in turns]
        assert len(texts) == 3
        assert episode_return == pytest.approx(sum(length_reward([""] * 3, texts)))
    assert (
        EpisodeReward()(prompts, [""] * 4, episode_return=out["episode_return"])
        == (out["episode_return"])
    )
    assert isinstance(rollout.policy, ActorCritic)  # wrapped once, on the first call
