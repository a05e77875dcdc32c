"""``rlm/Search-v0``: write a search query that finds a given document.

Task: the prompt shows a document (a real quote or joke, :mod:`envs.short_texts`); the
completion is a query of at most eight words. A sentence-embedding retriever
(all-MiniLM-L6-v2, cosine similarity) ranks the document among seven distractors from the
same split, fixed per task. Reward: ``(8 - rank) / 7``, in [0, 1]: 1 when the document
ranks first, 0 when last; a query that is empty or longer than eight words scores 0.
Reported as ``reward/rank`` (1 to 8, 9 for a rejected query). Single turn. Splits:
documents disjoint by text hash; distractors come from the document's own split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.short_texts import short_texts
from rlm.env import TextEnv
from rlm.scorers.similarity import embed, load_sentence_model

CANDIDATES = 8
MAX_QUERY_WORDS = 8
MIN_WORDS = 8
SEED = 7


class RetrievalRankReward:
    """``(candidates - rank) / (candidates - 1)`` of the target under a dense retriever."""

    __name__ = "retrieval_rank"
    reward_range = (0.0, 1.0)

    def __init__(self, model: str | None = None, max_words: int = MAX_QUERY_WORDS) -> None:
        self.model_name = model
        self.max_words = max_words
        self.last_components: dict[str, list[float]] = {}

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        *,
        documents: list[list[str]],
        target: list[int],
        **info: Any,
    ) -> list[float]:
        model = load_sentence_model(self.model_name)
        queries = embed(model, list(completions))
        flat = [doc for docs in documents for doc in docs]
        vectors = embed(model, flat)
        rewards, ranks = [], []
        offset = 0
        for i, (query, docs, answer) in enumerate(zip(completions, documents, target, strict=True)):
            n = len(docs)
            # Rounded: the last digits depend on the batch's padding, the rank must not.
            scores = [round(s, 5) for s in (vectors[offset : offset + n] @ queries[i]).tolist()]
            offset += n
            words = len(query.split())
            if words == 0 or words > self.max_words:
                ranks.append(float(n + 1))
                rewards.append(0.0)
                continue
            rank = 1 + sum(s > scores[answer] for j, s in enumerate(scores) if j != answer)
            ranks.append(float(rank))
            rewards.append((n - rank) / (n - 1))
        self.last_components = {"rank": ranks}
        return rewards


def prompt_for(document: str) -> str:
    return (
        f"Write a search query of at most {MAX_QUERY_WORDS} words that would find this "
        f"document:\n{document}"
    )


class SearchQueryEnv(TextEnv):
    """Write a query that ranks a document first among distractors; reward in [0, 1]."""

    instruction = True  # the prompt asks for something: chat-formatted by default
    reward_range = RetrievalRankReward.reward_range

    def __init__(self, split: str = "train", render_mode: str | None = None) -> None:
        texts = [row["text"] for row in short_texts(split, min_words=MIN_WORDS)]
        rng = np.random.default_rng(SEED)
        tasks = []
        for index, document in enumerate(texts):
            others = [j for j in range(len(texts)) if j != index]
            picked = rng.choice(others, size=CANDIDATES - 1, replace=False)
            candidates = [texts[j] for j in picked]
            slot = int(rng.integers(CANDIDATES))
            candidates.insert(slot, document)
            tasks.append({"prompt": prompt_for(document), "documents": candidates, "target": slot})
        super().__init__(tasks, RetrievalRankReward(), render_mode=render_mode)
        self.split = split

    def example_action(self) -> str:
        """The document's first words: a query that usually finds it."""
        document = self.task["documents"][self.task["target"]]
        return " ".join(document.split()[:MAX_QUERY_WORDS])
