"""One PPO iteration's learning: from scored episodes to optimizer steps.

:func:`compute_advantages` turns episodes (env scores, log-probs, reference log-probs,
values) into per-token rewards, advantages and returns; :func:`ppo_update` runs the
clipped policy and value losses for several epochs over shuffled minibatches, with
gradient accumulation through accelerate.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from rlm.errors import ConfigError
from rlm.policy import ActorCritic
from rlm.ppo import (
    AdaptiveKLController,
    FixedKLController,
    KLEstimator,
    compute_gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from rlm.rollout import ScoredEpisodes
from rlm.validation import check_ranges


@dataclass
class PPOSettings:
    """Hyper-parameters of the PPO update."""

    epochs: int = 2
    """Passes over each batch of episodes."""
    minibatches: int = 2
    """Optimizer steps per epoch; the batch is split into this many shuffled minibatches."""
    grad_accum: int = 1
    """Micro-batches per minibatch (gradient accumulation), to bound memory."""
    forward_batch_size: int | None = None
    """Episodes in each forward pass without gradients (the sampled tokens' log-probs,
    the values, the reference's log-probs); default: a minibatch's. Lower it when those
    passes run out of memory, raise it to fill a GPU: the numbers stay the same."""
    clip_range: float = 0.2
    """Clipping of the probability ratio in the policy loss."""
    value_clip_range: float = 0.2
    """Clipping of value updates in the value loss."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount per policy token."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean, unit variance over the batch's tokens."""
    kl_coef: float = 0.05
    """Weight of the per-token KL penalty to the reference in the reward (the initial
    value with --adaptive-kl)."""
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimate in the reward penalty: k1 (log ratio) or k3."""
    adaptive_kl: bool = False
    """Adapt the KL coefficient towards target_kl (Ziegler et al. 2019)."""
    target_kl: float = 6.0
    """Target sequence KL (nats) of the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon (episodes) of the adaptive controller."""
    value_model: str | None = None
    """Separate critic trunk (same tokenizer as the policy); default: a head on the policy."""

    def validate(self, batch_size: int) -> None:
        """Raise :class:`ConfigError` for values out of range for a batch of ``batch_size``."""
        check_ranges(
            self,
            at_least_one=[
                "epochs",
                "minibatches",
                "grad_accum",
                "kl_horizon",
                "forward_batch_size",
            ],
            positive=["clip_range", "value_clip_range", "target_kl"],
            non_negative=["kl_coef", "vf_coef"],
            unit_interval=["gamma", "lam"],
        )
        if batch_size % (self.minibatches * self.grad_accum):
            raise ConfigError(
                f"--batch-size ({batch_size}) must be divisible by --minibatches x "
                f"--grad-accum ({self.minibatches} x {self.grad_accum})"
            )

    def forward_batch(self, batch_size: int) -> int:
        """Episodes in each pass without gradients, for a batch of ``batch_size``."""
        return self.forward_batch_size or batch_size // self.minibatches

    def kl_controller(self) -> FixedKLController | AdaptiveKLController:
        """A fresh KL coefficient controller as configured."""
        if self.adaptive_kl:
            return AdaptiveKLController(self.kl_coef, self.target_kl, self.kl_horizon)
        return FixedKLController(self.kl_coef)


@dataclass(frozen=True)
class Advantages:
    """Per-token ``[batch, response_length]`` rewards (score minus KL penalty), advantages
    and returns."""

    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


@torch.no_grad()
def compute_advantages(scored: ScoredEpisodes, kl_coef: float, settings: PPOSettings) -> Advantages:
    """Per-token rewards (score minus ``kl_coef`` times the KL estimate), GAE advantages
    and returns."""
    mask = scored.episodes.action_mask.to(scored.logprobs.device)
    kl = kl_estimate(scored.logprobs, scored.ref_logprobs, settings.kl_estimator) * mask
    rewards = token_rewards(scored.episodes.scores.to(mask.device), kl, kl_coef, mask)
    advantages, returns = compute_gae(rewards, scored.values, mask, settings.gamma, settings.lam)
    if settings.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return Advantages(rewards, advantages, returns)


def ppo_update(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scored: ScoredEpisodes,
    advantages: Advantages,
    settings: PPOSettings,
    *,
    temperature: float,
    max_grad_norm: float,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Run ``epochs x minibatches`` optimizer steps on one batch; return mean statistics.

    ``model`` is the accelerate-prepared :class:`ActorCritic` (possibly DDP-wrapped);
    ``accelerator.gradient_accumulation_steps`` must equal ``settings.grad_accum``. A step
    whose gradient norm is not finite (a NaN or infinite loss, logit or value upstream) is
    skipped, its gradients dropped, and counted in ``train/skipped_updates``: the weights
    never take a non-finite step. (The norm is of the gradients summed over processes, so
    every process skips the same steps.)
    """
    start = time.perf_counter()
    device = accelerator.device
    episodes = scored.episodes
    batch = len(episodes)
    minibatch = batch // settings.minibatches
    micro = minibatch // settings.grad_accum
    old_logprobs, old_values = scored.logprobs, scored.values
    stats: dict[str, list[float]] = defaultdict(list)
    skipped = 0
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(batch, generator=generator)
        for lo in range(0, settings.minibatches * minibatch, minibatch):
            for mlo in range(lo, lo + minibatch, micro):
                idx = order[mlo : mlo + micro]
                mask = episodes.action_mask[idx].to(device)
                with accelerator.accumulate(model):
                    out = model(
                        episodes.input_ids[idx].to(device),
                        episodes.attention_mask[idx].to(device),
                        episodes.response_start,
                        temperature,
                    )
                    pg_loss, pg_stats = policy_loss(
                        out.logprobs,
                        old_logprobs[idx],
                        advantages.advantages[idx],
                        mask,
                        settings.clip_range,
                    )
                    vf_loss, vf_stats = value_loss(
                        out.values,
                        old_values[idx],
                        advantages.returns[idx],
                        mask,
                        settings.value_clip_range,
                    )
                    loss = pg_loss + settings.vf_coef * vf_loss
                    accelerator.backward(loss)
                    finite = True
                    if accelerator.sync_gradients:
                        grad_norm = float(
                            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                        )
                        finite = math.isfinite(grad_norm)
                        if finite:
                            stats["grad_norm"].append(grad_norm)
                        else:
                            skipped += 1
                    if finite:
                        optimizer.step()
                        if accelerator.sync_gradients:
                            scheduler.step()
                    optimizer.zero_grad()
                stats["policy_loss"].append(pg_loss.item())
                stats["value_loss"].append(vf_loss.item())
                for key, value in {**pg_stats, **vf_stats}.items():
                    stats[key].append(value.item())
    result = {f"train/{k}": sum(v) / len(v) for k, v in stats.items()}
    result["train/skipped_updates"] = skipped
    result["perf/time_update"] = time.perf_counter() - start
    return result


@torch.no_grad()
def episode_statistics(scored: ScoredEpisodes, advantages: Advantages) -> dict[str, torch.Tensor]:
    """Per-episode quantities to average across processes (all shape ``[batch]``)."""
    episodes = scored.episodes
    mask = episodes.action_mask.to(scored.logprobs.device)
    reward = episodes.returns.to(mask.device)
    return {
        "reward": reward,
        "kl": scored.sequence_kl,
        "completion_length": mask.sum(1),
        "turns": torch.tensor([len(c) for c in episodes.completions], dtype=torch.float32),
        "entropy": masked_mean(scored.entropy, mask, dim=1),
        "non_score_reward": (advantages.rewards * mask).sum(1) - reward,
        "value_mean": masked_mean(scored.values, mask, dim=1),
    }


def unwrap_actor_critic(accelerator: Accelerator, model: torch.nn.Module) -> ActorCritic:
    """The :class:`ActorCritic` inside whatever accelerate wrapped it in."""
    unwrapped = accelerator.unwrap_model(model)
    assert isinstance(unwrapped, ActorCritic)
    return unwrapped
