"""Load any reward-model folder into one object that turns texts into output scores.

:func:`load_reward_model` reads an rlm LSTM folder, an rlm classifier or preference
folder, or any Hugging Face sequence-classification folder (its own tokenizer, whatever
it is), and returns a :class:`LoadedRewardModel` whose :meth:`~LoadedRewardModel.logits`
scores a batch of texts. Inputs the model might choke on are made safe here: very long
texts are cut (keeping the start, or the end when a suffix such as EOS must stay), and a
text that tokenizes to nothing (an empty string) is scored as a single token rather than
an all-padding row.

Example:
    >>> model = load_reward_model("runs/reward_models/lstm")  # doctest: +SKIP
    >>> model.labels, model.logits(["what a lovely day"]).shape  # doctest: +SKIP
    (['negative', 'neutral', 'positive'], torch.Size([1, 3]))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlm.errors import ConfigError, ModelNotFoundError
from rlm.files import user_path
from rlm.models import load_pretrained
from rlm.reward_models.folder import find_model_folder, read_metadata
from rlm.reward_models.lstm import load_lstm
from rlm.reward_models.training import Encoder, logits_of
from rlm.reward_models.transformer import TokenizerEncoder, prepare_tokenizer

# Characters kept per allowed token before tokenizing: a guard against megabyte inputs.
_CHARS_PER_TOKEN = 16


@dataclass
class LoadedRewardModel:
    """A reward model ready to score text.

    Attributes:
        model: the torch module, in eval mode, on ``device``.
        encode: texts -> the model's padded inputs.
        labels: output names, in order.
        kind: ``"lstm"``, ``"classifier"`` or ``"preference"``.
        score_prompt: whether the model was trained on prompt + completion.
        text_suffix: appended to every text before encoding (as in training).
        max_length: the longest input in tokens; longer texts are truncated.
        keep_end: truncate from the left (keep the end of the text), not the right.
        device: where the model runs.
    """

    model: torch.nn.Module
    encode: Encoder
    labels: list[str]
    kind: str
    score_prompt: bool
    text_suffix: str
    max_length: int
    keep_end: bool
    device: torch.device

    @torch.no_grad()
    def logits(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Raw outputs for ``texts``: shape ``[len(texts), len(labels)]``, on the CPU."""
        limit = self.max_length * _CHARS_PER_TOKEN
        prepared = []
        for text in texts:
            text = str(text)
            if len(text) > limit:
                text = text[-limit:] if self.keep_end else text[:limit]
            prepared.append(text + self.text_suffix)
        rows = []
        for start in range(0, len(prepared), batch_size):
            batch = self.encode(prepared[start : start + batch_size])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            rows.append(logits_of(self.model(**batch)).float().cpu())
        return torch.cat(rows) if rows else torch.empty(0, len(self.labels))


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_hub_id(path: str | Path) -> bool:
    """``org/name`` that is not a local path: a Hugging Face Hub model id."""
    text = str(path)
    return bool(_HUB_ID.match(text)) and not user_path(text).exists()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _model_max_length(tokenizer: Any, config: Any, requested: int | None) -> int:
    limits = [requested or 512]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits)


def load_reward_model(
    path: str | Path, *, device: str | None = None, max_length: int | None = None
) -> LoadedRewardModel:
    """Load an rlm reward-model folder or a Hugging Face sequence-classification folder.

    Args:
        path: the model folder, a training run folder with a ``model/`` subfolder, or a
            Hub id (``org/name``) of a sequence-classification model.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        max_length: the longest input in tokens (default: the folder's, at most 512 and
            the model's own limit).

    Raises:
        ModelNotFoundError: nothing loadable at ``path`` (or the hub is unreachable).
        ConfigError: a LoRA adapter folder (merge it first) or an unreadable model.
    """
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hub_id = str(path) if _looks_like_hub_id(path) else None
    folder = Path(str(path)) if hub_id else find_model_folder(path)
    meta = {} if hub_id else (read_metadata(folder) or {})
    kind = meta.get("kind", "classifier")
    if kind == "lstm":
        model, vocab, labels = load_lstm(folder)
        if max_length:
            vocab.max_length = max_length
        return LoadedRewardModel(
            model=model.to(target),
            encode=vocab.encode,
            labels=labels,
            kind="lstm",
            score_prompt=False,
            text_suffix="",
            max_length=vocab.max_length,
            keep_end=False,
            device=target,
        )
    if not hub_id and not (folder / "config.json").exists():
        if (folder / "adapter_config.json").exists():
            raise ConfigError(
                f"{folder} holds a LoRA adapter, not a model; merge it first "
                "(peft: model.merge_and_unload().save_pretrained(folder))"
            )
        raise ModelNotFoundError(f"{folder} has no config.json; it is not a model folder")
    source = hub_id or str(folder)
    try:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(source))
        hf_model = load_pretrained(AutoModelForSequenceClassification, source, torch.float32)
    except OSError as exc:  # no hub, an unknown id, or missing files
        raise ModelNotFoundError(
            f"reward model {source!r} is not a local folder and could not be loaded from the "
            f"Hugging Face Hub ({_first_line(exc)}); pass an existing folder"
        ) from exc
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"could not load {source!r} as a sequence-classification model "
            f"({_first_line(exc)}); pass a folder written by the reward-model training "
            "scripts or by AutoModelForSequenceClassification.save_pretrained"
        ) from exc
    hf_model.config.pad_token_id = tokenizer.pad_token_id
    hf_model.eval().to(target)
    id2label = hf_model.config.id2label or {}
    labels = meta.get("labels") or [
        str(id2label.get(i, f"LABEL_{i}")) for i in range(hf_model.config.num_labels)
    ]
    limit = _model_max_length(tokenizer, hf_model.config, max_length or meta.get("max_length"))
    text_suffix = str(meta.get("text_suffix", ""))
    # Keep the end of long texts when the suffix (EOS) carries the score, as in training.
    keep_end = bool(text_suffix)
    tokenizer.truncation_side = "left" if keep_end else "right"
    return LoadedRewardModel(
        model=hf_model,
        encode=TokenizerEncoder(tokenizer, limit),
        labels=list(labels),
        kind=kind,
        score_prompt=bool(meta.get("score_prompt", kind == "preference")),
        text_suffix=text_suffix,
        max_length=limit,
        keep_end=keep_end,
        device=target,
    )
