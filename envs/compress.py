"""``rlm/Compress-v0``: shorten a text while keeping its meaning.

Task: the prompt gives a real quote or joke (:mod:`envs.short_texts`, at least eight
words) and a budget of half its length in characters; the completion should say the same
in fewer characters. Reward: ``max(similarity, 0) * min(1, budget / length)``, in [0, 1],
where ``similarity`` is the cosine similarity of the sentence embeddings of the completion
and the original (all-MiniLM-L6-v2, :mod:`rlm.scorers.similarity`) and ``length`` the
completion's length in characters: meaning counts fully within the budget and is scaled
down beyond it; an empty completion scores 0. Reported as ``reward/similarity`` and
``reward/length_factor``. Single turn. Splits: disjoint by text hash.
"""

from __future__ import annotations

from typing import Any

from envs.short_texts import short_texts
from rlm.env import TextEnv
from rlm.scorers.similarity import embed, load_sentence_model

BUDGET_FRACTION = 0.5
MIN_WORDS = 8


class CompressionReward:
    """Meaning kept (embedding similarity to the original) times the length budget's factor."""

    __name__ = "compression"
    reward_range = (0.0, 1.0)

    def __init__(self, model: str | None = None) -> None:
        self.model_name = model
        self.last_components: dict[str, list[float]] = {}

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        *,
        original: list[str],
        budget: list[int],
        **info: Any,
    ) -> list[float]:
        model = load_sentence_model(self.model_name)
        similarity = (
            (embed(model, list(completions)) * embed(model, list(original))).sum(-1).tolist()
        )
        rewards, kept, factors = [], [], []
        for completion, sim, limit in zip(completions, similarity, budget, strict=True):
            text = completion.strip()
            # Rounded: the last digits depend on the batch's padding, the reward must not.
            sim = round(max(0.0, min(1.0, float(sim))), 4) if text else 0.0
            factor = min(1.0, limit / len(text)) if text else 0.0
            kept.append(sim)
            factors.append(factor)
            rewards.append(sim * factor)
        self.last_components = {"similarity": kept, "length_factor": factors}
        return rewards


def prompt_for(text: str, budget: int) -> str:
    return f"Shorten this text to at most {budget} characters, keeping its meaning:\n{text}"


class CompressionEnv(TextEnv):
    """Shorten a quote or joke to half its length, keeping its meaning; reward in [0, 1]."""

    instruction = True  # the prompt asks for something: chat-formatted by default
    reward_range = CompressionReward.reward_range

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        tasks = []
        for row in short_texts(split, min_words=MIN_WORDS):
            budget = int(len(row["text"]) * BUDGET_FRACTION)
            tasks.append(
                {
                    "prompt": prompt_for(row["text"], budget),
                    "original": row["text"],
                    "budget": budget,
                    "source": row["source"],
                }
            )
        super().__init__(tasks, CompressionReward(), render_mode=render_mode)
        self.split = split

    def example_action(self) -> str:
        """The original's first words, cut to the budget."""
        return self.task["original"][: self.task["budget"]].rsplit(" ", 1)[0]
