"""TRL's trainers as algorithms of rlm's runner: GRPO, RLOO and SFT on rlm's environments.

The runner (:mod:`rlm.runner`) loads the policy with its LoRA adapter, builds the
environments and rewards, evaluates before training and opens the run folder; a
:class:`TRLAlgorithm` then builds its trainer around that same policy and trains it,
while :class:`RunCallback` hands every step to :meth:`rlm.runner.Run.end_step`: TRL's
metrics under rlm's names, the token counters, held-out evaluations, the token budget,
``--stop-after`` and checkpoints (TRL writes its files into ``checkpoints/checkpoint-N``
when the runner asks, the runner adds its own state). ``--resume`` is TRL's
``resume_from_checkpoint`` on the newest of those folders.

The shared settings map onto TRL's arguments once, here (:func:`trainer_arguments`,
:func:`sampling_arguments`): ``--kl-coef`` is ``beta``, ``--epochs`` is ``num_iterations``
(optimizer steps on each batch of completions), ``--clip-range`` is ``epsilon``, and
``max_steps`` is ``--steps`` x ``--epochs``: one rlm step is one batch of completions and
its ``--epochs`` optimizer steps, as in PPO, so the runner sees a step (and may save a
checkpoint, which then falls between two batches) once every ``--epochs`` of TRL's.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import (
    PreTrainedModel,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from rlm.checkpoint import checkpoint_path, find_unsafe_pickle, unsafe_pickle_error
from rlm.errors import ConfigError
from rlm.policy import peft_quietly
from rlm.processes import all_processes_sum
from rlm.runner import Algorithm, Run
from rlm.settings import RunSettings
from rlm.trl_adapters import EnvReward, EnvRollout, EpisodeReward, TokenCounter
from rlm.validation import check_ranges

# transformers 5 renamed gradient_checkpointing (TRL's default: on) to activation_checkpointing.
_CHECKPOINTING_FLAG = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}
    else "gradient_checkpointing"
)


@dataclass
class GroupSettings:
    """What GRPO and RLOO share: groups of completions per prompt, a KL weight, clipping."""

    num_generations: int = 4
    """Completions sampled per prompt: the group whose rewards form the baseline."""
    kl_coef: float = 0.05
    """Weight of the KL to the reference (adapter off) in the loss or reward (TRL's beta)."""
    epochs: int = 1
    """Passes over each batch of completions (TRL's num_iterations)."""
    clip_range: float = 0.2
    """Clipping of the probability ratio (TRL's epsilon)."""

    def validate(self, settings: RunSettings) -> None:
        """Raise :class:`ConfigError` for values out of range for ``settings``' batch."""
        check_ranges(self, at_least_one=["epochs"], positive=["clip_range"],
                     non_negative=["kl_coef"])  # fmt: skip
        if self.num_generations < 2:
            raise ConfigError(
                "--num-generations must be at least 2 (the group baseline), got "
                f"{self.num_generations}"
            )
        if settings.batch_size % self.num_generations:
            raise ConfigError(
                f"--batch-size ({settings.batch_size}) must be a multiple of --num-generations "
                f"({self.num_generations}): each prompt's completions form one group"
            )


def trainer_arguments(
    settings: RunSettings, output_dir: Path, *, updates_per_step: int = 1
) -> dict[str, Any]:
    """Keyword arguments of every TRL config here (``GRPOConfig``, ``RLOOConfig``,
    ``SFTConfig``), from the shared settings; ``updates_per_step`` optimizer steps make
    one of rlm's steps (GRPO's and RLOO's ``--epochs``).

    TRL's own gradient checkpointing (its default) is off: it turned generation's KV cache
    off and made TRL's GRPO ~10x slower here. ``--activation-checkpointing`` turns
    transformers' on in the model itself (:mod:`rlm.runner`), for every algorithm alike.
    The runner logs (``report_to="none"``, every step) and decides when to save
    (``save_strategy="no"``; the callback asks for a save).
    """
    return {
        "output_dir": str(output_dir),
        "seed": settings.seed,
        "max_steps": settings.steps * updates_per_step,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.lr,
        "lr_scheduler_type": settings.lr_schedule,
        "weight_decay": settings.weight_decay,
        "max_grad_norm": settings.max_grad_norm,
        _CHECKPOINTING_FLAG: False,
        # bfloat16 weights, or float32 ones under bfloat16 autocast (--mixed-precision bf16)
        "bf16": settings.weights_dtype == torch.bfloat16 or settings.mixed_precision == "bf16",
        "fp16": False,
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "dataloader_num_workers": 0,
    }


def sampling_arguments(settings: RunSettings, group: GroupSettings) -> dict[str, Any]:
    """``GRPOConfig``/``RLOOConfig`` arguments: sampling, groups, KL weight, clipping, and
    TRL's own colocated vLLM engine with ``--use-vllm``."""
    engine = {
        "use_vllm": True, "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": settings.vllm_gpu_memory_utilization,
    } if settings.use_vllm else {}  # fmt: skip
    return {
        **engine,
        "num_generations": group.num_generations,
        "max_completion_length": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "beta": group.kl_coef,
        "num_iterations": group.epochs,
        "epsilon": group.clip_range,
        "generation_kwargs": {"use_cache": True},
    }


def reward_functions(run: Run, counter: TokenCounter) -> tuple[Any, EnvRollout | None]:
    """The environment as TRL's reward function, and for a multi-turn environment the
    ``rollout_func`` that plays it (GRPO's only)."""
    env = run.train_envs.envs[0]
    if not env.multi_turn:
        return EnvReward(env, counter), None
    rollout = EnvRollout(
        env.env_id, run.tokenizer, run.prompt_format, seed=run.settings.seed,
        policy=run.policy, counter=counter, reward=env.reward_fn, envs=run.train_envs,
    )  # fmt: skip
    return EpisodeReward(), rollout


# TRL's metric names -> rlm's. Anything else goes under train/ with its TRL name.
_RENAMES = {
    "reward": "reward/mean",
    "reward_std": "reward/std",
    "kl": "train/kl_per_token",  # mean per-token k3 estimate; eval/kl is the sequence KL
    "entropy": "train/entropy",
    "loss": "train/loss",
    "learning_rate": "train/lr",
    "grad_norm": "train/grad_norm",
    "completions/mean_length": "train/completion_length",
}


def rename_trl_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """TRL's logged values under rlm's namespaces; non-numbers are dropped.

    Example:
        >>> rename_trl_metrics({"reward": 0.5, "kl": 0.01, "clip_ratio/region_mean": 0.0})
        {'reward/mean': 0.5, 'train/kl_per_token': 0.01, 'train/clip_ratio/region_mean': 0.0}
    """
    renamed: dict[str, float] = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in _RENAMES:
            renamed[_RENAMES[key]] = float(value)
        elif key.startswith(("reward/", "train/", "perf/", "eval/")):
            renamed[key] = float(value)
        else:
            renamed[f"train/{key}"] = float(value)
    return renamed


class RunCallback(TrainerCallback):
    """Hands each step of a TRL trainer to the runner (:meth:`rlm.runner.Run.end_step`).

    One of rlm's steps is ``updates_per_step`` of TRL's optimizer steps (GRPO's and RLOO's
    passes over a batch). On every process: the generated tokens and completions are
    summed over processes at each optimizer step's end; when TRL logs the last optimizer
    step of an rlm step, the runner gets the metrics of its passes (renamed,
    :func:`rename_trl_metrics`; averaged when several passes log the same one), and its
    answer becomes TRL's ``should_save`` and ``should_training_stop``; after TRL saved a
    checkpoint, the runner completes it. SFT, which generates nothing, counts its
    demonstrations as episodes.
    """

    def __init__(self, run: Run, counter: TokenCounter, *, updates_per_step: int = 1) -> None:
        self.run = run
        self.counter = counter
        self.updates_per_step = updates_per_step
        self._counted = (0, 0)
        self._logs: dict[str, list[float]] = {}
        self._skipped = 0

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step % self.updates_per_step == 0:  # the first pass of a step
            self.run.begin_step()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.run.algorithm.generates:
            self.counter.completions += self.run.settings.batch_size

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Skip an optimizer step whose gradients are not finite: drop them (the optimizer
        passes over parameters without a gradient) and count it (``train/skipped_updates``).
        Gradients are summed over processes by then, so every process skips alike."""
        parameters = [p for p in kwargs["model"].parameters() if p.grad is not None]
        if not parameters:
            return
        norms = torch.stack([p.grad.detach().float().norm() for p in parameters])
        if not bool(norms.isfinite().all()):
            for p in parameters:
                p.grad = None
            self._skipped += 1

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "train_runtime" in logs:
            return  # the trainer's end-of-run totals: the summary holds the wall time
        for key, value in rename_trl_metrics(logs).items():
            self._logs.setdefault(key, []).append(value)
        if state.global_step % self.updates_per_step:
            return  # more passes over this batch to come
        counted = (
            all_processes_sum(self.counter.tokens, self.run.state),
            all_processes_sum(self.counter.completions, self.run.state),
        )
        tokens, episodes = counted[0] - self._counted[0], counted[1] - self._counted[1]
        self._counted = counted
        metrics = {key: sum(values) / len(values) for key, values in self._logs.items()}
        metrics["train/skipped_updates"], self._logs, self._skipped = self._skipped, {}, 0
        step = state.global_step // self.updates_per_step
        end = self.run.end_step(step, metrics, tokens=tokens, episodes=episodes)
        control.should_save = end.save
        if end.stop:
            control.should_training_stop = True

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.run.complete_checkpoint(checkpoint_path(self.run.checkpoints_dir, state.global_step))


def load_saved_weights(model: PreTrainedModel | PeftModel, folder: Path) -> None:
    """Load into ``model`` the weights a trainer's ``save_model`` wrote to ``folder``: the
    adapter with LoRA, else the model's (possibly sharded) safetensors files."""
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise ConfigError(f"checkpoint {folder} holds no model weights (model*.safetensors)")
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        weights.update(load_file(path))
    model.load_state_dict(weights, strict=False)  # (tied weights are saved once)


class TRLAlgorithm(Algorithm):
    """An algorithm whose loop is a TRL trainer: subclasses build it in :meth:`build_trainer`."""

    updates_per_step = 1
    """TRL's optimizer steps in one of rlm's steps (GRPO's and RLOO's ``--epochs``)."""

    def __init__(self) -> None:
        self.counter = TokenCounter()
        """Tokens and completions generated for training, counted by the reward adapters."""
        self.trainer: Any = None

    def build_trainer(self, run: Run) -> Any:
        """The trainer, around ``run.policy.policy`` (the runner's model, with its adapter)."""
        raise NotImplementedError

    def train(self, run: Run) -> None:
        if run.finished:  # resumed from the final checkpoint: TRL would take one more step
            assert run.checkpoint is not None
            load_saved_weights(run.policy.policy, run.checkpoint)
            return
        self.trainer = self.build_trainer(run)
        # The runner shows its own progress bar; the trainer's also prints every log line.
        self.trainer.remove_callback(ProgressCallback)
        self.trainer.remove_callback(PrinterCallback)
        self.trainer.add_callback(
            RunCallback(run, self.counter, updates_per_step=self.updates_per_step)
        )
        resume = str(run.checkpoint) if run.checkpoint is not None else None
        try:
            with peft_quietly():
                self.trainer.train(resume_from_checkpoint=resume)
        except pickle.UnpicklingError:
            # transformers loads the trainer's files with weights_only=True: name the file.
            unsafe = find_unsafe_pickle(run.checkpoint) if run.checkpoint is not None else None
            if unsafe is None:
                raise
            raise unsafe_pickle_error(unsafe) from None

    def save_policy(self, run: Run, folder: Path) -> None:
        """The trainer's own save: the adapter with LoRA, else the model; the tokenizer."""
        if self.trainer is None:  # resumed after the end: no trainer was built
            super().save_policy(run, folder)
        else:
            self.trainer.save_model(str(folder))
