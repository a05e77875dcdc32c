"""``rlm/Arithmetic-v0``: solve an arithmetic word problem with a verifiable answer.

Task: the prompt is a short word problem (addition, subtraction, multiplication, sharing
equally, or a two-step mix) generated from a fixed seed with names, objects and numbers
drawn at random; the answer is a whole number. Reward: 1 when the parsed answer equals it,
else 0, in [0, 1]. The answer is parsed robustly (:func:`parse_answer`): ``#### 42``,
``\\boxed{42}``, "the answer is 42", otherwise the last number in the text, with thousands
separators, a currency sign, a trailing ``.0`` or a number word up to twenty accepted.
Single turn. Splits: generated from different seeds, with any eval prompt removed from
train, so they are disjoint.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from rlm.env import SPLITS, TextEnv
from rlm.errors import ConfigError

SEEDS = {"train": 1, "eval": 2}
TASKS_PER_SPLIT = {"train": 5000, "eval": 500}
NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi",
         "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq")  # fmt: skip
THINGS = ("apples", "pencils", "marbles", "stickers", "books", "coins", "cookies", "shells",
          "cards", "stamps", "eggs", "flowers")  # fmt: skip
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen twenty")  # fmt: skip
NUMBER_WORDS = {word: value for value, word in enumerate(_WORDS.split(" "))}
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_MARKED = [
    re.compile(rf"####\s*({_NUMBER})"),
    re.compile(rf"\\boxed\{{\s*({_NUMBER})\s*\}}"),
    re.compile(rf"answer\s*(?:is|:|=)?\s*({_NUMBER})", re.IGNORECASE),
]
_ANY_NUMBER = re.compile(_NUMBER)
_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def _to_int(token: str) -> int | None:
    token = token.replace("$", "").replace(",", "")
    try:
        value = float(token)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def parse_answer(text: str) -> int | None:
    """The whole-number answer in ``text``, or ``None`` when there is none.

    Example:
        >>> [parse_answer(t) for t in ["#### 1,200", "The answer is $35.", "so 3 + 4 = 7", "x"]]
        [1200, 35, 7, None]
    """
    for pattern in _MARKED:
        matches = pattern.findall(text)
        if matches:
            return _to_int(matches[-1])
    numbers = _ANY_NUMBER.findall(text)
    if numbers:
        return _to_int(numbers[-1].rstrip(".,"))
    words = _NUMBER_WORD.findall(text)
    return NUMBER_WORDS[words[-1].lower()] if words else None


def exact_answer(
    prompts: list[str], completions: list[str], *, answer: list[int], **info: Any
) -> list[float]:
    """1 when the completion's parsed answer equals ``answer``, else 0."""
    return [float(parse_answer(c) == a) for c, a in zip(completions, answer, strict=True)]


Problem = tuple[str, int]


def _add(rng: np.random.Generator, name: str, thing: str) -> Problem:
    a, b = (int(x) for x in rng.integers(2, 100, size=2))
    return (
        f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?",
        a + b,
    )


def _subtract(rng: np.random.Generator, name: str, thing: str) -> Problem:
    a = int(rng.integers(20, 200))
    b = int(rng.integers(1, a))
    return f"{name} had {a} {thing} and gave away {b}. How many {thing} are left?", a - b


def _multiply(rng: np.random.Generator, name: str, thing: str) -> Problem:
    a, b = int(rng.integers(2, 13)), int(rng.integers(2, 30))
    return (
        f"{name} has {a} boxes with {b} {thing} in each box. How many {thing} is that in all?",
        a * b,
    )


def _share(rng: np.random.Generator, name: str, thing: str) -> Problem:
    friends, each = int(rng.integers(2, 10)), int(rng.integers(2, 20))
    return (
        f"{name} shares {friends * each} {thing} equally among {friends} friends. "
        f"How many {thing} does each friend get?",
        each,
    )


def _two_steps(rng: np.random.Generator, name: str, thing: str) -> Problem:
    a, b, c = int(rng.integers(2, 10)), int(rng.integers(2, 20)), int(rng.integers(1, 30))
    return (
        f"{name} buys {a} packs of {b} {thing} and then finds {c} more. "
        f"How many {thing} does {name} have?",
        a * b + c,
    )


TEMPLATES: tuple[Callable[[np.random.Generator, str, str], Problem], ...] = (
    _add,
    _subtract,
    _multiply,
    _share,
    _two_steps,
)


def _generate(seed: int, count: int, exclude: frozenset[str]) -> list[Problem]:
    rng = np.random.default_rng(seed)
    problems: dict[str, int] = {}
    while len(problems) < count:
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        name, thing = NAMES[int(rng.integers(len(NAMES)))], THINGS[int(rng.integers(len(THINGS)))]
        question, answer = template(rng, name, thing)
        if question not in exclude:
            problems.setdefault(question, answer)
    return list(problems.items())


@functools.cache
def problems(split: str) -> tuple[Problem, ...]:
    """The (question, answer) pairs of ``split``; no eval question is in train."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    evaluation = _generate(SEEDS["eval"], TASKS_PER_SPLIT["eval"], frozenset())
    if split == "eval":
        return tuple(evaluation)
    return tuple(
        _generate(SEEDS["train"], TASKS_PER_SPLIT["train"], frozenset(q for q, _ in evaluation))
    )


INSTRUCTION = "Solve the problem. End your reply with the answer as: #### <number>"


class ArithmeticEnv(TextEnv):
    """Solve a generated arithmetic word problem; exact-answer reward in [0, 1]."""

    instruction = True  # the prompt asks for something: chat-formatted by default
    reward_range = (0.0, 1.0)

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        tasks = [
            {"prompt": f"{question}\n{INSTRUCTION}", "answer": answer}
            for question, answer in problems(split)
        ]
        super().__init__(tasks, exact_answer, render_mode=render_mode)
        self.split = split

    def example_action(self) -> str:
        return f"#### {self.task['answer']}"
