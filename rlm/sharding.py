"""What rlm's own code needs for a model that FSDP2 shards (``accelerate launch`` with
``configs/accelerate/fsdp.yaml``): full weights for generation and the passes without
gradients, and whole tensors for checkpoints.

accelerate shards an :class:`~rlm.policy.ActorCritic` with ``fully_shard`` on each decoder
layer and on the whole, so a parameter lives as a :class:`~torch.distributed.tensor.DTensor`
whose shards are spread over the processes, and a layer gathers its weights only when its
own ``forward`` runs. rlm's rollout calls the policy's ``generate`` and the reference's
trunk, not the wrapped module's ``forward``, and each process's ``generate`` stops at its
own last end-of-text, so gathering per call would leave the embeddings sharded and the
processes waiting on each other. :func:`full_weights` gathers every weight once for such a
phase instead (the memory of one whole model per process, as colocated generation needs
anyway) and shards them again after it.

On a model that is not sharded, every function here does what the plain code does.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> with full_weights(model):  # not sharded: nothing to gather
    ...     y = model(torch.zeros(1, 2))
    >>> is_sharded(model)
    False
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule

from rlm.errors import ConfigError

if TYPE_CHECKING:
    from rlm.policy import ActorCritic

# Whole tensors, on the CPU of the main process only (the others get an empty dict).
_WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def sharded_modules(model: torch.nn.Module) -> list[FSDPModule]:
    """The modules of ``model`` that FSDP2 shards (none when it is not sharded)."""
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 shards ``model``'s parameters over the processes."""
    return bool(sharded_modules(model))


@contextlib.contextmanager
def full_weights(model: torch.nn.Module) -> Iterator[None]:
    """Every weight of ``model`` whole on every process for the block, then sharded again.

    Every process must enter it (gathering is a collective operation); inside, calls need
    not match across processes, since no weight is gathered or released until the end.
    """
    modules = sharded_modules(model)
    if not modules:
        yield
        return
    # FSDP2 takes the first sharded module to run forward as the root; a decoder layer
    # run first by ``generate`` would claim that, so the outermost one is made root here.
    modules[0]._get_fsdp_state()._lazy_init()
    groups = [group for m in modules for group in m._get_fsdp_state()._fsdp_param_groups]
    after_forward = [group.post_forward_mesh_info for group in groups]
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
        # What each unit did after a forward before (the root keeps its weights), restored.
        for group, mesh_info in zip(groups, after_forward, strict=True):
            group.post_forward_mesh_info = mesh_info


def whole_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    """``model.state_dict()`` with whole tensors: for a sharded model, gathered by every
    process (call it on all) onto the main process's CPU; the others get ``{}``."""
    if not is_sharded(model):
        return model.state_dict()
    return get_model_state_dict(model, options=_WHOLE)


def whole_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """The optimizer's state to save: its own ``state_dict()``, or for a sharded model the
    whole state keyed by parameter name (every process calls it; the main one gets it)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    return get_optimizer_state_dict(model, optimizer, options=_WHOLE)


def save_pretrained_policy(
    actor_critic: ActorCritic, folder: Path, state: dict[str, Any] | None = None
) -> None:
    """Write an :class:`~rlm.policy.ActorCritic`'s policy as ``save_pretrained`` does (the
    adapter alone with LoRA), from ``state`` (:func:`whole_state_dict`'s, main process)
    when the model is sharded."""
    policy = actor_critic.policy
    if state is None or not is_sharded(actor_critic):
        policy.save_pretrained(str(folder))
        return
    prefix = "policy."
    own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    policy.save_pretrained(str(folder), state_dict=own)


def load_whole_state(
    model: torch.nn.Module, tensors: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Load whole tensors (some of the model's) into ``model``, sharded or not; returns the
    missing and the unexpected keys as ``load_state_dict`` does."""
    if not is_sharded(model):
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        return list(missing), list(unexpected)
    expected = set(model.state_dict())
    unexpected = sorted(set(tensors) - expected)
    if not unexpected:
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, tensors, options=options)
    return sorted(expected - set(tensors)), unexpected


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Restore what :func:`whole_optimizer_state` returned, sharded or not. A state keyed
    by parameter name (from a sharded run) loads into either kind of run."""
    keys = list(state.get("state", {}))
    by_name = bool(keys) and isinstance(keys[0], str)
    if by_name or (is_sharded(model) and not keys):
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, state, options=options)
    elif is_sharded(model):
        raise ConfigError(
            "this checkpoint's optimizer state comes from a run that was not sharded; a "
            "sharded run resumes only from a sharded run's checkpoint"
        )
    else:
        optimizer.load_state_dict(state)


def sharding_launch() -> str | None:
    """``"FSDP"`` or ``"DeepSpeed"`` when ``accelerate launch`` asked for it (its
    environment variables say so), else None."""
    launches = (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"))
    for variable, name in launches:
        if os.environ.get(variable, "false").lower() == "true":
            return name
    return None


def check_sharding_launch(has_gpu: bool | None = None) -> None:
    """Refuse an FSDP or DeepSpeed launch on a machine without a GPU, where accelerate
    would silently run every process with the whole model (plain data parallel)."""
    has_gpu = torch.cuda.is_available() if has_gpu is None else has_gpu
    name = sharding_launch()
    if name is not None and not has_gpu:
        raise ConfigError(
            f"this launch asks for {name}, but accelerate shards a model only on GPUs and "
            "this machine has none: it would train every process on the whole model. "
            "On CPUs launch with configs/accelerate/cpu_ddp.yaml"
        )
