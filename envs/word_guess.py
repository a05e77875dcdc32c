"""``rlm/WordGuess-v0``: find a secret word by asking about its letters and guessing.

Task: the environment holds a secret common English noun of four to six letters (from a
real word list, :mod:`envs.wordlist`) and says its length. Each turn the policy asks a
yes/no question about a letter ("Does it contain the letter e?", "Does it start with s?",
"Does it end with t?") or guesses a word; the environment answers "Yes."/"No.", "No, it is
not <guess>." or "Correct!", for up to eight turns. Reward per turn: ``1 - 0.1 * turn`` on
the correct guess (turn counted from 0), else 0, so the return is in [0, 1] and finding the
word sooner is worth more. The guess of a turn is its last word with the secret's length.
Splits: secrets disjoint by a hash of the word.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Any

from envs.wordlist import common_words, split_of
from rlm.env import TextEnv, select_split

MAX_TURNS = 8
LENGTHS = (4, 5, 6)
_LETTER_QUESTION = re.compile(
    r"\b(contain|contains|have|has|include|includes|start|starts|begin|begins|end|ends)\b"
    r"[^?.!]*?(?:\bletter\s+['\"]?([a-z])\b|['\"]([a-z])['\"]|\b([a-z])\s*(?=[?.!]|$))",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z]+")


def parse_guess(text: str, length: int) -> str | None:
    """The last word of ``text`` with ``length`` letters, lower-cased, or ``None``."""
    words = [w.lower() for w in _WORD.findall(text) if len(w) == length]
    return words[-1] if words else None


def answer_question(text: str, secret: str) -> str | None:
    """The answer to a yes/no question about a letter of ``secret``, or ``None``."""
    match = _LETTER_QUESTION.search(text)
    if match is None:
        return None
    verb = match.group(1).lower()
    letter = next(g for g in match.groups()[1:] if g).lower()
    if verb.startswith(("start", "begin")):
        yes = secret.startswith(letter)
    elif verb.startswith("end"):
        yes = secret.endswith(letter)
    else:
        yes = letter in secret
    return "Yes." if yes else "No."


def guess_reward(
    prompts: list[str], completions: list[str], *, secret: list[str], turn: list[int], **info: Any
) -> list[float]:
    """``1 - 0.1 * turn`` when the completion guesses the secret, else 0."""
    return [
        1.0 - 0.1 * t if parse_guess(c, len(s)) == s and answer_question(c, s) is None else 0.0
        for c, s, t in zip(completions, secret, turn, strict=True)
    ]


def prompt_for(length: int) -> str:
    return (
        f"I am thinking of a common English noun with {length} letters. Ask me yes/no "
        "questions about its letters (for example: Does it contain the letter e?) or guess "
        f"the word. You have {MAX_TURNS} turns."
    )


def secrets(split: str) -> list[str]:
    """The secret nouns of ``split``."""
    nouns = [w for w in common_words("NN") if len(w) in LENGTHS]
    return select_split(
        split,
        train=[w for w in nouns if split_of(w, 0.15) == "train"],
        eval=[w for w in nouns if split_of(w, 0.15) == "eval"],
    )


class WordGuessEnv(TextEnv):
    """A multi-turn word guessing game with yes/no letter questions; reward in [0, 1]."""

    reward_range = (0.0, 1.0)

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        tasks = [{"prompt": prompt_for(len(w)), "secret": w} for w in secrets(split)]
        super().__init__(tasks, guess_reward, max_turns=MAX_TURNS, render_mode=render_mode)
        self.split = split

    def respond(self, completion: str) -> tuple[str, bool]:
        secret = self.task["secret"]
        answer = answer_question(completion, secret)
        if answer is not None:
            return answer, False
        guess = parse_guess(completion, len(secret))
        if guess == secret:
            return "Correct!", True
        if guess is not None:
            return f"No, it is not {guess}.", False
        return (
            f"Ask about a letter (Does it contain the letter e?) or guess a {len(secret)}-letter "
            "word."
        ), False

    def example_action(self) -> str:
        return str(self.task["secret"])

    def task_key(self, task: Mapping[str, Any]) -> Hashable:
        return task["secret"]
