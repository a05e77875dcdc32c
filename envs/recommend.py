"""``rlm/Recommend-v0``: ask a simulated user about their taste, then recommend a film.

Task: the prompt lists six films, each with a genre, an era (classic or recent) and a
length (short or long); titles are made from real adjectives and nouns
(:mod:`envs.wordlist`), everything drawn from a fixed seed. The simulated user has hidden
preferences, one value of each attribute, and exactly one film matches all three. Each
turn the policy asks about attributes ("Do you like comedy?", "Which genre do you like?",
"Classic or recent?") and the user answers truthfully, or it recommends one film by its
title, which ends the episode; naming several titles gets "Please recommend just one
film." Reward on the recommending turn: ``matches / 3 * (1 - 0.1 * turn)`` where
``matches`` counts the film's attributes the user prefers (turn counted from 0); else 0.
The return is in [0, 1]. At most five turns. Splits: tasks put in train or eval by a hash
of their prompt and preferences, so none is in both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from envs.wordlist import common_words, split_of
from rlm.env import SPLITS, TextEnv
from rlm.errors import ConfigError

MAX_TURNS = 5
FILMS = 6
SEED = 11
TASKS_PER_SPLIT = {"train": 1000, "eval": 100}
GENRES = ("comedy", "drama", "thriller", "romance", "documentary", "animation", "horror",
          "western")  # fmt: skip
ERAS = ("classic", "recent")
LENGTHS = ("short", "long")
ATTRIBUTES = ("genre", "era", "length")
# Words a question may use for each value.
SYNONYMS = {
    "classic": ("classic", "old", "older"),
    "recent": ("recent", "new", "newer", "modern"),
    "short": ("short", "shorter", "quick"),
    "long": ("long", "longer", "epic"),
}
_ASKS = {
    "genre": re.compile(r"\b(genre|kind|type|sort)\b", re.IGNORECASE),
    "era": re.compile(r"\b(era|when|decade|age)\b", re.IGNORECASE),
    "length": re.compile(r"\b(length|how long|runtime|duration)\b", re.IGNORECASE),
}
Film = list[str]  # [title, genre, era, length]


def mentioned_films(text: str, films: Sequence[Film]) -> list[Film]:
    """The films whose title appears in ``text`` (case-insensitive)."""
    folded = " ".join(text.casefold().split())
    return [film for film in films if film[0].casefold() in folded]


def matches(film: Film, preference: Sequence[str]) -> int:
    """How many of the film's genre, era and length the user prefers."""
    return sum(value == wanted for value, wanted in zip(film[1:], preference, strict=True))


def recommendation_reward(
    prompts: list[str],
    completions: list[str],
    *,
    films: list[list[Film]],
    preference: list[list[str]],
    turn: list[int],
    **info: Any,
) -> list[float]:
    """``matches / 3 * (1 - 0.1 * turn)`` when exactly one film is named, else 0."""
    rewards = []
    for completion, task_films, wanted, t in zip(completions, films, preference, turn, strict=True):
        named = mentioned_films(completion, task_films)
        rewards.append(matches(named[0], wanted) / 3 * (1 - 0.1 * t) if len(named) == 1 else 0.0)
    return rewards


def user_reply(text: str, preference: Sequence[str]) -> str | None:
    """The simulated user's answer to questions about attributes, or ``None``."""
    genre, era, length = preference
    words = set(re.findall(r"[a-z]+", text.casefold()))
    answers = []
    for value in GENRES:
        if value in words:
            answers.append(f"I like {value}." if value == genre else f"Not {value}.")
    for value, names in SYNONYMS.items():
        if words & set(names):
            liked = value in (era, length)
            answers.append(f"{value.capitalize()}: {'yes' if liked else 'no'}.")
    if not answers:
        for attribute, wanted in zip(ATTRIBUTES, preference, strict=True):
            if _ASKS[attribute].search(text):
                answers.append(f"My favourite {attribute} is {wanted}.")
    return " ".join(answers) or None


def _title(rng: np.random.Generator, adjectives: Sequence[str], nouns: Sequence[str]) -> str:
    adjective = adjectives[int(rng.integers(len(adjectives)))]
    noun = nouns[int(rng.integers(len(nouns)))]
    return f"The {adjective.capitalize()} {noun.capitalize()}"


def prompt_for(films: Sequence[Film]) -> str:
    lines = [f"- {title} ({genre}, {era}, {length})" for title, genre, era, length in films]
    return (
        "You are recommending a film to me. These are available:\n"
        + "\n".join(lines)
        + f"\nAsk me about my taste, then recommend one film by its title. You have {MAX_TURNS}"
        " turns."
    )


@functools.cache
def recommendation_tasks(split: str) -> tuple[dict[str, Any], ...]:
    """Generated tasks of ``split``: films, the user's preference, the prompt."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    adjectives, nouns = common_words("JJ"), common_words("NN")
    rng = np.random.default_rng(SEED)
    tasks: list[dict[str, Any]] = []
    while len(tasks) < TASKS_PER_SPLIT[split]:
        preference = [
            GENRES[int(rng.integers(len(GENRES)))],
            ERAS[int(rng.integers(2))],
            LENGTHS[int(rng.integers(2))],
        ]
        films: list[Film] = [[_title(rng, adjectives, nouns), *preference]]
        while len(films) < FILMS:
            film = [
                _title(rng, adjectives, nouns),
                GENRES[int(rng.integers(len(GENRES)))],
                ERAS[int(rng.integers(2))],
                LENGTHS[int(rng.integers(2))],
            ]
            titles = [f[0] for f in films]
            if matches(film, preference) < 3 and film[0] not in titles:
                films.append(film)
        films = [films[int(i)] for i in rng.permutation(FILMS)]
        prompt = prompt_for(films)
        if split_of(prompt + " ".join(preference)) == split:
            tasks.append({"prompt": prompt, "films": films, "preference": preference})
    return tuple(tasks)


class RecommendationEnv(TextEnv):
    """Multi-turn: ask a simulated user about their taste, recommend a film; reward in [0, 1]."""

    reward_range = (0.0, 1.0)

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        super().__init__(
            recommendation_tasks(split),
            recommendation_reward,
            max_turns=MAX_TURNS,
            render_mode=render_mode,
        )
        self.split = split

    def respond(self, completion: str) -> tuple[str, bool]:
        named = mentioned_films(completion, self.task["films"])
        if len(named) == 1:
            return "Thanks, I will watch it.", True
        if len(named) > 1:
            return "Please recommend just one film.", False
        reply = user_reply(completion, self.task["preference"])
        if reply is not None:
            return reply, False
        return "Ask me about genre, era or length, or recommend one film by its title.", False

    def example_action(self) -> str:
        best = max(self.task["films"], key=lambda film: matches(film, self.task["preference"]))
        return f"I recommend {best[0]}."

    def task_key(self, task: Mapping[str, Any]) -> Hashable:
        return task["prompt"], tuple(task["preference"])
