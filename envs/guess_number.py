"""``rlm/GuessNumber-v0``: find a secret number by guessing, told "higher" or "lower".

Task: the environment holds a secret integer in [1, 100] and asks for a guess; it answers
each guess with "Higher.", "Lower." or "Correct!" until the number is found or five turns
pass. Reward per turn: ``1 - 0.1 * turn`` for the correct guess (turn counted from 0),
otherwise 0, so the return is in [0, 1] and finding it sooner is worth more. Splits:
secrets divisible by 5 are for evaluation, the others for training.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Any

from rlm.env import TextEnv, select_split

LOW, HIGH = 1, 100
MAX_TURNS = 5
PROMPT = f"I am thinking of a whole number from {LOW} to {HIGH}. Guess it: answer with one number."
_NUMBER = re.compile(r"-?\d+")


def parse_guess(text: str) -> int | None:
    """The first integer in ``text``, or ``None``."""
    match = _NUMBER.search(text)
    return int(match.group()) if match else None


def guess_reward(
    prompts: list[str], completions: list[str], *, secret: list[int], turn: list[int], **info: Any
) -> list[float]:
    """``1 - 0.1 * turn`` when the completion's first number is the secret, else 0."""
    return [
        1.0 - 0.1 * t if parse_guess(c) == s else 0.0
        for c, s, t in zip(completions, secret, turn, strict=True)
    ]


class GuessNumberEnv(TextEnv):
    """Multi-turn: guess a secret number in [1, 100], told higher or lower; reward in [0, 1]."""

    reward_range = (0.0, 1.0)

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        in_eval = select_split(split, train=False, eval=True)
        tasks = [
            {"prompt": PROMPT, "secret": n} for n in range(LOW, HIGH + 1) if (n % 5 == 0) == in_eval
        ]
        super().__init__(tasks, guess_reward, max_turns=MAX_TURNS, render_mode=render_mode)
        self.split = split

    def respond(self, completion: str) -> tuple[str, bool]:
        guess = parse_guess(completion)
        secret = self.task["secret"]
        if guess is None:
            return "Please answer with one number.", False
        if guess == secret:
            return "Correct!", True
        return ("Higher." if guess < secret else "Lower."), False

    def example_action(self) -> str:
        return str(self.task["secret"])

    def task_key(self, task: Mapping[str, Any]) -> Hashable:
        return task["secret"]
