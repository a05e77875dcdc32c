"""TRL's trainers called directly and timed per step: the other side of the suite's comparisons.

    <venv with trl 1.12.0>/bin/python scripts/trl_reference.py spec.json   # PPOTrainer
    python scripts/trl_reference.py spec.json                              # GRPO, RLOO

``scripts/benchmark.py`` writes the spec (JSON) and runs this script in a process of its
own, next to the rlm run it compares with. It imports no rlm module: for PPO it runs in a
virtual environment with TRL 1.12.0, the last release with a ``PPOTrainer``
(``trl.experimental.ppo``), made by :func:`rlm.measured_runs.overlay_venv`.

The spec's keys:

``trainer``
    ``ppo``, ``grpo`` or ``rloo``.
``model``, ``reward_model``
    model folders: the policy (also the reference and, for PPO, the critic's trunk, as a
    sequence classifier) and a one-output sequence classifier scoring prompt + completion.
``prompts``
    PPO: the prompts' token ids; GRPO and RLOO: their texts.
``arguments``
    the keyword arguments of the trainer's config (``PPOConfig``, ``GRPOConfig``,
    ``RLOOConfig``).
``lora``
    peft ``LoraConfig`` arguments, or null to fine-tune every weight.
``threads``
    torch threads.

It prints one JSON line: TRL's version and the time at the end of every optimizer step,
in seconds from the start of training.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)


class StepClock(TrainerCallback):
    """The time at the end of each optimizer step, from the start of training."""

    def __init__(self) -> None:
        self.start = 0.0
        self.ends: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter() - self.start)


def ppo_trainer(spec: dict[str, Any], tokenizer: Any, clock: StepClock) -> Any:
    """TRL 1.12's PPOTrainer: a policy, its frozen copy, a separate critic, the reward model."""
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    def classifier(folder: str) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)

    return PPOTrainer(
        args=PPOConfig(**spec["arguments"]),
        processing_class=tokenizer,
        model=AutoModelForCausalLM.from_pretrained(spec["model"]),
        ref_model=AutoModelForCausalLM.from_pretrained(spec["model"]),
        reward_model=classifier(spec["reward_model"]),
        value_model=classifier(spec["model"]),
        train_dataset=Dataset.from_dict({"input_ids": spec["prompts"]}),
        callbacks=[clock],
    )


def group_trainer(spec: dict[str, Any], tokenizer: Any, clock: StepClock) -> Any:
    """GRPOTrainer or RLOOTrainer with the reward model given by path, as TRL documents."""
    from peft import LoraConfig

    config_class: Any = trl.GRPOConfig if spec["trainer"] == "grpo" else trl.RLOOConfig
    trainer_class: Any = trl.GRPOTrainer if spec["trainer"] == "grpo" else trl.RLOOTrainer
    lora = spec["lora"]
    return trainer_class(
        model=AutoModelForCausalLM.from_pretrained(spec["model"]),
        reward_funcs=[spec["reward_model"]],
        args=config_class(**spec["arguments"]),
        train_dataset=Dataset.from_dict({"prompt": spec["prompts"]}),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **lora) if lora else None,
        callbacks=[clock],
    )


def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
    clock = StepClock()
    build = ppo_trainer if spec["trainer"] == "ppo" else group_trainer
    build(spec, tokenizer, clock).train()
    print(json.dumps({"trl": trl.__version__, "step_ends": clock.ends}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
