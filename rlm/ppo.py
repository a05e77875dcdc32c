"""The mathematics of PPO on token sequences, as pure functions on tensors.

Shapes: ``[batch, response_length]`` over the response region of each sequence. A
``mask`` marks the policy's own tokens (1); prompt padding, right padding and, in
multi-turn episodes, the environment's text are 0 and take no part in any loss or
statistic. Each policy token is one action; the environment's reward for a turn is placed
on the last token of that turn.

References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Ziegler et al. 2019
(per-token KL penalty, adaptive coefficient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` where ``mask`` is 1 (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    count = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Scale ``x`` to unit variance (and zero mean) over the masked entries; others become 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs.

    ``k1`` is ``log p - log q`` (unbiased, can be negative); ``k3`` is
    ``(q/p - 1) - log(q/p)`` (unbiased, never negative, lower variance). See J. Schulman,
    "Approximating KL divergence", 2020.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor
) -> torch.Tensor:
    """The reward of each policy token: the env's score (on turn ends) minus ``kl_coef * kl``."""
    return (scores - kl_coef * kl) * mask


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over the masked tokens of each row.

    Tokens with mask 0 are skipped: the step after a policy token is the next policy token
    of the same row, even if environment text lies between them, and the value after the
    last policy token of a row is 0 (the episode ends there).

    Returns:
        ``(advantages, returns)``, zero where ``mask`` is 0.
    """
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(batch, dtype=values.dtype, device=values.device)
    next_advantage = torch.zeros_like(next_value)
    mask = mask.bool()
    for t in reversed(range(length)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(m, advantage, 0.0)
        # Carry the running quantities over masked positions unchanged (torch.where, not a
        # product, so that junk such as NaN at a masked position cannot leak through).
        next_value = torch.where(m, values[:, t], next_value)
        next_advantage = torch.where(m, advantage, next_advantage)
    returns = torch.where(mask, advantages + values, 0.0)
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate loss, averaged over masked tokens.

    Returns:
        The loss and diagnostics: ``clipfrac`` (share of tokens where clipping was active)
        and ``approx_kl`` (the k3 estimate of KL(old || new)).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``0.5 * max((v - R)^2, (clip(v) - R)^2)`` over masked tokens."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    losses = torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean(((values - returns) ** 2 < losses).float(), mask)}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(R - v) / Var(R)`` over masked tokens; NaN when the returns are constant."""
    var_returns = masked_var(returns, mask, unbiased=False)
    if var_returns.item() == 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask, unbiased=False) / var_returns)


@dataclass
class FixedKLController:
    """A constant KL coefficient."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """Adapts the KL coefficient towards a target KL (Ziegler et al. 2019, eq. 2).

    ``value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``
    """

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])
