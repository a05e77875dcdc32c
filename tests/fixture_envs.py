"""Environments for the experiment's tests: broken rewards, and a dense multi-turn task.

Named on the command line as ``tests.fixture_envs:rlm_test/NaNReward-v0``.
"""

from __future__ import annotations

from typing import Any

from rlm.env import TextEnv, register_text_env, select_split


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


# --- environments that each break one rule of ``rlm check-env`` ----------------------------


def sometimes_two(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    """Out of the declared range [0, 1] for completions with a "!"."""
    return [2.0 if "!" in c else 0.0 for c in completions]


def always_half(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [0.5] * len(completions)


_calls = [0]


def drifting(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    """Depends on how often it was called before: not reproducible from a seed."""
    _calls[0] += 1
    return [(_calls[0] % 7) / 7 for _ in completions]


def fails_on_emoji(prompts: list[str], completions: list[str], **info: Any) -> list[float]:
    return [float(c.encode("ascii").count(b"!") > 0) for c in completions]


class FlawedEnv(TextEnv):
    """An environment with one flaw, chosen by ``flaw``, for the checker's tests."""

    reward_range = (0.0, 1.0)

    def __init__(self, flaw: str, split: str = "train", render_mode: str | None = None):
        special = {"range": sometimes_two, "constant": always_half, "drift": drifting,
                   "emoji": fails_on_emoji}  # fmt: skip
        reward = special.get(flaw, length_reward)
        start = select_split(split, train=0, eval=0 if flaw == "splits" else 100)
        tasks = [{"prompt": f"Tell me about the number {i}."} for i in range(start, start + 20)]
        max_turns = 10_000 if flaw == "endless" else 1
        super().__init__(tasks, reward, max_turns=max_turns, render_mode=render_mode)
        if flaw == "undeclared":
            self.reward_range = (-float("inf"), float("inf"))
        self.flaw = flaw

    def respond(self, completion: str) -> tuple[str, bool]:
        return ("Go on.", False) if self.flaw == "endless" else ("", True)


FLAWS = {
    "range": "rewards",
    "constant": "rewards",
    "undeclared": "rewards",
    "drift": "determinism",
    "emoji": "bad input",
    "splits": "splits",
    "endless": "episode length",
}
"""Each flaw and the check that must catch it."""

for _flaw in FLAWS:
    register_text_env(
        f"rlm_test/Flawed-{_flaw}-v0", "tests.fixture_envs:FlawedEnv", kwargs={"flaw": _flaw}
    )
register_text_env("rlm_test/Sound-v0", "tests.fixture_envs:FlawedEnv", kwargs={"flaw": "none"})
