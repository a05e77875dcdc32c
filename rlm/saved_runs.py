"""Finished run folders read back: the settings a run used and the policy it trained.

Every experiment writes the same layout through the runner (rlm/runner.py):
``config.json`` (``{"algorithm": ..., "run": {the shared settings}, "<algorithm>": {...}}``),
``metrics.jsonl``, ``summary.json`` and the trained policy in ``policy/``: a LoRA adapter
over the model the run started from, or a full model.

Example:
    >>> run = SavedRun.open("runs/rlm_Sentiment-v0__grpo__1__1795881557")  # doctest: +SKIP
    >>> policy, tokenizer = run.load_policy()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from rlm.config_files import apply_settings
from rlm.errors import ConfigError
from rlm.models import load_pretrained, load_tokenizer, resolve_model_path
from rlm.policy import peft_quietly
from rlm.settings import RunSettings, eval_seed


@dataclass(frozen=True)
class SavedRun:
    """A finished run folder: its settings, summary, evaluations and trained policy."""

    path: Path
    algorithm: str
    settings: dict[str, Any]
    """The shared settings (``config.json``'s ``run``), as plain JSON values."""

    @classmethod
    def open(cls, path: Path | str) -> SavedRun:
        """Read a finished run folder; a ConfigError says what is missing."""
        path = Path(path)
        if not (path / "summary.json").is_file() or not (path / "config.json").is_file():
            raise ConfigError(
                f"{path} is not a finished run folder (no summary.json): pass a folder that "
                "an rlm experiment wrote and finished"
            )
        config: dict[str, Any] = json.loads((path / "config.json").read_text())
        if "algorithm" not in config or "run" not in config:
            raise ConfigError(f"{path}/config.json has no algorithm and run settings")
        return cls(path=path, algorithm=config["algorithm"], settings=config["run"])

    @property
    def run_settings(self) -> RunSettings:
        """The shared settings as the dataclass the run was configured with."""
        return apply_settings(RunSettings(), self.settings, source=str(self.path / "config.json"))

    @property
    def env_id(self) -> str:
        return str(self.settings["env_id"])

    @property
    def model(self) -> str:
        """The model the run started from (what ``--model`` was)."""
        return str(self.settings["model"])

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def eval_seed(self) -> int:
        """The seed every evaluation of the run used (so that a re-evaluation repeats it)."""
        return eval_seed(self.seed)

    @property
    def policy_dir(self) -> Path:
        """The trained policy: a LoRA adapter over :attr:`model`, or a full model."""
        return self.path / "policy"

    @cached_property
    def summary(self) -> dict[str, Any]:
        return dict(json.loads((self.path / "summary.json").read_text()))

    def evaluations(self) -> list[dict[str, float]]:
        """The metrics lines that hold a held-out evaluation, in order (step 0 first)."""
        lines = (self.path / "metrics.jsonl").read_text().splitlines()
        return [row for row in map(json.loads, lines) if "eval/reward_mean" in row]

    def load_policy(
        self, dtype: torch.dtype = torch.float32
    ) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
        """The trained policy and the start model's tokenizer; an adapter is loaded over
        :attr:`model`, unmerged, so that it computes exactly what the run evaluated."""
        if not self.policy_dir.is_dir():
            raise ConfigError(f"{self.path} holds no trained policy (policy/)")
        start = resolve_model_path(self.model)
        trust = self.run_settings.trust_remote_code
        tokenizer = load_tokenizer(start, trust_remote_code=trust)
        if (self.policy_dir / "adapter_config.json").exists():
            base = load_pretrained(AutoModelForCausalLM, start, dtype, trust_remote_code=trust)
            with peft_quietly():
                return PeftModel.from_pretrained(base, str(self.policy_dir)), tokenizer
        policy = load_pretrained(
            AutoModelForCausalLM, str(self.policy_dir), dtype, trust_remote_code=trust
        )
        return policy, tokenizer
