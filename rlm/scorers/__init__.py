"""Ready-made rewards on text, each a batched ``(prompts, completions, **info) -> list[float]``.

See :mod:`rlm.rewards` for the interface.
"""

from rlm.scorers.lexicon import TextBlobPolarity, VaderSentiment
from rlm.scorers.similarity import SemanticSimilarity, load_sentence_model

__all__ = ["SemanticSimilarity", "TextBlobPolarity", "VaderSentiment", "load_sentence_model"]
