"""Lexicon sentiment scorers: VADER and TextBlob, rule-based and instant.

Both score the completion alone (not the prompt), in [-1, 1], positive high.
"""

from __future__ import annotations

from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


class VaderSentiment:
    """VADER's compound sentiment of the completion, in [-1, 1] (positive is high).

    VADER knows emoticons, emoji names, capitals and "!!!"; an empty completion scores 0.

    Example:
        >>> VaderSentiment()(["My day"], ["was wonderful!", "was awful."])
        [0.6114, -0.4588]
    """

    __name__ = "vader"
    reward_range = (-1.0, 1.0)

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        return [float(self._analyzer.polarity_scores(c)["compound"]) for c in completions]


class TextBlobPolarity:
    """TextBlob's pattern-lexicon polarity of the completion, in [-1, 1].

    It needs no corpus download. Words it does not know (other languages, emoji) count as
    neutral, so such text scores 0.

    Example:
        >>> TextBlobPolarity()(["My day"], ["was wonderful!", "was awful."])
        [1.0, -1.0]
    """

    __name__ = "textblob"
    reward_range = (-1.0, 1.0)

    def __init__(self) -> None:
        from textblob import TextBlob  # imports nltk, a second: only when used

        self._blob = TextBlob

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        return [float(self._blob(c).sentiment.polarity) for c in completions]
