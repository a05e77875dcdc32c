"""The PPO maths of :mod:`rlm.ppo` against values worked out by hand.

Every expected number below is a literal with the arithmetic in a comment; none is
recomputed with the formula under test.

Run: ``python -m pytest tests/test_ppo_math.py -q``
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlm.ppo import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    explained_variance,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)

LN2 = 0.6931471805599453  # log 2
LN1_5 = 0.4054651081081644  # log 1.5


def t(*rows: list[float]) -> torch.Tensor:
    """A float tensor, one row per argument."""
    return torch.tensor(rows, dtype=torch.float64)


# --- masked statistics -------------------------------------------------------------------


def test_masked_mean_excludes_masked_entries() -> None:
    x = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    mask = t([1, 1, 0], [0, 0, 1])
    # (1 + 2 + 6) / 3 = 3
    assert_close(masked_mean(x, mask), torch.tensor(3.0, dtype=torch.float64))
    # row 0: (1 + 2) / 2 = 1.5; row 1: 6 / 1 = 6
    assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 6.0], dtype=torch.float64))
    # column 0: 1 / 1; column 1: 2 / 1; column 2: 6 / 1
    assert_close(masked_mean(x, mask, dim=0), torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64))


def test_masked_mean_of_an_empty_mask_is_zero_not_nan() -> None:
    x = t([1.0, 2.0])
    assert masked_mean(x, torch.zeros_like(x)).item() == 0.0


def test_masked_var_excludes_masked_entries() -> None:
    x = t([1.0, 2.0, 3.0, 100.0])
    mask = t([1, 1, 1, 0])
    # mean 2; squared deviations 1, 0, 1 -> sum 2
    assert masked_var(x, mask).item() == pytest.approx(1.0)  # 2 / (3 - 1)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)  # 2 / 3


def test_masked_whiten_has_mean_zero_unit_variance_and_zeros_where_masked() -> None:
    x = t([1.0, 2.0, 100.0, 3.0])
    mask = t([1, 1, 0, 1])
    # mean 2, unbiased variance (1 + 0 + 1) / 2 = 1 -> (x - 2) / 1
    assert_close(masked_whiten(x, mask), t([-1.0, 0.0, 0.0, 1.0]))
    # shift_mean=False adds the mean back: (x - 2) / 1 + 2 = x on the masked entries
    assert_close(masked_whiten(x, mask, shift_mean=False), t([1.0, 2.0, 0.0, 3.0]))


def test_masked_whiten_scales_to_unit_variance() -> None:
    x = t([0.0, 4.0, -50.0], [8.0, 0.0, 0.0])
    mask = t([1, 1, 0], [1, 0, 0])
    # over 0, 4, 8: mean 4; deviations -4, 0, 4; unbiased variance (16 + 0 + 16) / 2 = 16, sd 4
    whitened = masked_whiten(x, mask)
    assert_close(whitened, t([-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]))
    kept = whitened[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0)
    assert kept.var().item() == pytest.approx(1.0)  # torch's var is Bessel-corrected too


# --- KL and rewards ----------------------------------------------------------------------


def test_kl_k1_is_the_log_ratio() -> None:
    logprobs = t([math.log(0.5), math.log(0.25), math.log(0.1)])
    ref = t([math.log(0.25), math.log(0.5), math.log(0.1)])
    # log 0.5 - log 0.25 = log 2; log 0.25 - log 0.5 = -log 2; equal -> 0
    assert_close(kl_estimate(logprobs, ref, "k1"), t([LN2, -LN2, 0.0]))
    assert_close(kl_estimate(logprobs, ref), t([LN2, -LN2, 0.0]))  # k1 is the default


def test_kl_k3_by_hand_and_never_negative() -> None:
    logprobs = t([math.log(0.5), math.log(0.25), math.log(0.1)])
    ref = t([math.log(0.25), math.log(0.5), math.log(0.1)])
    # k3 = (q/p - 1) - log(q/p)
    # p=0.5,  q=0.25: (0.5 - 1) - log 0.5 = -0.5 + 0.693147 = 0.193147
    # p=0.25, q=0.5:  (2 - 1) - log 2     =  1 - 0.693147    = 0.306853
    # p = q: 0
    k3 = kl_estimate(logprobs, ref, "k3")
    assert_close(k3, t([-0.5 + LN2, 1.0 - LN2, 0.0]))
    assert (k3 >= 0).all()


def test_kl_k3_is_non_negative_on_random_log_probs() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(1000, generator=generator) * 10
    ref = -torch.rand(1000, generator=generator) * 10
    assert (kl_estimate(logprobs, ref, "k3") >= 0).all()


def test_kl_unknown_estimator_raises() -> None:
    with pytest.raises(ValueError, match="k2"):
        kl_estimate(t([0.0]), t([0.0]), "k2")  # type: ignore[arg-type]


def test_token_rewards() -> None:
    scores = t([0.0, 0.0, 1.0, 0.0])
    kl = t([0.1, -0.2, 0.3, 5.0])
    mask = t([1, 1, 1, 0])
    # 0 - 0.5*0.1 = -0.05; 0 - 0.5*(-0.2) = 0.1; 1 - 0.5*0.3 = 0.85; masked -> 0
    assert_close(token_rewards(scores, kl, 0.5, mask), t([-0.05, 0.1, 0.85, 0.0]))


# --- GAE ---------------------------------------------------------------------------------


def test_gae_gamma_1_lambda_1_is_return_to_go_minus_value() -> None:
    rewards = t([0.0, 0.0, 1.0])
    values = t([0.5, 0.6, 0.7])
    advantages, returns = compute_gae(rewards, values, torch.ones_like(rewards), 1.0, 1.0)
    # return-to-go is 1 at every token; 1 - 0.5, 1 - 0.6, 1 - 0.7
    assert_close(advantages, t([0.5, 0.4, 0.3]))
    assert_close(returns, t([1.0, 1.0, 1.0]))


# gamma = 0.9, lambda = 0.8 (gamma * lambda = 0.72), rewards 1, 0, 2, values 0.5, 1.0, 1.5:
# t=2: delta = 2 + 0.9*0   - 1.5 = 0.5;   A = 0.5
# t=1: delta = 0 + 0.9*1.5 - 1.0 = 0.35;  A = 0.35 + 0.72*0.5  = 0.71
# t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4;   A = 1.4  + 0.72*0.71 = 1.9112
# returns = A + V = 2.4112, 1.71, 2.0
GAE_ADVANTAGES = [1.9112, 0.71, 0.5]
GAE_RETURNS = [2.4112, 1.71, 2.0]


def test_gae_by_hand() -> None:
    rewards = t([1.0, 0.0, 2.0])
    values = t([0.5, 1.0, 1.5])
    advantages, returns = compute_gae(rewards, values, torch.ones_like(rewards), 0.9, 0.8)
    assert_close(advantages, t(GAE_ADVANTAGES))
    assert_close(returns, t(GAE_RETURNS))


def test_gae_skips_environment_tokens_in_the_middle() -> None:
    # The same three policy tokens with an environment token (mask 0) after the first; its
    # reward and value are junk that must not leak into the result.
    rewards = t([1.0, 99.0, 0.0, 2.0])
    values = t([0.5, -7.0, 1.0, 1.5])
    mask = t([1, 0, 1, 1])
    advantages, returns = compute_gae(rewards, values, mask, 0.9, 0.8)
    a0, a1, a2 = GAE_ADVANTAGES
    r0, r1, r2 = GAE_RETURNS
    assert_close(advantages, t([a0, 0.0, a1, a2]))
    assert_close(returns, t([r0, 0.0, r1, r2]))


def test_gae_right_padding_in_a_batch() -> None:
    # Row 0: the hand-computed row plus two padding tokens with junk rewards and values.
    # Row 1: one token, reward 1, value 0.25: A = 1 - 0.25 = 0.75, return 1.
    rewards = t([1.0, 0.0, 2.0, 5.0, 5.0], [1.0, 3.0, 3.0, 3.0, 3.0])
    values = t([0.5, 1.0, 1.5, 9.0, 9.0], [0.25, 4.0, 4.0, 4.0, 4.0])
    mask = t([1, 1, 1, 0, 0], [1, 0, 0, 0, 0])
    advantages, returns = compute_gae(rewards, values, mask, 0.9, 0.8)
    assert_close(advantages, t([*GAE_ADVANTAGES, 0.0, 0.0], [0.75, 0.0, 0.0, 0.0, 0.0]))
    assert_close(returns, t([*GAE_RETURNS, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]))


# --- losses ------------------------------------------------------------------------------


def test_policy_loss_clipping_by_hand() -> None:
    # clip range 0.2; columns: (A=+1, r=1.5), (A=+1, r=0.5), (A=-1, r=1.5), (A=-1, r=0.5),
    # and a masked column with extreme values.
    old = t([0.0, 0.0, 0.0, 0.0, 0.0])
    new = t([LN1_5, -LN2, LN1_5, -LN2, 10.0]).requires_grad_()
    advantages = t([1.0, 1.0, -1.0, -1.0, 100.0])
    mask = t([1, 1, 1, 1, 0])
    loss, stats = policy_loss(new, old, advantages, mask, clip_range=0.2)
    # per token max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   A=+1 r=1.5: max(-1.5, -1.2) = -1.2  clipped (active)
    #   A=+1 r=0.5: max(-0.5, -0.8) = -0.5  unclipped
    #   A=-1 r=1.5: max( 1.5,  1.2) =  1.5  unclipped
    #   A=-1 r=0.5: max( 0.5,  0.8) =  0.8  clipped (active)
    # loss = (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.15; clipfrac = 2 / 4
    assert loss.item() == pytest.approx(0.15)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    # mean ratio (1.5 + 0.5 + 1.5 + 0.5) / 4 = 1
    assert stats["ratio"].item() == pytest.approx(1.0)
    # approx_kl = mean of (r - 1) - log r:
    #   r=1.5: 0.5 - 0.405465 = 0.094535;  r=0.5: -0.5 + 0.693147 = 0.193147
    #   (0.094535 + 0.193147) / 2 = 0.143841
    assert stats["approx_kl"].item() == pytest.approx(0.143841, abs=1e-6)
    # Gradients: zero where clipping is active; d(-A*r)/dlogp = -A*r, divided by 4 tokens.
    loss.backward()
    # -1*0.5/4 = -0.125; +1*1.5/4 = 0.375
    assert_close(new.grad, t([0.0, -0.125, 0.375, 0.0, 0.0]))


def test_policy_loss_without_clipping_is_minus_advantage_times_ratio() -> None:
    old = t([0.0, 0.0])
    new = t([LN1_5, -LN2])  # ratios 1.5 and 0.5
    advantages = t([2.0, -4.0])
    loss, stats = policy_loss(new, old, advantages, torch.ones_like(old), clip_range=10.0)
    # (-2*1.5 + 4*0.5) / 2 = (-3 + 2) / 2 = -0.5
    assert loss.item() == pytest.approx(-0.5)
    assert stats["clipfrac"].item() == 0.0


def test_value_loss_clipped_by_hand() -> None:
    values = t([1.0, 0.5, 0.0, 42.0])
    old_values = t([0.5, 0.5, 0.5, 0.0])
    returns = t([1.0, 0.0, 1.0, 0.0])
    mask = t([1, 1, 1, 0])
    loss, stats = value_loss(values, old_values, returns, mask, clip_range=0.2)
    # v=1.0: unclipped (1-1)^2 = 0; clipped 0.5+0.2 = 0.7, (0.7-1)^2 = 0.09 -> 0.09 (clip wins)
    # v=0.5: unclipped 0.25; clipped 0.5 (no move), 0.25 -> 0.25
    # v=0.0: unclipped (0-1)^2 = 1; clipped 0.5-0.2 = 0.3, (0.3-1)^2 = 0.49 -> 1
    # loss = 0.5 * (0.09 + 0.25 + 1) / 3 = 0.5 * 1.34 / 3 = 0.223333
    assert loss.item() == pytest.approx(0.67 / 3)
    assert stats["vf_clipfrac"].item() == pytest.approx(1 / 3)


def test_explained_variance() -> None:
    returns = t([1.0, 2.0, 3.0, 50.0])
    mask = t([1, 1, 1, 0])
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)
    # residuals 0, 0, 1: mean 1/3, variance (1/9 + 1/9 + 4/9) / 3 = 2/9
    # returns variance (1 + 0 + 1) / 3 = 2/3; 1 - (2/9) / (2/3) = 1 - 1/3 = 2/3
    assert explained_variance(t([1.0, 2.0, 2.0, 0.0]), returns, mask) == pytest.approx(2 / 3)
    constant = t([2.0, 2.0, 2.0, 7.0])
    assert math.isnan(explained_variance(t([1.0, 2.0, 3.0, 0.0]), constant, mask))


# --- KL controllers ----------------------------------------------------------------------


def test_fixed_kl_controller_never_changes() -> None:
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=1000)
    assert controller.value == 0.05


@pytest.mark.parametrize(
    ("current_kl", "n_steps", "expected"),
    [
        # error 5.4/6 - 1 = -0.1; 0.2 * (1 - 0.1 * 1000/10000) = 0.2 * 0.99 = 0.198
        (5.4, 1000, 0.198),
        # error 7.2/6 - 1 = 0.2 (at the bound); 0.2 * (1 + 0.2 * 0.1) = 0.204
        (7.2, 1000, 0.204),
        # error 7.5/6 - 1 = 0.25 -> clipped to 0.2; 0.2 * (1 + 0.2 * 256/10000) = 0.201024
        (7.5, 256, 0.201024),
        # error 600/6 - 1 = 99 -> 0.2; 0.2 * (1 + 0.2 * 1) = 0.24
        (600.0, 10000, 0.24),
        # error 0/6 - 1 = -1 -> -0.2; 0.2 * (1 - 0.2 * 1) = 0.16
        (0.0, 10000, 0.16),
        # on target: error 0, unchanged
        (6.0, 5000, 0.2),
    ],
)
def test_adaptive_kl_controller_update(current_kl: float, n_steps: int, expected: float) -> None:
    controller = AdaptiveKLController(value=0.2, target=6.0, horizon=10000)
    controller.update(current_kl, n_steps)
    assert controller.value == pytest.approx(expected)


def test_adaptive_kl_controller_updates_compound() -> None:
    controller = AdaptiveKLController(value=0.2, target=6.0, horizon=10000)
    controller.update(600.0, 10000)  # 0.2 * 1.2 = 0.24
    controller.update(600.0, 10000)  # 0.24 * 1.2 = 0.288
    assert controller.value == pytest.approx(0.288)


def test_kl_controllers_state_dict_round_trip() -> None:
    adaptive = AdaptiveKLController(value=0.2, target=6.0, horizon=10000)
    adaptive.update(7.5, 256)
    restored = AdaptiveKLController(value=1.0, target=1.0, horizon=1)
    restored.load_state_dict(adaptive.state_dict())
    assert restored == adaptive
    assert restored.value == pytest.approx(0.201024)
    # The restored controller continues exactly like the original.
    adaptive.update(3.0, 100)
    restored.update(3.0, 100)
    assert restored.value == adaptive.value

    fixed = FixedKLController(0.3)
    other = FixedKLController(0.0)
    other.load_state_dict(fixed.state_dict())
    assert other == fixed
