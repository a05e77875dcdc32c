"""Transformer text classifiers: a pretrained trunk with a classification head.

A trunk is ``"default"`` (the embedded SmolLM2-135M-Instruct), ``"minilm"`` (the packaged
all-MiniLM-L6-v2), a local folder or a Hub id; it is loaded with
``AutoModelForSequenceClassification``, which adds a freshly initialised head. Tuning is
``"head"`` (the trunk frozen: only the head, and BERT's pooler, learn; cheap and hard to
overfit), ``"lora"`` (low-rank adapters on the attention projections plus the head, with
peft) or ``"full"`` (every weight). A LoRA model is merged before saving, so the saved
folder is a plain ``save_pretrained`` folder that any transformers code loads.

Example:
    >>> model, tokenizer = build_transformer_classifier("minilm", ["neg", "pos"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlm.errors import ConfigError, ModelNotFoundError
from rlm.models import resolve_model_path
from rlm.reward_models.folder import write_metadata

Tuning = Literal["head", "lora", "full"]
TUNINGS = ("head", "lora", "full")


def resolve_trunk(trunk: str) -> str:
    """``"default"``, ``"minilm"``, a folder or a Hub id -> what ``from_pretrained`` takes.

    Raises:
        ModelNotFoundError: a path that does not exist.
    """
    if trunk == "minilm":
        from rlm.scorers.similarity import default_sentence_model_path

        return str(default_sentence_model_path())
    return resolve_model_path(trunk)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Right padding and a pad token: decoder tokenizers (SmolLM2) often have none."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an EOS token; "
                "give it a pad token before training a classifier on it"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dropout_overrides(config_keys: set[str], dropout: float | None) -> dict[str, Any]:
    """Config fields that set dropout on the trunks we know (BERT-like, Llama-like)."""
    if dropout is None:
        return {}
    names = ("hidden_dropout_prob", "classifier_dropout", "attention_dropout")
    return {name: dropout for name in names if name in config_keys}


def build_transformer_classifier(
    trunk: str,
    label_names: list[str],
    *,
    tuning: Tuning = "head",
    dropout: float | None = None,
    lora_rank: int = 8,
    lora_alpha: int = 16,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A sequence classifier on ``trunk`` with ``len(label_names)`` outputs, ready to train.

    Args:
        trunk: ``"default"``, ``"minilm"``, a folder or a Hub id.
        label_names: the classes, in output order (stored as ``id2label``).
        tuning: which weights learn, see the module docstring.
        dropout: overrides the trunk's dropout where its config has a field for it.
        lora_rank: LoRA rank (``tuning="lora"``).
        lora_alpha: LoRA scaling (``tuning="lora"``).

    Raises:
        ConfigError: an unknown tuning. ModelNotFoundError: the trunk cannot be loaded.
    """
    if tuning not in TUNINGS:
        raise ConfigError(f"tuning must be one of {', '.join(TUNINGS)}, got {tuning!r}")
    path = resolve_trunk(trunk)
    try:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
        config_keys = set(AutoConfig.from_pretrained(path).to_dict())
        model: Any = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            dtype=torch.float32,
            use_safetensors=True,  # a pickled .bin could run code as it loads
            **_dropout_overrides(config_keys, dropout),
        )
    except OSError as exc:
        raise ModelNotFoundError(f"could not load trunk {trunk!r} from {path!r}: {exc}") from exc
    # Sequence classifiers on decoder trunks find each row's last token via the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    if tuning == "head":
        for param in model.base_model.parameters():
            param.requires_grad = False
        for name, param in model.base_model.named_parameters():
            if name.startswith("pooler."):  # BERT's pooler is part of its classification head
                param.requires_grad = True
    elif tuning == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.05
        )
        from rlm.policy import peft_quietly

        with peft_quietly():
            model = get_peft_model(model, lora)
    return model, tokenizer


class TokenizerEncoder:
    """Texts -> right-padded, truncated ``input_ids`` and ``attention_mask`` tensors.

    A class rather than a closure so that a reward holding one can be pickled (vector
    environments and pickling checks need that). A row that tokenizes to nothing (an
    empty text, for a tokenizer that adds no special tokens) attends to one padding
    token instead of none, which would make attention divide by zero.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 128) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if ids.shape[1] == 0:  # every text was empty
            ids = torch.full((len(texts), 1), int(self.tokenizer.pad_token_id), dtype=torch.long)
            mask = torch.zeros_like(ids)
        mask[mask.sum(dim=1) == 0, 0] = 1
        return {"input_ids": ids, "attention_mask": mask}


def transformer_encoder(
    tokenizer: PreTrainedTokenizerBase, max_length: int = 128
) -> TokenizerEncoder:
    """The encoder of ``tokenizer``: see :class:`TokenizerEncoder`."""
    return TokenizerEncoder(tokenizer, max_length)


def merged(model: Any) -> PreTrainedModel:
    """The plain transformers model: LoRA adapters merged into the weights, if any."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    for param in model.parameters():
        param.requires_grad = True  # a saved model should not remember a frozen trunk
    return model


def save_transformer_classifier(
    folder: Path | str,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    label_names: list[str],
    *,
    kind: Literal["classifier", "preference"] = "classifier",
    score_prompt: bool = False,
    text_suffix: str = "",
    max_length: int = 128,
    **fields: Any,
) -> Path:
    """``save_pretrained`` the (merged) model and tokenizer, plus ``rlm_reward.json``."""
    folder = Path(folder)
    plain = merged(model)
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_metadata(
        folder,
        kind=kind,
        labels=list(label_names),
        score_prompt=score_prompt,
        text_suffix=text_suffix,
        max_length=max_length,
        **fields,
    )
    return folder
