"""The settings every experiment shares, whatever its algorithm.

Each experiment's config is two dataclasses: :class:`RunSettings` (this module), and one
small dataclass of its algorithm's own knobs (PPO's epochs and clipping, GRPO's group
size, SFT's demonstrations). Every field is a flag of the same name in every script:
``--steps`` always counts training iterations (one batch of episodes and its update),
``--output-dir`` is always the parent of run folders, and so on.

Example:
    >>> settings = RunSettings(steps=4, batch_size=8)
    >>> settings.validate()
    >>> eval_seed(settings.seed)
    10001
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from rlm.alarms import AlarmSettings
from rlm.errors import ConfigError
from rlm.policy import LoraSettings
from rlm.rollout import GenerationSettings
from rlm.tracking import TrackingSettings
from rlm.validation import check_ranges

PromptFormatName = Literal["auto", "plain", "chat"]
DtypeName = Literal["auto", "float32", "bfloat16"]


def eval_seed(seed: int) -> int:
    """The sampling seed of held-out evaluations: evaluations before and after training,
    and a finished run evaluated again, all draw the same random stream."""
    return seed + 10_000


def resolve_dtype(name: DtypeName) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it, float32 elsewhere: on a CPU a
    bfloat16 PPO step is slower, even where AMX makes its matmuls several times faster
    (docs/performance.md)."""
    if name == "bfloat16" or (
        name == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


@dataclass
class RunSettings:
    """Task, model, reward, budget, optimisation, evaluation, logging: every algorithm's."""

    # --- task and model
    env_id: str = "rlm/Sentiment-v0"
    """Registered environment id (`python -m rlm list-envs`), or module:id to import module."""
    model: str = "default"
    """Policy: 'default' (embedded SmolLM2-135M-Instruct), a local folder (a run's policy/),
    or a Hub id."""
    trust_remote_code: bool = False
    """Run the Python code a Hub model ships with (its own architecture). Off: loading
    such a model stops with an error that names this flag."""
    prompt_format: PromptFormatName = "auto"
    """'plain' continues the observation text; 'chat' wraps turns in the chat template;
    'auto' is chat for conversational tasks (when the tokenizer has a template), else plain."""
    seed: int = 1
    """Seed of everything: prompts, sampling, initialisation."""
    exp_name: str | None = None
    """Experiment name, part of the run name (default: the algorithm's name)."""

    # --- reward
    reward: str | None = None
    """Reward replacing the environment's: a scorer name, a weighted sum such as
    '0.7*vader + 0.3*repetition', 'env + 0.5*unfinished', a reward-model folder, or
    module:function (docs/rewards.md). Default: the environment's own."""
    heldout_reward: str | None = None
    """A second reward scored on the same samples but never trained on, to watch
    over-optimisation (eval/heldout_reward_mean)."""
    normalize_reward: bool = False
    """Standardise training rewards by their running mean and std (evaluation stays raw)."""
    reward_clip: float | None = None
    """Clip training rewards to [-clip, clip] (after normalising, if on)."""
    reward_timeout: float | None = None
    """Seconds a reward call may take before the run stops with an error naming the
    reward (a hung reward-model server); default: no limit."""

    # --- budget and sampling
    steps: int = 30
    """Training iterations: one batch of episodes (or demonstrations) and its update each."""
    token_budget: int | None = None
    """Stop after the step in which this many policy tokens were generated for training
    (all processes): equal budgets across algorithms. --steps stays the upper bound."""
    batch_size: int = 16
    """Episodes (completions, or demonstrations for SFT) per step, per process."""
    max_new_tokens: int = 20
    """Tokens per completion (per turn) at most."""
    temperature: float = 1.0
    """Sampling temperature (also applied to log-probs in the losses)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with this much probability (1: off)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0: off)."""

    # --- optimisation
    lr: float = 1e-3
    """AdamW learning rate (of the LoRA adapter, or of all weights with --no-lora)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule over --steps (a --token-budget that ends the run sooner ends
    it before the schedule's end)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (global norm)."""
    max_skipped_steps: int = 3
    """Stop with an error after this many steps in a row in which an update was skipped
    for a non-finite loss, gradient, logit or value (training diverging: lower --lr)."""
    lora: bool = True
    """Train a LoRA adapter (reference = adapter off); --no-lora fine-tunes all weights."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    activation_checkpointing: bool = False
    """Recompute the model's activations in the update's backward pass instead of keeping
    them: the update's memory falls to one layer's input per token, for a second forward
    pass. Generation and the passes without gradients are unchanged."""

    # --- evaluation
    eval_every: int = 15
    """Evaluate on held-out prompts every this many steps (and before and after training)."""
    eval_prompts: int = 64
    """Held-out prompts per evaluation: the first ones of the eval split (all, if it has fewer)."""
    eval_batch_size: int = 32
    """Held-out prompts generated at once, at most."""
    samples_logged: int = 16
    """Evaluation samples in each W&B and TensorBoard table (samples.jsonl keeps them all)."""
    alarms: Annotated[AlarmSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=AlarmSettings
    )
    """Thresholds on each evaluation's over-optimisation diagnostics (docs/diagnostics.md)."""

    # --- run folder, trackers, checkpoints
    tracking: Annotated[TrackingSettings, tyro.conf.OmitArgPrefixes] = field(
        default_factory=TrackingSettings
    )
    """Where the run folder goes and what it logs to."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every this many steps (and at the end)."""
    config: Path | None = None
    """A YAML file, or a run's config.json, that sets any of these fields; flags override it."""
    resume: Path | None = None
    """Run folder to continue from its newest checkpoint, with its own settings."""
    stop_after: int | None = None
    """Stop (resumably) after this step, as a preempted job would."""

    # --- machine
    dtype: DtypeName = "auto"
    """Weights' dtype: auto is bfloat16 on a GPU that supports it, float32 on CPU (and
    with --mixed-precision bf16, which keeps float32 weights)."""
    mixed_precision: Literal["no", "bf16"] = "no"
    """bf16: float32 weights and optimizer state, the forward and backward passes in
    bfloat16 (autocast). no: every pass in the weights' dtype."""
    use_vllm: bool = False
    """Sample training rollouts with a vLLM engine on this process's GPU (PPO: rlm's
    engine, its weights pushed after each update; GRPO, RLOO: TRL's). Needs a GPU and
    pip install -e '.[vllm]'."""
    vllm_gpu_memory_utilization: float = 0.3
    """Share of the GPU's memory the vLLM engine may take (weights and KV cache)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range, before anything is loaded."""
        check_ranges(
            self,
            at_least_one=["steps", "token_budget", "batch_size", "max_new_tokens", "eval_every",
                          "eval_prompts", "eval_batch_size", "checkpoint_every", "lora_r",
                          "lora_alpha", "stop_after", "threads", "max_skipped_steps"],
            positive=["lr", "temperature", "reward_clip", "max_grad_norm", "reward_timeout",
                      "vllm_gpu_memory_utilization"],
            non_negative=["weight_decay", "top_k", "samples_logged"],
        )  # fmt: skip
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.mixed_precision == "bf16" and self.dtype == "bfloat16":
            raise ConfigError(
                f"--mixed-precision bf16 keeps float32 weights: it does not go with --dtype "
                f"{self.dtype} (use --dtype float32 or auto)"
            )
        if self.vllm_gpu_memory_utilization > 1:
            raise ConfigError("--vllm-gpu-memory-utilization is a share of the GPU: at most 1")
        self.alarms.validate()

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the model's weights are loaded in (float32 under mixed precision)."""
        return torch.float32 if self.mixed_precision == "bf16" else resolve_dtype(self.dtype)

    @property
    def generation(self) -> GenerationSettings:
        """How completions are sampled, in training and in evaluation."""
        return GenerationSettings(self.max_new_tokens, self.temperature, self.top_k, self.top_p)

    @property
    def lora_settings(self) -> LoraSettings | None:
        """The LoRA adapter, or None with --no-lora."""
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha) if self.lora else None
