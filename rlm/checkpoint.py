"""Checkpoints that let a run continue exactly where it stopped, whatever its algorithm.

A run keeps its checkpoints in ``checkpoints/checkpoint-<step>/`` (the naming TRL's
trainers use). The algorithm writes its own state there first (PPO: below; GRPO, RLOO and
SFT: their trainer's files), then the runner writes ``run_state.json`` (the step, the
token and episode counters, the evaluations, and a manifest of every file in the folder
with its size and SHA-256), atomically. A folder without it is incomplete (the run died
while writing it); one whose files no longer match the manifest (truncated, a full disk,
changed) is corrupt. :func:`find_resume_checkpoint` skips both, newest first, in favour
of the previous checkpoint; two complete ones are kept for that.

PPO's training state (:func:`save_training_state`) is:

- ``policy/``: the policy as ``save_pretrained`` writes it (the LoRA adapter alone with
  LoRA, else the full model), loadable by peft or transformers for later use;
- ``trainable.safetensors``: every trainable tensor of the actor-critic (adapter or
  policy, value head, value model), what resuming loads;
- ``optimizer.pt``, ``scheduler.json``, ``rng_state_<rank>.json``: the optimizer's
  tensors and the schedule's and random generators' positions. Nothing is unpickled on
  load: the optimizer file is read with ``weights_only=True`` (tensors and numbers only)
  and the rest is JSON.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from safetensors.torch import load_file, save_file

from rlm.errors import ConfigError
from rlm.files import manifest, manifest_problem, write_json
from rlm.policy import ActorCritic
from rlm.sharding import (
    load_optimizer_state,
    load_whole_state,
    save_pretrained_policy,
    whole_optimizer_state,
    whole_state_dict,
)

CHECKPOINT_PREFIX = "checkpoint-"
RUN_STATE = "run_state.json"
_STEP = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def unsafe_pickle_error(path: Path) -> ConfigError:
    """The error for a checkpoint file that ``torch.load(weights_only=True)`` refused."""
    return ConfigError(
        f"checkpoint {path.parent}: {path.name} holds more than tensors and numbers; rlm "
        "refuses to unpickle it (that could run code). Resume only checkpoints you trust"
    )


def find_unsafe_pickle(folder: Path) -> Path | None:
    """The first pickled file in ``folder`` (``*.pt``, ``*.pth``, ``*.bin``) that holds more
    than ``torch.load(weights_only=True)`` allows, or None."""
    for path in sorted(folder.glob("*")):
        if path.suffix in (".pt", ".pth", ".bin"):
            try:
                torch.load(path, weights_only=True, map_location="cpu")
            except pickle.UnpicklingError:
                return path
    return None


def checkpoint_path(folder: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes: ``folder/checkpoint-<step>``."""
    return folder / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint folder was saved at."""
    match = _STEP.match(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint} is not a checkpoint folder ({CHECKPOINT_PREFIX}<step>)")
    return int(match.group(1))


def checkpoint_folders(folder: Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder in ``folder``, complete or not, oldest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _STEP.match(p.name)), key=checkpoint_step)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder`` (they have ``run_state.json``), oldest first."""
    return [p for p in checkpoint_folders(folder) if (p / RUN_STATE).is_file()]


def complete_checkpoint(checkpoint: Path, state: dict[str, Any], keep: int = 2) -> None:
    """Write ``run_state.json`` (``state`` and the folder's manifest) into ``checkpoint``,
    which makes it complete, and delete all but the newest ``keep`` complete checkpoints
    beside it (main process only)."""
    write_json(checkpoint / RUN_STATE, {**state, "files": manifest(checkpoint)})
    for old in list_checkpoints(checkpoint.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def read_run_state(checkpoint: Path) -> dict[str, Any]:
    """The runner's state saved with a checkpoint."""
    return dict(json.loads((checkpoint / RUN_STATE).read_text()))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (incomplete, or corrupt), or None."""
    if not (checkpoint / RUN_STATE).is_file():
        return f"incomplete (no {RUN_STATE}: the run stopped while writing it)"
    try:
        state = read_run_state(checkpoint)
    except (ValueError, OSError) as exc:
        return f"corrupt ({RUN_STATE} does not read: {exc})"
    problem = manifest_problem(checkpoint, state.get("files", {}))
    return None if problem is None else f"corrupt ({problem})"


def find_resume_checkpoint(folder: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint in ``folder`` that can be resumed from (None if there is
    none), and the newer ones skipped, each with why."""
    skipped: list[tuple[Path, str]] = []
    for checkpoint in reversed(checkpoint_folders(folder)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint, skipped
        skipped.append((checkpoint, problem))
    return None, skipped


def _trainable(model: ActorCritic, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().contiguous().cpu() for k, v in state.items() if k in trainable}


def _rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy form: (name, keys, pos, gauss, cached)
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():  # sampling on a GPU draws from its own generators
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]]
        )


def save_training_state(
    accelerator: Accelerator | PartialState,
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    folder: Path,
) -> None:
    """Write the model's trainable tensors, the optimizer, the schedule and every
    process's RNG states into ``folder``."""
    accelerator.wait_for_everyone()
    # Every process takes part in gathering a sharded model's tensors; the main one writes.
    state = whole_state_dict(model)
    optimizer_state = whole_optimizer_state(model, optimizer)
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        save_pretrained_policy(model, folder / "policy", state)
        save_file(_trainable(model, state), folder / "trainable.safetensors")
        torch.save(optimizer_state, folder / "optimizer.pt")
        (folder / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
    accelerator.wait_for_everyone()
    rng_file = folder / f"rng_state_{accelerator.process_index}.json"
    rng_file.write_text(json.dumps(_rng_state()))
    accelerator.wait_for_everyone()


def load_training_state(
    accelerator: Accelerator | PartialState,
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    folder: Path,
) -> None:
    """Restore what :func:`save_training_state` wrote."""
    # Read on the CPU ("cpu:0", a multi-process CPU run's device, is no device to
    # safetensors): load_state_dict copies each tensor to its parameter's device.
    tensors = load_file(folder / "trainable.safetensors")
    missing, unexpected = load_whole_state(model, tensors)
    if unexpected:
        raise RuntimeError(f"checkpoint {folder} holds unknown tensors: {unexpected[:3]}")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lacking = sorted(trainable & set(missing))
    if lacking:
        raise RuntimeError(f"checkpoint {folder} lacks trainable tensors: {lacking[:3]}")
    try:
        optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True)
    except pickle.UnpicklingError:
        raise unsafe_pickle_error(folder / "optimizer.pt") from None
    load_optimizer_state(model, optimizer, optimizer_state)
    scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    rng_file = folder / f"rng_state_{accelerator.process_index}.json"
    if rng_file.exists():
        _set_rng_state(json.loads(rng_file.read_text()))
