"""Finished run folders read back: the settings a run used and the policy it trained.

rlm's scripts write three layouts, all with ``config.json`` and ``summary.json``:

- PPO (experiments/ppo_sentiment.py): settings at the top of config.json; the policy in
  the newest checkpoint's ``policy/`` (a LoRA adapter, or the full model);
- GRPO and RLOO (rlm.trl_experiment): settings under ``config["run"]``; ``policy/``;
- SFT (experiments/sft_warm_start.py): settings at the top; ``model/``, the merged model.

Example:
    >>> run = SavedRun.open("runs/rlm_Sentiment-v0__grpo__1__1795881557")  # doctest: +SKIP
    >>> policy, tokenizer = run.load_policy()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from rlm.checkpoint import list_checkpoints
from rlm.errors import ConfigError
from rlm.models import load_tokenizer, resolve_model_path
from rlm.policy import peft_quietly


@dataclass(frozen=True)
class SavedRun:
    """What re-evaluating a finished run needs to know about it."""

    path: Path
    env_id: str
    model: str
    """The model the run started from (what ``--model`` was)."""
    policy_dir: Path
    """The trained policy: a LoRA adapter over ``model``, or a full model."""
    seed: int
    prompt_format: Literal["auto", "plain", "chat"]
    max_new_tokens: int
    temperature: float
    eval_prompts: int
    eval_batch_size: int
    reward: str | None
    """``--reward``, when the run replaced the environment's reward."""

    @classmethod
    def open(cls, path: Path | str) -> SavedRun:
        """Read a finished run folder; a ConfigError says what is missing."""
        path = Path(path)
        if not (path / "summary.json").exists():
            raise ConfigError(
                f"{path} is not a finished run folder (no summary.json): pass a folder that "
                "an rlm experiment wrote and finished"
            )
        config: dict[str, Any] = json.loads((path / "config.json").read_text())
        settings = config.get("run", config)  # the TRL scripts nest their shared flags
        return cls(
            path=path,
            env_id=settings["env_id"],
            model=settings["model"],
            policy_dir=_policy_dir(path),
            seed=int(settings["seed"]),
            prompt_format=_prompt_format(settings.get("prompt_format", "auto")),
            max_new_tokens=int(settings["max_new_tokens"]),
            temperature=float(settings.get("temperature", 1.0)),  # SFT samples at 1.0
            eval_prompts=int(settings["eval_prompts"]),
            eval_batch_size=int(settings["eval_batch_size"]),
            reward=settings.get("reward"),
        )

    @property
    def summary(self) -> dict[str, Any]:
        return dict(json.loads((self.path / "summary.json").read_text()))

    @property
    def eval_seed(self) -> int:
        """The seed every rlm script evaluates with (so that a re-evaluation repeats it)."""
        return self.seed + 10_000

    def load_policy(
        self, dtype: torch.dtype = torch.float32
    ) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
        """The trained policy and its tokenizer (the start model's: a checkpoint's
        ``policy/`` holds weights only); an adapter is loaded over ``model``."""
        start = resolve_model_path(self.model)
        tokenizer = load_tokenizer(start)
        if (self.policy_dir / "adapter_config.json").exists():
            base = AutoModelForCausalLM.from_pretrained(start, dtype=dtype)
            with peft_quietly():
                return PeftModel.from_pretrained(base, str(self.policy_dir)), tokenizer
        return AutoModelForCausalLM.from_pretrained(str(self.policy_dir), dtype=dtype), tokenizer


def _prompt_format(kind: str) -> Literal["auto", "plain", "chat"]:
    if kind not in ("auto", "plain", "chat"):
        raise ConfigError(f"unknown prompt format {kind!r} in the run's config.json")
    return cast(Literal["auto", "plain", "chat"], kind)


def _policy_dir(path: Path) -> Path:
    if (path / "policy").is_dir():  # GRPO, RLOO
        return path / "policy"
    if (path / "model").is_dir():  # SFT
        return path / "model"
    checkpoints = list_checkpoints(path / "checkpoints")  # PPO: the newest complete one
    if checkpoints and (checkpoints[-1] / "policy").is_dir():
        return checkpoints[-1] / "policy"
    raise ConfigError(f"{path} holds no trained policy (policy/, model/ or checkpoints/)")
