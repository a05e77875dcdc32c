"""rlm's runs against TRL's trainers called directly, on identical work, timed per step.

Each :class:`Comparison` is one rlm experiment (``experiments/<algorithm>.py``, as a user
runs it, through :func:`rlm.measured_runs.run_case`) and ``scripts/trl_reference.py`` (TRL's
trainer built from the same settings, with no rlm code in between), one after the other:

- **PPO in TRL's configuration**: full fine-tuning, a separate critic trunk, a sequence
  classifier as the reward, 4 epochs of one minibatch (the only configuration TRL's
  ``PPOTrainer`` has), against TRL 1.12.0's ``PPOTrainer`` in an overlay environment
  (:func:`rlm.measured_runs.overlay_venv`): TRL removed the trainer in 1.13;
- **GRPO and RLOO**: rlm's adapters (the runner, the environment as reward, rlm's logging)
  against ``GRPOTrainer``/``RLOOTrainer`` given the very config rlm's adapter builds
  (:func:`rlm.trl_runner.trainer_arguments`, :func:`rlm.trl_runner.sampling_arguments`),
  the same prompts, LoRA settings and reward model.

The same random reward model (:func:`rlm.measured_runs.random_reward_model`) scores both
sides. A side's step time is the median over its steps after the first (warm-up); rlm's
last step, which evaluates, is left out too.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm.env import make_text_vector_env
from rlm.measured_runs import PROJECT_DIR, case_flags, first_prompts, overlay_venv, run_case
from rlm.models import cache_dir, load_tokenizer
from rlm.policy import LoraSettings
from rlm.ppo_update import PPOSettings
from rlm.settings import RunSettings
from rlm.trl_adapters import task_dataset
from rlm.trl_runner import GroupSettings, sampling_arguments, trainer_arguments

TRL_WITH_PPO = "trl==1.12.0"
"""The last TRL release with a ``PPOTrainer``."""

PPO_EPOCHS = 4
"""TRL's ``PPOConfig`` default: 4 epochs of one minibatch."""


@dataclass(frozen=True)
class Work:
    """What both sides of a comparison run."""

    model: str
    reward_model: Path
    env_id: str
    steps: int
    """rlm's steps: a warm-up, the timed ones, the last (which evaluates). TRL runs one
    fewer: a warm-up and as many timed."""
    batch_size: int
    max_new_tokens: int
    threads: int
    num_generations: int = 4
    """GRPO's and RLOO's completions per prompt."""

    @property
    def trl_steps(self) -> int:
        """TRL's steps: a warm-up and as many timed ones as rlm's."""
        return self.steps - 1


@dataclass(frozen=True)
class Comparison:
    """One row of the table: which algorithm, and the model it runs."""

    label: str
    algorithm: str
    work: Work

    @property
    def name(self) -> str:
        """The rlm run's name and the stem of TRL's spec file."""
        return f"{self.algorithm}-{self.label}"


def median_after_warmup(durations: list[float]) -> float:
    """The median of the step times after the first (all of them for a single step)."""
    return statistics.median(durations[1:] or durations)


def ppo_config(work: Work, output_dir: Path) -> dict[str, Any]:
    """``PPOConfig`` arguments matching rlm's PPO run with ``--no-lora --value-model``:
    rlm's hyper-parameters, TRL's 4 epochs of one minibatch, stopping at end-of-text."""
    ppo, run = PPOSettings(), RunSettings()
    return {
        "output_dir": str(output_dir), "seed": run.seed, "learning_rate": run.lr,
        "per_device_train_batch_size": work.batch_size, "num_mini_batches": 1,
        "num_ppo_epochs": PPO_EPOCHS, "total_episodes": work.batch_size * work.trl_steps,
        "response_length": work.max_new_tokens, "local_rollout_forward_batch_size": work.batch_size,
        "stop_token": "eos", "temperature": run.temperature, "kl_coef": ppo.kl_coef,
        "cliprange": ppo.clip_range, "cliprange_value": ppo.value_clip_range,
        "vf_coef": ppo.vf_coef, "gamma": ppo.gamma, "lam": ppo.lam,
        "max_grad_norm": run.max_grad_norm, "num_sample_generations": 0, "use_cpu": True,
        "report_to": "none", "save_strategy": "no", "logging_steps": 1,
        "dataloader_num_workers": 0,
    }  # fmt: skip


def group_config(algorithm: str, work: Work, output_dir: Path) -> dict[str, Any]:
    """The ``GRPOConfig``/``RLOOConfig`` arguments rlm's adapter builds for this work."""
    settings = RunSettings(
        model=work.model, steps=work.trl_steps, batch_size=work.batch_size,
        max_new_tokens=work.max_new_tokens,
    )  # fmt: skip
    group = GroupSettings(num_generations=work.num_generations)
    arguments = {**trainer_arguments(settings, output_dir), **sampling_arguments(settings, group)}
    if algorithm == "grpo":  # experiments/grpo.py's defaults
        return {**arguments, "loss_type": "dapo", "scale_rewards": "group"}
    return {**arguments, "normalize_advantages": False}


def rlm_flags(comparison: Comparison, folder: Path) -> list[str]:
    work = comparison.work
    flags = case_flags(
        work.model, folder, comparison.name, steps=work.steps,
        batch_size=work.batch_size, max_new_tokens=work.max_new_tokens, threads=work.threads,
    )  # fmt: skip
    flags += ["--env-id", work.env_id, "--reward", str(work.reward_model)]
    if comparison.algorithm == "ppo":
        return flags + ["--no-lora", "--value-model", work.model, "--epochs", str(PPO_EPOCHS),
                        "--minibatches", "1"]  # fmt: skip
    return flags + ["--num-generations", str(work.num_generations)]


def reference_spec(comparison: Comparison, folder: Path) -> dict[str, Any]:
    """The spec ``scripts/trl_reference.py`` reads: the same model, reward and prompts."""
    work, algorithm = comparison.work, comparison.algorithm
    spec: dict[str, Any] = {
        "trainer": algorithm, "model": work.model, "reward_model": str(work.reward_model),
        "threads": work.threads,
    }  # fmt: skip
    if algorithm == "ppo":
        tokenizer = load_tokenizer(work.model)
        prompts = first_prompts(work.env_id, work.batch_size * work.trl_steps, tokenizer)
        return {**spec, "prompts": prompts, "lora": None,
                "arguments": ppo_config(work, folder / "trl-output")}  # fmt: skip
    env = make_text_vector_env(work.env_id, 1, split="train").envs[0]
    lora = LoraSettings().peft_arguments()  # rlm's default adapter, as the runner adds it
    return {**spec, "prompts": list(task_dataset(env)["prompt"]), "lora": lora,
            "arguments": group_config(algorithm, work, folder / "trl-output")}  # fmt: skip


def run_reference(comparison: Comparison, folder: Path, timeout: float) -> dict[str, Any]:
    """TRL's side: ``scripts/trl_reference.py`` in its environment; its version and step
    times (seconds)."""
    python = sys.executable
    if comparison.algorithm == "ppo":
        python = str(overlay_venv(cache_dir() / "trl-1.12.0-venv", TRL_WITH_PPO))
    spec_path = folder / f"{comparison.name}-spec.json"
    spec_path.write_text(json.dumps(reference_spec(comparison, folder)))
    result = subprocess.run(
        [python, str(PROJECT_DIR / "scripts" / "trl_reference.py"), str(spec_path)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"TRL's {comparison.algorithm} failed:\n{result.stderr[-3000:]}")
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    ends = [0.0, *reported["step_ends"]]
    durations = [b - a for a, b in itertools.pairwise(ends)]
    return {"trl": reported["trl"], "durations": durations}


def compare(comparison: Comparison, folder: Path, timeout: float) -> dict[str, Any]:
    """Both sides, rlm's first: the median step times, their ratio and TRL's version."""
    flags = rlm_flags(comparison, folder)
    case = run_case(comparison.name, comparison.algorithm, comparison.work.model, flags,
                    folder, timeout=timeout)  # fmt: skip
    if not case["passed"]:
        raise RuntimeError(f"rlm's {comparison.algorithm} failed:\n{case['failure']}")
    reference = run_reference(comparison, folder, timeout)
    trl_step = median_after_warmup(reference["durations"])
    return {
        "rlm_step_s": case["step_time_s"], "trl_step_s": trl_step, "trl": reference["trl"],
        "ratio": case["step_time_s"] / trl_step,
    }  # fmt: skip
