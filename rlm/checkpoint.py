"""Checkpoints that let a run continue exactly where it stopped.

A checkpoint folder ``checkpoints/iter_000010/`` holds:

- ``policy/``: the policy as ``save_pretrained`` writes it (the LoRA adapter alone with
  LoRA, else the full model), loadable by peft or transformers for later use;
- ``trainable.safetensors``: every trainable tensor of the actor-critic (adapter or
  policy, value head, value model), what resuming loads;
- ``optimizer.pt``, ``scheduler.pt``;
- ``rng_state_<rank>.pt``: Python, NumPy and torch RNG states of each process;
- ``state.json``: iteration, KL controller, counters; written last, so a folder without it
  is incomplete and ignored.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from rlm.policy import ActorCritic

_PREFIX = "iter_"


def _trainable_state(model: ActorCritic) -> dict[str, torch.Tensor]:
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in trainable
    }


def save_checkpoint(
    accelerator: Accelerator,
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    folder: Path,
    iteration: int,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``iteration`` and keep only the newest ``keep`` of them."""
    target = folder / f"{_PREFIX}{iteration:06d}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        model.policy.save_pretrained(str(target / "policy"))
        save_file(_trainable_state(model), target / "trainable.safetensors")
        torch.save(optimizer.state_dict(), target / "optimizer.pt")
        torch.save(scheduler.state_dict(), target / "scheduler.pt")
    accelerator.wait_for_everyone()
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    torch.save(rng, target / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (target / "state.json").write_text(json.dumps({"iteration": iteration, **state}, indent=2))
        for old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{_PREFIX}*") if (p / "state.json").exists()]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(
    accelerator: Accelerator,
    model: ActorCritic,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    checkpoint: Path,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; return ``state.json``'s content."""
    tensors = load_file(checkpoint / "trainable.safetensors", device=str(accelerator.device))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise RuntimeError(f"checkpoint {checkpoint} holds unknown tensors: {unexpected[:3]}")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lacking = sorted(trainable & set(missing))
    if lacking:
        raise RuntimeError(f"checkpoint {checkpoint} lacks trainable tensors: {lacking[:3]}")
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=False))
    rng_file = checkpoint / f"rng_state_{accelerator.process_index}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
    return json.loads((checkpoint / "state.json").read_text())
