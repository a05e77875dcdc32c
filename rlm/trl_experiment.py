"""What the TRL experiment scripts (GRPO, RLOO) share with PPO's: settings, set-up, logging.

The scripts ``experiments/grpo.py`` and ``experiments/rloo.py`` read top to bottom like
``experiments/ppo_sentiment.py``; the pieces that would otherwise be copied between them
live here:

- :class:`TRLSettings`: the flags every TRL experiment has (task, model, budget, logging);
- :func:`load_policy`, :func:`training_env`, :func:`lora_config`: the same model loading,
  environments and LoRA adapter as PPO;
- :func:`start_run`: the held-out evaluation before training, the run folder and the tracker;
- :class:`RunCallback`: a ``TrainerCallback`` that logs TRL's metrics under rlm's names
  (``reward/``, ``train/``, ``perf/``), evaluates on held-out prompts every
  ``eval_every`` steps with :func:`rlm.evaluation.evaluate` and stops at the token budget;
- :func:`finish_run`: ``summary.json`` with the keys PPO writes.

Example:
    >>> settings = TRLSettings(exp_name="grpo")  # doctest: +SKIP
    >>> model, tokenizer = load_policy(settings)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from peft import LoraConfig
from tqdm.auto import tqdm
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from rlm.env import TextEnv, TextVectorEnv, make_text_vector_env
from rlm.errors import ConfigError
from rlm.evaluation import evaluate
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings
from rlm.rollout import GenerationSettings, PromptFormat
from rlm.run import RunDir, make_run_name
from rlm.scorers import make_reward
from rlm.tracking import Tracker
from rlm.trl_adapters import TokenCounter
from rlm.validation import check_ranges


@dataclass
class TRLSettings:
    """Flags shared by the TRL experiments; the defaults match experiments/ppo_sentiment.py."""

    # --- task and model
    env_id: str = "rlm/Sentiment-v0"
    """Registered environment id (see `python -m rlm list-envs`)."""
    model: str = "default"
    """Policy: 'default' (SmolLM2-135M-Instruct), a local folder (an SFT run's model/), a Hub id."""
    prompt_format: Literal["auto", "plain", "chat"] = "auto"
    """'plain' continues the observation text; 'chat' wraps turns in the chat template;
    'auto' is chat for multi-turn tasks (when the tokenizer has a template), else plain."""
    reward: str | None = None
    """Reward replacing the environment's, as in experiments/ppo_sentiment.py: a scorer,
    a weighted sum such as '0.7*vader + 0.3*repetition', or a reward-model folder."""
    exp_name: str = "trl"
    """Experiment name, part of the run name."""
    seed: int = 1
    """Seed of everything: prompts, sampling, initialisation."""

    # --- budget
    steps: int = 30
    """Optimizer steps, each on a fresh batch of completions (PPO's iterations)."""
    batch_size: int = 16
    """Completions per step, per process (num_generations completions for each prompt)."""
    num_generations: int = 4
    """Completions sampled per prompt; the group whose rewards form the baseline."""
    max_new_tokens: int = 20
    """Tokens per completion (per turn) at most."""
    temperature: float = 1.0
    """Sampling temperature."""
    token_budget: int | None = None
    """Stop once this many policy tokens were generated for training (the comparison's budget)."""

    # --- optimisation
    lr: float = 1e-3
    """AdamW learning rate of the LoRA adapter (PPO's default)."""
    beta: float = 0.05
    """KL coefficient towards the reference (adapter off); PPO's --kl-coef default."""
    lora: bool = True
    """Train a LoRA adapter (reference = adapter off); --no-lora fine-tunes all weights."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""

    # --- evaluation and logging
    eval_every: int = 15
    """Evaluate on held-out prompts every this many steps (and before and after)."""
    eval_prompts: int = 64
    """Held-out prompts per evaluation."""
    eval_batch_size: int = 32
    """Held-out prompts generated at once."""
    samples_logged: int = 16
    """Evaluation samples per table."""
    output_dir: Path = Path("runs")
    """Parent folder of run folders."""
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    """W&B mode; 'auto' is online when logged in, else offline."""
    wandb_project: str = "rlm"
    """W&B project."""
    tensorboard: bool = True
    """Write TensorBoard events."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights' dtype: auto is bfloat16 on a GPU that supports it, float32 on CPU."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def validate(settings: TRLSettings) -> None:
    """Raise ConfigError for any value out of range, before anything is loaded or written."""
    check_ranges(
        settings,
        at_least_one=["steps", "batch_size", "max_new_tokens", "eval_every", "eval_prompts",
                      "eval_batch_size", "lora_r", "lora_alpha"],
        positive=["lr", "temperature"],
        non_negative=["beta"],
    )  # fmt: skip
    if settings.num_generations < 2:
        raise ConfigError(
            "--num-generations must be at least 2 (the group baseline), got "
            f"{settings.num_generations}"
        )
    if settings.batch_size % settings.num_generations:
        raise ConfigError(
            f"--batch-size ({settings.batch_size}) must be a multiple of --num-generations "
            f"({settings.num_generations}): each prompt's completions form one group"
        )
    if settings.eval_prompts % settings.eval_batch_size:
        raise ConfigError(
            f"--eval-prompts ({settings.eval_prompts}) must be a multiple of --eval-batch-size "
            f"({settings.eval_batch_size})"
        )
    if settings.token_budget is not None and settings.token_budget < 1:
        raise ConfigError(f"--token-budget must be at least 1, got {settings.token_budget}")


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it, float32 elsewhere (bf16 is slow on CPU)."""
    if name == "bfloat16" or (
        name == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


def load_policy(settings: TRLSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy and its tokenizer, loaded as PPO loads them (LoRA is added by the trainer)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    return load_causal_lm(settings.model, dtype=resolve_dtype(settings.dtype))


def lora_config(settings: TRLSettings) -> LoraConfig | None:
    """PPO's LoRA adapter (:func:`rlm.policy.add_lora`) as a peft config for TRL's trainers.

    Given as ``peft_config``, TRL wraps the model itself and takes the adapter-off model as
    the reference, as PPO does. None with ``--no-lora``.
    """
    if not settings.lora:
        return None
    lora = LoraSettings(r=settings.lora_r, alpha=settings.lora_alpha)
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def training_env(env_id: str, reward: str | None = None) -> TextEnv:
    """One environment of the training split: its tasks, and its reward or ``reward``'s.

    ``reward`` is a spec for :func:`rlm.scorers.make_reward` (``env`` in it names the
    environment's own reward), as ``--reward`` in every experiment.
    """
    env = make_text_vector_env(env_id, 1, split="train").envs[0]
    if reward:
        env.reward_fn = make_reward(reward, env.reward_fn)
    return env


# transformers 5 renamed gradient_checkpointing (TRL's default: on) to activation_checkpointing.
_CHECKPOINTING_FLAG = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}
    else "gradient_checkpointing"
)


def common_trainer_arguments(
    *, output_dir: Path | str, seed: int, lr: float, dtype: torch.dtype
) -> dict[str, Any]:
    """Keyword arguments every TRL config here gets (``GRPOConfig``, ``RLOOConfig``, ``SFTConfig``).

    Gradient checkpointing (TRL's default) is off: it turns generation's KV cache off and
    made TRL's GRPO ~10x slower here. rlm's tracker does the logging (``report_to="none"``,
    a line every step), and the trainer saves nothing: the scripts save the policy.
    """
    return {
        "output_dir": str(output_dir),
        "seed": seed,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        _CHECKPOINTING_FLAG: False,
        "bf16": dtype == torch.bfloat16,
        "fp16": False,
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "dataloader_num_workers": 0,
    }


def trainer_arguments(settings: TRLSettings, output_dir: Path | str) -> dict[str, Any]:
    """Keyword arguments common to ``GRPOConfig`` and ``RLOOConfig``: budget and sampling."""
    return {
        **common_trainer_arguments(
            output_dir=output_dir,
            seed=settings.seed,
            lr=settings.lr,
            dtype=resolve_dtype(settings.dtype),
        ),  # fmt: skip
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "num_generations": settings.num_generations,
        "max_completion_length": settings.max_new_tokens,
        "temperature": settings.temperature,
        "beta": settings.beta,
        "generation_kwargs": {"use_cache": True},
    }


def trainer_output_dir() -> str:
    """A scratch folder for the trainer's ``output_dir``: the run folder is made later, and
    rlm saves the trained policy into it itself."""
    return tempfile.mkdtemp(prefix="rlm-trl-")


def actor_critic_of(trainer: Any) -> ActorCritic:
    """The trainer's policy wrapped for rlm's rollout path and evaluation (before training).

    With LoRA the reference is the adapter turned off; without, a frozen copy of the
    policy as it is now, so call this before training starts.
    """
    return ActorCritic(trainer.accelerator.unwrap_model(trainer.model))


@dataclass
class Evaluator:
    """Held-out evaluation exactly as PPO runs it: :func:`rlm.evaluation.evaluate`."""

    policy: ActorCritic
    tokenizer: PreTrainedTokenizerBase
    envs: TextVectorEnv
    num_prompts: int
    generation: GenerationSettings
    prompt_format: PromptFormat
    seed: int

    @classmethod
    def for_settings(
        cls,
        settings: TRLSettings,
        policy: ActorCritic,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: PromptFormat,
    ) -> Evaluator:
        eval_envs = make_text_vector_env(settings.env_id, settings.eval_batch_size, split="eval")
        if settings.reward:
            eval_envs.set_reward(make_reward(settings.reward, eval_envs.envs[0].reward_fn))
        return cls(
            policy=policy,
            tokenizer=tokenizer,
            envs=eval_envs,
            num_prompts=settings.eval_prompts,
            generation=GenerationSettings(settings.max_new_tokens, settings.temperature),
            prompt_format=prompt_format,
            seed=settings.seed + 10_000,  # PPO's evaluation seed
        )

    def __call__(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        return evaluate(
            self.policy, self.tokenizer, self.envs, num_prompts=self.num_prompts,
            generation=self.generation, prompt_format=self.prompt_format, seed=self.seed,
        )  # fmt: skip


def start_run(
    settings: TRLSettings, config: Any, evaluator: Evaluator
) -> tuple[RunDir, Tracker, dict[str, float]]:
    """Evaluate before training, then create the run folder and the tracker.

    The evaluation comes first, so that a broken reward fails before any folder is written.
    Returns the run folder, the tracker and the evaluation's metrics (logged at step 0).
    """
    before, rows = evaluator()
    name = make_run_name(settings.env_id, settings.exp_name, settings.seed)
    run_dir = RunDir.create(settings.output_dir, name, dataclasses.asdict(config))
    tracker = Tracker(
        run_dir, project=settings.wandb_project, run_name=name, config=dataclasses.asdict(config),
        wandb=settings.wandb, tensorboard=settings.tensorboard,
    )  # fmt: skip
    tracker.log({**before, "perf/tokens": 0, "perf/episodes": 0}, step=0)
    tracker.log_samples(rows[: settings.samples_logged], step=0)
    return run_dir, tracker, before


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


def _all_processes_sum(value: int) -> int:
    if dist.is_available() and dist.is_initialized():
        total = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(total)
        return int(total.item())
    return value


class RunCallback(TrainerCallback):
    """Log a TRL trainer's run like PPO's: one metrics line per step, held-out evaluations.

    Each step's line holds TRL's metrics renamed (:func:`rename_trl_metrics`), the reward
    components, ``perf/tokens`` and ``perf/episodes`` (policy tokens and completions
    generated so far, all processes) and ``perf/time_iteration``; every ``eval_every``
    steps, at the last step and when the token budget is spent, the same line gets the
    held-out ``eval/`` metrics and the samples table gets a page.

    Args:
        tracker: where metrics go (main process).
        evaluator: the held-out evaluation.
        counter: the generated-token counter the reward or rollout adapter fills.
        eval_every: steps between evaluations.
        samples_logged: evaluation samples logged each time.
        token_budget: stop training once this many tokens were generated (all processes).
        desc: the progress bar's label.
    """

    def __init__(
        self,
        tracker: Tracker,
        evaluator: Evaluator,
        counter: TokenCounter,
        *,
        eval_every: int,
        samples_logged: int,
        token_budget: int | None = None,
        desc: str = "train",
    ) -> None:
        self.tracker = tracker
        self.evaluator = evaluator
        self.counter = counter
        self.eval_every = eval_every
        self.samples_logged = samples_logged
        self.token_budget = token_budget
        self.last_eval: dict[str, float] = {}
        self.tokens = 0
        self.episodes = 0
        self._pending: dict[str, float] = {}
        self._step_start = time.perf_counter()
        self._desc = desc
        self._progress: tqdm | None = None

    def replace_progress_bar(self, trainer: Any) -> None:
        """Show this callback's bar (reward and KL, like PPO's) instead of the trainer's.

        The trainer's own bar also prints every step's whole dictionary of metrics.
        """
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(self)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._progress = tqdm(
            total=state.max_steps, desc=self._desc, disable=not state.is_world_process_zero
        )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step_start = time.perf_counter()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        step = state.global_step
        self.tokens = _all_processes_sum(self.counter.tokens)
        self.episodes = _all_processes_sum(self.counter.completions)
        spent = self.token_budget is not None and self.tokens >= self.token_budget
        if spent:
            control.should_training_stop = True
        metrics: dict[str, float] = {
            "perf/tokens": self.tokens,
            "perf/episodes": self.episodes,
            "perf/time_iteration": time.perf_counter() - self._step_start,
        }
        if spent or step % self.eval_every == 0 or step >= state.max_steps:
            if state.is_world_process_zero:
                self.last_eval, rows = self.evaluator()
                metrics.update(self.last_eval)
                self.tracker.log_samples(rows[: self.samples_logged], step=step)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
        self._pending.update(metrics)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        if logs and "train_runtime" in logs:
            return  # the trainer's end-of-run totals: the summary holds the wall time
        metrics = {**rename_trl_metrics(logs or {}), **self._pending}
        self._pending = {}
        if metrics:
            self.tracker.log(metrics, step=state.global_step)
        if self._progress is not None and "reward/mean" in metrics:
            self._progress.n = state.global_step
            postfix = {"reward": f"{metrics['reward/mean']:.3f}"}
            if "train/kl_per_token" in metrics:
                postfix["kl/token"] = f"{metrics['train/kl_per_token']:.3f}"
            self._progress.set_postfix(postfix)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._pending and state.is_world_process_zero:
            self.tracker.log(self._pending, step=state.global_step)
        self._pending = {}
        if self._progress is not None:
            self._progress.n = state.global_step
            self._progress.close()


def finish_run(
    run_dir: RunDir,
    tracker: Tracker,
    *,
    algorithm: str,
    before: dict[str, float],
    callback: RunCallback,
    steps: int,
    wall_start: float,
    trainer_dir: str | None = None,
) -> dict[str, Any]:
    """Write ``summary.json`` (PPO's keys, plus ``algorithm``), print it, close the tracker.

    ``trainer_dir``, the trainer's scratch folder (:func:`trainer_output_dir`), is removed.
    """
    if trainer_dir is not None:
        shutil.rmtree(trainer_dir, ignore_errors=True)
    after = callback.last_eval
    summary = {
        "algorithm": algorithm,
        "eval_reward_before": before.get("eval/reward_mean", float("nan")),
        "eval_reward_after": after.get("eval/reward_mean", float("nan")),
        "eval_reward_sem_before": before.get("eval/reward_sem", float("nan")),
        "eval_reward_sem_after": after.get("eval/reward_sem", float("nan")),
        "eval_kl_after": after.get("eval/kl", float("nan")),
        "iterations": steps,
        "episodes": callback.episodes,
        "generated_tokens": callback.tokens,
        "wall_time_s": time.time() - wall_start,
    }
    (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nheld-out reward {summary['eval_reward_before']:+.3f} -> "
        f"{summary['eval_reward_after']:+.3f} (KL to reference "
        f"{summary['eval_kl_after']:.2f} nats), {summary['generated_tokens']} tokens, "
        f"{summary['wall_time_s']:.0f} s; run folder {run_dir.path}"
    )
    print(f"TensorBoard: tensorboard --logdir {run_dir.tensorboard_dir}")
    if tracker.wandb_mode == "offline":
        print(f"W&B (offline): wandb sync {run_dir.path / 'wandb'}/offline-run-*")
    tracker.finish("finished")
    return summary


def train_and_report(
    trainer: Any,
    settings: TRLSettings,
    config: Any,
    policy: ActorCritic,
    tokenizer: PreTrainedTokenizerBase,
    prompt_format: PromptFormat,
    counter: TokenCounter,
    *,
    algorithm: str,
    wall_start: float,
    save: Callable[[RunDir], None] | None = None,
) -> dict[str, Any]:
    """What every TRL script does once its trainer is built: evaluate before training,
    open the run folder, train with the run's callback, save the policy, write the summary.

    ``save`` writes the trained model into the run folder; by default the trainer saves
    the policy (the adapter, with LoRA) in ``policy/``.
    """
    evaluator = Evaluator.for_settings(settings, policy, tokenizer, prompt_format)
    run_dir, tracker, before = start_run(settings, config, evaluator)
    callback = RunCallback(
        tracker, evaluator, counter, eval_every=settings.eval_every,
        samples_logged=settings.samples_logged, token_budget=settings.token_budget,
        desc=algorithm.upper(),
    )  # fmt: skip
    callback.replace_progress_bar(trainer)
    try:
        trainer.train()
    except BaseException as exc:
        tracker.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if save is None:
        trainer.save_model(str(run_dir.path / "policy"))
    else:
        save(run_dir)
    return finish_run(
        run_dir, tracker, algorithm=algorithm, before=before, callback=callback,
        steps=trainer.state.global_step, wall_start=wall_start,
        trainer_dir=trainer.args.output_dir,
    )  # fmt: skip
