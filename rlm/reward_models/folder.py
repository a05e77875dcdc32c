"""The reward-model folder: what a trained model leaves on disk so a reward can load it.

Every folder rlm writes holds ``rlm_reward.json`` next to the weights, saying how to read
them and how the reward should build its input text:

``kind``
    ``"lstm"`` (rlm's word-level LSTM: ``vocab.json`` + ``model.safetensors``),
    ``"classifier"`` (a Hugging Face sequence-classification model, written by
    ``save_pretrained``) or ``"preference"`` (a one-output model trained on preference
    pairs with TRL's ``RewardTrainer``, also ``save_pretrained``).
``labels``
    the class names, in output order (``["reward"]`` for a preference model).
``score_prompt``
    whether the model was trained on prompt + completion (preference pairs) or on the
    text alone (classifiers).
``text_suffix``
    text appended to every input at training time (TRL appends the EOS token), so the
    reward appends it too.

A training run folder keeps the model in a ``model/`` subfolder, beside its config,
metrics and logs; :func:`find_model_folder` accepts either. A Hugging Face folder
without ``rlm_reward.json`` (a model from the Hub, say) loads too: its labels come from
``config.id2label``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlm.errors import ModelNotFoundError
from rlm.files import user_path

METADATA_FILE = "rlm_reward.json"
MODEL_SUBFOLDER = "model"
FORMAT_VERSION = 1
KINDS = ("lstm", "classifier", "preference")


def write_metadata(folder: Path | str, *, kind: str, labels: list[str], **fields: Any) -> None:
    """Write ``rlm_reward.json`` into ``folder`` (made if missing)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, "kind": kind, "labels": labels, **fields}
    (folder / METADATA_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_metadata(folder: Path | str) -> dict[str, Any] | None:
    """The folder's ``rlm_reward.json``, or None for a plain Hugging Face folder."""
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def find_model_folder(path: Path | str) -> Path:
    """The folder holding the weights: ``path`` itself, or its ``model/`` subfolder.

    Raises:
        ModelNotFoundError: nothing loadable is there, with what to pass instead.
    """
    folder = user_path(path)
    if not folder.exists():
        raise ModelNotFoundError(
            f"reward model path {str(path)!r} does not exist; pass a folder written by "
            "scripts/train_reward_classifier.py or scripts/train_preference_reward.py, "
            "or a Hugging Face sequence-classification folder"
        )
    for candidate in (folder, folder / MODEL_SUBFOLDER):
        if (candidate / METADATA_FILE).exists() or (candidate / "config.json").exists():
            if candidate == folder and (folder / MODEL_SUBFOLDER).is_dir():
                # A run folder also has a config.json (the training config): prefer model/.
                continue
            return candidate
    raise ModelNotFoundError(
        f"reward model folder {str(path)!r} holds neither {METADATA_FILE} nor config.json "
        f"(nor a {MODEL_SUBFOLDER}/ subfolder with them); pass the output folder of a "
        "reward-model training script or a save_pretrained folder"
    )
