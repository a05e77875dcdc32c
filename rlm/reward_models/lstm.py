"""The baseline reward model: a word-level bidirectional LSTM text classifier in torch.

Text is lower-cased and split into words and punctuation; words seen fewer than
``min_count`` times in the training split map to ``<unk>``, as does anything the
vocabulary has never seen (other languages, emoji), so every input gets a score. The
classifier is embedding -> dropout -> LSTM (packed, so padding never changes a score) ->
last hidden states of both directions -> dropout -> linear.

It trains in minutes on one CPU thread, which makes it the floor the transformer
classifiers have to beat.

Example:
    >>> vocab = Vocabulary.build(["good day", "bad day"], min_count=1)
    >>> model = LSTMClassifier(len(vocab), num_labels=2)
    >>> model(**vocab.encode(["good", ""])).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlm.errors import ConfigError, ModelNotFoundError
from rlm.reward_models.folder import read_metadata, write_metadata
from rlm.validation import check_ranges

PAD, UNK = "<pad>", "<unk>"
_WORDS = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def tokenize_words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks.

    Example:
        >>> tokenize_words("I LOVE it!!")
        ['i', 'love', 'it', '!', '!']
    """
    return _WORDS.findall(text.lower())


class Vocabulary:
    """Word <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, tokens: list[str], max_length: int = 64) -> None:
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}
        self.max_length = max_length

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        min_count: int = 2,
        max_size: int = 30_000,
        max_length: int = 64,
    ) -> Vocabulary:
        """The ``max_size`` most frequent words seen at least ``min_count`` times."""
        counts = Counter(word for text in texts for word in tokenize_words(text))
        words = [w for w, c in counts.most_common(max_size - 2) if c >= min_count]
        return cls([PAD, UNK, *words], max_length=max_length)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask``; long texts keep their start.

        An empty text becomes one ``<unk>``, so every row has a length of at least one.
        """
        unk = self.index[UNK]
        rows = [
            [self.index.get(w, unk) for w in tokenize_words(t)][: self.max_length] or [unk]
            for t in texts
        ]
        width = max((len(r) for r in rows), default=1)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


@dataclass(frozen=True)
class LSTMSettings:
    """Architecture of :class:`LSTMClassifier` (saved with the weights)."""

    embedding_dim: int = 128
    """LSTM word-embedding size."""
    hidden_size: int = 128
    """LSTM hidden size per direction."""
    num_layers: int = 1
    """Stacked LSTM layers."""
    dropout: float = 0.3
    """LSTM dropout: on the embeddings, between stacked layers and before the classifier."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a size below 1 or a dropout outside [0, 1)."""
        check_ranges(self, at_least_one=["embedding_dim", "hidden_size", "num_layers"])
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")


class LSTMClassifier(nn.Module):
    """Embedding + bidirectional LSTM + dropout + linear classifier over words."""

    def __init__(
        self, vocab_size: int, num_labels: int, settings: LSTMSettings | None = None
    ) -> None:
        super().__init__()
        s = settings or LSTMSettings()
        self.settings = s
        self.embedding = nn.Embedding(vocab_size, s.embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            s.embedding_dim,
            s.hidden_size,
            num_layers=s.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=s.dropout if s.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(s.dropout)
        self.classifier = nn.Linear(2 * s.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits, one row per text."""
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        embedded = self.dropout(self.embedding(input_ids))
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, lengths, batch_first=True, enforce_sorted=False
        )
        _, (hidden, _) = self.lstm(packed)
        # The last layer's final states, forward and backward direction.
        features = torch.cat([hidden[-2], hidden[-1]], dim=-1)
        return self.classifier(self.dropout(features))


def save_lstm(
    folder: Path | str, model: LSTMClassifier, vocab: Vocabulary, label_names: list[str]
) -> Path:
    """Write the model, vocabulary and ``rlm_reward.json`` (kind ``"lstm"``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    (folder / "vocab.json").write_text(json.dumps(vocab.tokens), encoding="utf-8")
    write_metadata(
        folder,
        kind="lstm",
        labels=list(label_names),
        score_prompt=False,
        text_suffix="",
        max_length=vocab.max_length,
        architecture=asdict(model.settings),
    )
    return folder


def load_lstm(folder: Path | str) -> tuple[LSTMClassifier, Vocabulary, list[str]]:
    """Load what :func:`save_lstm` wrote: the model (in eval mode), vocabulary, labels.

    Raises:
        ModelNotFoundError: the folder is not an rlm LSTM folder.
    """
    folder = Path(folder)
    meta = read_metadata(folder)
    if meta is None or meta.get("kind") != "lstm":
        raise ModelNotFoundError(f"{folder} is not an rlm LSTM reward-model folder")
    vocab = Vocabulary(
        json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
        max_length=int(meta["max_length"]),
    )
    labels = list(meta["labels"])
    model = LSTMClassifier(len(vocab), len(labels), LSTMSettings(**meta["architecture"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.eval()
    return model, vocab, labels
