"""Ready-made rewards on text, each a batched ``(prompts, completions, **info) -> list[float]``.

See :mod:`rlm.rewards` for the interface and :func:`make_reward` to build any of them, or
a weighted composite, from a string such as ``"0.7*vader + 0.3*repetition"``.
"""

from typing import Any

from rlm.scorers.composite import Composite, Normalized
from rlm.scorers.lexicon import TextBlobPolarity, VaderSentiment
from rlm.scorers.reference import Bleu, Chrf, Rouge
from rlm.scorers.registry import available_rewards, make_reward
from rlm.scorers.rules import (
    KeywordsPresent,
    LengthTarget,
    RegexMatch,
    RepetitionPenalty,
    UnfinishedPenalty,
)
from rlm.scorers.similarity import SemanticSimilarity, load_sentence_model

__all__ = [
    "Bleu",
    "Chrf",
    "ClassifierReward",
    "Composite",
    "KeywordsPresent",
    "LengthTarget",
    "Normalized",
    "RegexMatch",
    "RepetitionPenalty",
    "Rouge",
    "SemanticSimilarity",
    "TextBlobPolarity",
    "UnfinishedPenalty",
    "VaderSentiment",
    "available_rewards",
    "load_sentence_model",
    "make_reward",
]


def __getattr__(name: str) -> Any:
    # ClassifierReward imports transformers and peft (seconds): only when it is asked for.
    if name == "ClassifierReward":
        from rlm.scorers.classifier import ClassifierReward

        return ClassifierReward
    raise AttributeError(f"module 'rlm.scorers' has no attribute {name!r}")
