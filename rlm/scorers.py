"""Ready-made reward functions on text.

Each is a batched callable ``(prompts, completions, **info) -> list[float]``
(see :mod:`rlm.rewards`).
"""

from __future__ import annotations

from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


class VaderSentiment:
    """VADER's compound sentiment of the completion, in [-1, 1] (positive is high).

    Example:
        >>> VaderSentiment()(["My day"], ["was wonderful!", "was awful."])
        [0.6114, -0.4588]
    """

    __name__ = "vader_sentiment"
    reward_range = (-1.0, 1.0)

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        return [float(self._analyzer.polarity_scores(c)["compound"]) for c in completions]
