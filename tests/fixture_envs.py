"""Environments for the experiment's tests: broken rewards, and a dense multi-turn task.

Named on the command line as ``tests.fixture_envs:rlm_test/NaNReward-v0``.
"""

from __future__ import annotations

from typing import Any

from rlm.env import TextEnv, register_text_env


def nan_reward(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [float("nan")] * len(completions)


def short_reward(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [0.0] * (len(completions) - 1)


class BrokenRewardEnv(TextEnv):
    def __init__(self, reward: str = "nan", split: str = "train", render_mode: str | None = None):
        tasks = [{"prompt": f"Tell me about the number {i}."} for i in range(64)]
        fn = {"nan": nan_reward, "short": short_reward}[reward]
        super().__init__(tasks, fn, render_mode=render_mode)


register_text_env("rlm_test/NaNReward-v0", "tests.fixture_envs:BrokenRewardEnv")
register_text_env(
    "rlm_test/ShortReward-v0", "tests.fixture_envs:BrokenRewardEnv", kwargs={"reward": "short"}
)


def length_reward(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [min(len(c), 100) / 100 for c in completions]


class ChattyEnv(TextEnv):
    """Three turns; each answer is rewarded for its length, so even a random model learns."""

    def __init__(self, split: str = "train", render_mode: str | None = None):
        tasks = [{"prompt": f"Tell me a story about the number {i}."} for i in range(64)]
        super().__init__(tasks, length_reward, max_turns=3, render_mode=render_mode)

    def respond(self, completion: str) -> tuple[str, bool]:
        return "Tell me more.", False


register_text_env("rlm_test/Chatty-v0", "tests.fixture_envs:ChattyEnv")
