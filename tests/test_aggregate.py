"""Bootstrap intervals and the IQM against hand-computed values; the comparison report.

python -m pytest tests/test_aggregate.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rlm.aggregate import band, bootstrap_ci, curves_on_grid, iqm, summarize

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # rliable's IQM, scipy.stats.trim_mean(x, 0.25): int(0.25 n) samples dropped at each end.
        ([1.0, 2.0, 3.0, 4.0], 2.5),  # n = 4: drops 1 and 4 -> (2 + 3) / 2
        ([4.0, 1.0, 3.0, 2.0], 2.5),  # order does not matter
        ([1.0, 2.0, 3.0], (1 + 2 + 3) / 3),  # n = 3: int(0.75) = 0, nothing dropped: the mean
        ([0.0, 0.0, 6.0], (0 + 0 + 6) / 3),  # the mean, 2.0 (was 1.0 with fractional weights)
        ([5.0], 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0], 4.5),  # the outlier is trimmed away
        # n = 5: int(1.25) = 1 dropped at each end -> (2 + 3 + 4) / 3
        ([1.0, 2.0, 3.0, 4.0, 50.0], (2 + 3 + 4) / 3),
    ],
)
def test_iqm_by_hand(values, expected):
    assert iqm(values) == pytest.approx(expected)


def test_iqm_along_an_axis():
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 6.0, 0.0]])
    assert np.allclose(iqm(rows, axis=-1), [2.5, 0.0])


def test_bootstrap_of_two_values_by_hand():
    # Resampling {0, 1} twice: the mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4.
    # The 10th and 90th percentiles are then 0 and 1; the 30th and 70th are both 0.5.
    wide = bootstrap_ci([0.0, 1.0], np.mean, confidence=0.8, seed=3)
    assert (wide.estimate, wide.low, wide.high) == (0.5, 0.0, 1.0)
    narrow = bootstrap_ci([0.0, 1.0], np.mean, confidence=0.4, seed=3)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_bootstrap_of_three_values_by_hand():
    # Means of 3 draws from {0, 0, 3}: 3 * Binomial(3, 1/3) / 3 = K, K ~ Bin(3, 1/3):
    # P(0) = 8/27 ~ .296, P(1) = 12/27 ~ .444, P(2) = 6/27 ~ .222, P(3) = 1/27 ~ .037.
    # 95% interval: the 2.5th percentile is 0; the cumulative probability reaches only .963
    # at 2, below .975, so the 97.5th percentile is 3. 50% interval: the 25th percentile is
    # 0 (.296 > .25); the cumulative probability at 1 is .741 < .75, so the 75th is 2.
    ci = bootstrap_ci([0.0, 0.0, 3.0], np.mean, confidence=0.95, resamples=40_000, seed=0)
    assert (ci.estimate, ci.low, ci.high) == (1.0, 0.0, 3.0)
    half = bootstrap_ci([0.0, 0.0, 3.0], np.mean, confidence=0.5, resamples=40_000, seed=0)
    assert (half.low, half.high) == (0.0, 2.0)


def test_bootstrap_is_seeded_and_degenerate_data_has_no_width():
    a = bootstrap_ci([0.1, 0.5, 0.3, 0.9], iqm, seed=7)
    b = bootstrap_ci([0.1, 0.5, 0.3, 0.9], iqm, seed=7)
    assert a == b
    flat = bootstrap_ci([0.25, 0.25, 0.25], iqm)
    assert flat.low == flat.high == flat.estimate == 0.25


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.0)


def test_summarize_and_format():
    stats = summarize([0.2, 0.4, 0.3])
    assert stats["n"] == 3
    assert stats["mean"].estimate == pytest.approx(0.3)
    assert stats["iqm"].estimate == pytest.approx((0.2 + 0.3 + 0.4) / 3)  # 3 runs: the mean
    assert stats["mean"].format(2).startswith("+0.30 [")


def test_curves_on_a_grid_and_their_band():
    curves = [([0, 10, 20], [0.0, 1.0, 1.0]), ([0, 20], [0.0, 2.0])]
    values = curves_on_grid(curves, [0, 10, 20, 30])
    assert values[0].tolist()[:3] == [0.0, 1.0, 1.0] and values[1].tolist()[:3] == [0.0, 1.0, 2.0]
    assert np.isnan(values[:, 3]).all()  # no run reached 30 tokens
    mean, low, high = band(values)
    assert mean[:3].tolist() == [0.0, 1.0, 1.5]
    assert low[1] == high[1] == 1.0  # both runs agree
    assert low[2] <= 1.5 <= high[2] and np.isnan(mean[3])
