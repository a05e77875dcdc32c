"""Aggregating runs over seeds: bootstrap confidence intervals of the mean and the IQM.

A handful of seeds per algorithm is what RL comparisons can afford, so point estimates
come with percentile-bootstrap intervals (resampling runs with replacement, a seeded
generator: the same inputs always give the same interval), for two statistics:

- the mean;
- the interquartile mean (IQM, Agarwal et al. 2021, "Deep RL at the edge of the
  statistical precipice"): the mean of the middle half of the empirical distribution.
  Samples straddling the 25th or 75th percentile count with the fraction of their
  probability mass inside, so the IQM of 3 runs is ``(x1 + 4 x2 + x3) / 6`` (sorted)
  rather than the plain mean that dropping whole samples (``scipy.stats.trim_mean``)
  would give for fewer than 4 runs.

Learning curves logged at different x values (generated tokens, say) are put on one grid
by linear interpolation (:func:`curves_on_grid`) and banded point by point (:func:`band`).

Example:
    >>> iqm([1.0, 2.0, 3.0, 4.0])
    2.5
    >>> ci = bootstrap_ci([0.1, 0.4, 0.35, 0.5], np.mean, seed=0)
    >>> ci.low <= ci.estimate <= ci.high
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Statistic = Callable[..., NDArray[np.float64] | np.floating | float]
"""A statistic over the last axis: ``statistic(values, axis=-1)``, like ``np.mean``."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def format(self, digits: int = 3, signed: bool = True) -> str:
        """``+0.412 [+0.350, +0.480]``."""
        spec = f"{'+' if signed else ''}.{digits}f"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def _iqm_weights(n: int) -> NDArray[np.float64]:
    """Weight of each sorted sample in the IQM: its mass inside [0.25, 0.75], over 0.5."""
    edges = np.arange(n + 1) / n
    inside = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return inside / 0.5


def iqm(values: ArrayLike, axis: int = -1) -> NDArray[np.float64] | float:
    """Interquartile mean along ``axis``: the mean of the middle 50% of the distribution.

    Example:
        >>> iqm([1.0, 2.0, 3.0])  # (1 + 4*2 + 3) / 6
        2.0
        >>> round(iqm([0.0, 0.0, 6.0]), 12)
        1.0
    """
    array = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    array = np.moveaxis(array, axis, -1)
    result = array @ _iqm_weights(array.shape[-1])
    return float(result) if np.ndim(result) == 0 else result


def bootstrap_ci(
    values: ArrayLike,
    statistic: Statistic = np.mean,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of ``statistic`` over ``values`` (one value per run).

    Args:
        values: one number per run (seed).
        statistic: a function reducing the last axis, e.g. ``np.mean`` or :func:`iqm`.
        confidence: the interval's coverage, in (0, 1).
        resamples: bootstrap resamples (runs drawn with replacement).
        seed: seed of the resampling generator.

    Raises:
        ValueError: no values, a NaN, or a confidence outside (0, 1).

    Example:
        >>> bootstrap_ci([0.0, 1.0], confidence=0.8).format(2)
        '+0.50 [+0.00, +1.00]'
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if np.isnan(data).any():
        raise ValueError("bootstrap_ci got NaN: drop runs that did not finish first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    samples = data[rng.integers(0, data.size, size=(resamples, data.size))]
    stats = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    estimate = float(np.asarray(statistic(data[None, :], axis=-1)).ravel()[0])
    return Interval(estimate, float(low), float(high), confidence)


def summarize(values: Sequence[float], *, seed: int = 0, confidence: float = 0.95) -> dict:
    """Mean and IQM of ``values``, each with its bootstrap interval.

    Example:
        >>> sorted(summarize([0.2, 0.4, 0.3]))
        ['iqm', 'mean', 'n']
    """
    return {
        "n": len(values),
        "mean": bootstrap_ci(values, np.mean, seed=seed, confidence=confidence),
        "iqm": bootstrap_ci(values, iqm, seed=seed, confidence=confidence),
    }


def curves_on_grid(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], grid: ArrayLike
) -> NDArray[np.float64]:
    """Each run's curve ``(x, y)`` linearly interpolated at ``grid``: ``[runs, len(grid)]``.

    Points beyond a run's last x are NaN (the run never got there), not extrapolated.

    Example:
        >>> curves_on_grid([([0, 10], [0.0, 1.0])], [0, 5, 20]).tolist()
        [[0.0, 0.5, nan]]
    """
    grid = np.asarray(grid, dtype=np.float64)
    rows = []
    for x, y in curves:
        x_arr = np.asarray(x, dtype=np.float64)
        order = np.argsort(x_arr, kind="stable")
        x_arr, y_arr = x_arr[order], np.asarray(y, dtype=np.float64)[order]
        row = np.interp(grid, x_arr, y_arr)
        row[(grid > x_arr[-1]) | (grid < x_arr[0])] = np.nan
        rows.append(row)
    return np.vstack(rows)


def band(
    values: NDArray[np.float64], *, confidence: float = 0.95, resamples: int = 2_000, seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean and bootstrap interval across runs at each grid point of ``[runs, points]``.

    Points where some run has no value (NaN) are NaN in all three outputs.
    """
    mean = np.full(values.shape[1], np.nan)
    low, high = mean.copy(), mean.copy()
    for j in range(values.shape[1]):
        column = values[:, j]
        if np.isnan(column).any():
            continue
        interval = bootstrap_ci(
            column, np.mean, confidence=confidence, resamples=resamples, seed=seed
        )
        mean[j], low[j], high[j] = interval.estimate, interval.low, interval.high
    return mean, low, high
