"""Smaller trained models: quantization and pruning, each through a well-kept library.

    python -m rlm compress runs/<run> --method int8-dynamic -o runs/<run>-int8
    python -m rlm compress runs/reward_models/lstm --method prune --sparsity 0.5 -o lstm-pruned

What is compressed, and what the output is, by the kind of ``SOURCE``:

- a **run folder** (any experiment's): its trained policy, the LoRA adapter merged into
  the model it started from. ``OUT`` is a run folder too: the run's ``config.json`` and
  ``summary.json``, and the compressed full model in ``policy/``, so that
  ``scripts/evaluate_run.py OUT`` evaluates it with the run's own prompts, seed and
  reward, and ``--model OUT/policy`` trains from it;
- a **model folder** (``save_pretrained``'s, or ``default``): ``OUT`` is a model folder
  that ``--model`` takes;
- a **reward-model folder** (rlm's LSTM or a sequence classifier, or its training run
  folder): ``OUT`` is a reward-model folder that ``--reward`` takes.

Methods (``--method``):

=================  ==========================================================================
``bf16``           bfloat16 weights (torch); half the size
``int8-dynamic``   int8 weights and dynamically quantized int8 activations in every linear
                   layer (torchao, through transformers' ``TorchAoConfig``)
``int8-weight``    int8 weights, float activations (torchao)
``int4-weight``    4-bit weights in groups (optimum-quanto ``qint4``: torchao 0.18's 4 bits
                   need the mslk kernel package, which does not install, or a GPU); the
                   output head stays as it is
``prune``          magnitude pruning (``torch.nn.utils.prune``) of the linear layers at
                   ``--sparsity``: ``unstructured`` (single weights), ``rows`` (whole
                   output rows, L2 norm) or ``heads`` (whole attention heads: their query
                   rows and output-projection columns); made permanent. With
                   ``--recover-steps N`` (run folders), the pruned policy is then fine-tuned
                   for N steps on the uncompressed policy's own samples of the training
                   prompts (TRL's SFTTrainer, the pruning masks kept), and made permanent.
=================  ==========================================================================

Embeddings, the output head and classification heads are left as they are (pruning and
4 bits), and the LSTM reward model takes ``bf16`` and ``prune`` only: its recurrent
weights are not linear layers, and neither torchao nor optimum-quanto quantizes them.
``compression.json`` in ``OUT`` records the method, its options, the source, the share of
zeros measured in the prunable weights (``measured_sparsity``) and the seconds it took.
Nothing is written on an error: ``OUT`` appears, whole, at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import prune
from transformers import AutoConfig, PreTrainedModel

from rlm.errors import ConfigError
from rlm.reward_models.folder import MODEL_SUBFOLDER, read_metadata

Method = Literal["bf16", "int8-dynamic", "int8-weight", "int4-weight", "prune"]
METHODS: tuple[str, ...] = ("bf16", "int8-dynamic", "int8-weight", "int4-weight", "prune")
Structure = Literal["unstructured", "rows", "heads"]
RECORD = "compression.json"
QUANTO_MAP = "quanto_qmap.json"
"""Marks a model folder holding optimum-quanto weights (see :func:`load_quanto`)."""
# Layers pruning and 4 bits leave alone: embeddings and output or classification heads.
_KEPT = ("embed", "lm_head", "score", "classifier", "pooler")


@dataclass(frozen=True)
class Compression:
    """A compression method and its options."""

    method: Method
    sparsity: float = 0.5
    """prune: the share of weights (or rows, or heads) set to zero, in [0, 1)."""
    structure: Structure = "unstructured"
    """prune: single weights, whole output rows, or whole attention heads."""
    recover_steps: int = 0
    """prune: fine-tune steps on the uncompressed policy's own samples (run folders only)."""
    recover_lr: float = 1e-5
    """prune: the recovery fine-tune's learning rate."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown compression method {self.method!r}: use one of {', '.join(METHODS)}"
            )
        if not 0 <= self.sparsity < 1:
            raise ConfigError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        if self.structure not in ("unstructured", "rows", "heads"):
            raise ConfigError(
                f"--structure must be unstructured, rows or heads, got {self.structure!r}"
            )
        if self.recover_steps < 0:
            raise ConfigError(f"--recover-steps must be >= 0, got {self.recover_steps}")
        if self.recover_steps and self.method != "prune":
            raise ConfigError(
                "--recover-steps fine-tunes a pruned policy: use it with --method prune"
            )
        if not self.recover_lr > 0:
            raise ConfigError(f"--recover-lr must be a positive number, got {self.recover_lr}")


SourceKind = Literal["run", "model", "reward"]


def source_kind(path: Path) -> SourceKind:
    """What ``path`` is: a run folder, a model folder or a reward-model folder.

    Raises:
        ConfigError: none of the three.
    """
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        if "algorithm" in config and "run" in config:
            return "run"
    if read_metadata(path) is not None or read_metadata(path / MODEL_SUBFOLDER) is not None:
        return "reward"
    if (path / "config.json").is_file():
        return "model"
    raise ConfigError(
        f"{path} is neither a run folder, a model folder nor a reward-model folder: pass a "
        "folder an rlm experiment or reward-model script wrote, or one save_pretrained wrote"
    )


# --- the methods ------------------------------------------------------------------------------


def _torchao_config(method: str) -> Any:
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )
    from transformers import TorchAoConfig

    config = (
        Int8DynamicActivationInt8WeightConfig()
        if method == "int8-dynamic"
        else Int8WeightOnlyConfig()
    )
    return TorchAoConfig(config)


def _linear_layers(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """The linear layers pruning and 4 bits may change (not embeddings or heads)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(part in name for part in _KEPT):
            yield name, module


def _attention_heads(model: nn.Module) -> Iterator[tuple[nn.Linear, nn.Linear, int]]:
    """Each attention block's query and output projections, with its number of heads."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None else None
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    for module in model.modules():
        q_proj, o_proj = getattr(module, "q_proj", None), getattr(module, "o_proj", None)
        if heads and isinstance(q_proj, nn.Linear) and isinstance(o_proj, nn.Linear):
            yield q_proj, o_proj, heads


def apply_pruning(
    model: nn.Module, sparsity: float, structure: Structure
) -> list[tuple[nn.Module, str]]:
    """Prune ``model`` in place (masks as ``torch.nn.utils.prune`` reparametrisations);
    return the ``(module, parameter)`` pairs pruned, for :func:`make_pruning_permanent`."""
    pruned: list[tuple[nn.Module, str]] = []
    if structure == "heads":
        found = False
        for q_proj, o_proj, heads in _attention_heads(model):
            found = True
            # A head's weights: its rows of q_proj and its columns of o_proj; the heads
            # whose output columns have the smallest L2 norm go.
            size = o_proj.in_features // heads
            o_weight = o_proj.weight.detach()
            norms = o_weight.view(o_weight.shape[0], heads, size).norm(dim=(0, 2))
            head_mask = torch.ones(heads)
            head_mask[norms.argsort()[: int(round(sparsity * heads))]] = 0
            per_dim = head_mask.repeat_interleave(size)
            prune.custom_from_mask(q_proj, "weight", per_dim[:, None].expand_as(q_proj.weight))
            prune.custom_from_mask(o_proj, "weight", per_dim[None, :].expand_as(o_weight))
            pruned += [(q_proj, "weight"), (o_proj, "weight")]
        if not found:
            raise ConfigError(
                "--structure heads needs a model with attention heads (q_proj, o_proj)"
            )
        return pruned
    for _, layer in _linear_layers(model):
        _prune_parameter(layer, "weight", sparsity, structure)
        pruned.append((layer, "weight"))
    for module in model.modules():  # an LSTM's recurrent and input weights
        if isinstance(module, nn.LSTM):
            for name, _ in list(module.named_parameters()):
                if name.startswith("weight_"):
                    _prune_parameter(module, name, sparsity, structure)
                    pruned.append((module, name))
    return pruned


def _prune_parameter(module: nn.Module, name: str, sparsity: float, structure: Structure) -> None:
    if structure == "rows":
        prune.ln_structured(module, name, amount=sparsity, n=2, dim=0)
    else:
        prune.l1_unstructured(module, name, amount=sparsity)


def make_pruning_permanent(pruned: list[tuple[nn.Module, str]]) -> None:
    """Fold the masks into the weights (``prune.remove``): plain dense tensors with zeros."""
    for module, name in pruned:
        prune.remove(module, name)


def sparsity_of(model: nn.Module) -> float:
    """The share of exact zeros in the weights pruning may touch."""
    zeros = total = 0
    for _, layer in _linear_layers(model):
        zeros += int((layer.weight == 0).sum())
        total += layer.weight.numel()
    return zeros / max(total, 1)


def quantize_int4(model: PreTrainedModel) -> PreTrainedModel:
    """optimum-quanto's 4-bit weights (in its groups of weights sharing a scale) on every
    linear layer but the heads, frozen."""
    from optimum.quanto import freeze, qint4, quantize

    excluded = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(part in name for part in _KEPT)
    ]
    quantize(model, weights=qint4, exclude=excluded)
    freeze(model)
    return model


def save_quanto(model: PreTrainedModel, folder: Path) -> None:
    """optimum-quanto's own serialisation: the quantized state dict as safetensors, its
    quantization map as JSON, the config; tied weights are stored once."""
    from optimum.quanto import quantization_map

    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tied = model.config.get_text_config().tie_word_embeddings
    state = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, folder / "model.safetensors")
    (folder / QUANTO_MAP).write_text(json.dumps(quantization_map(model)))


def load_quanto(model_class: Any, folder: Path, dtype: torch.dtype = torch.float32) -> Any:
    """Rebuild a model :func:`save_quanto` wrote: the architecture from its config, then
    optimum-quanto's ``requantize`` with the stored weights and map."""
    from optimum.quanto import requantize

    config = AutoConfig.from_pretrained(folder)
    model = model_class.from_config(config, dtype=dtype)
    weights = load_file(folder / "model.safetensors")
    mapping = json.loads((folder / QUANTO_MAP).read_text())
    requantize(model, weights, mapping, device=torch.device("cpu"))
    model.tie_weights()
    return model.eval()


# --- compressing a folder ---------------------------------------------------------------------


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A folder beside ``out`` to build in; renamed to ``out`` only when all went well."""
    if out.exists():
        raise ConfigError(f"{out} already exists: choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def compress_pretrained(model: PreTrainedModel, compression: Compression, folder: Path,
                        *, tokenizer: Any = None) -> None:  # fmt: skip
    """Compress a transformers model (a policy or a sequence classifier) into ``folder``."""
    method = compression.method
    if method in ("int8-dynamic", "int8-weight"):
        # torchao quantizes while loading: write the model at full precision, load it back
        # quantized; transformers then saves the quantized weights as safetensors.
        with tempfile.TemporaryDirectory() as full:
            model.save_pretrained(full)
            model = type(model).from_pretrained(full, quantization_config=_torchao_config(method))
        model.save_pretrained(folder)
    elif method == "int4-weight":
        save_quanto(quantize_int4(model), folder)
    elif method == "bf16":
        nn.Module.to(model, torch.bfloat16)  # (PreTrainedModel.to's stub takes no dtype)
        model.save_pretrained(folder)
    else:
        raise AssertionError(method)  # prune is handled by the caller (it may fine-tune first)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def record(folder: Path, compression: Compression, source: Path, **measured: Any) -> None:
    """``compression.json``: the method, its options, the source and what was measured."""
    data = {**asdict(compression), "source": str(source), **measured}
    (folder / RECORD).write_text(json.dumps(data, indent=2))
