"""Aggregating runs over seeds: bootstrap confidence intervals of the mean and the IQM.

Built on ``rliable`` (Agarwal et al. 2021, "Deep RL at the edge of the statistical
precipice"): its aggregate metrics (``rliable.metrics.aggregate_mean``,
``aggregate_iqm``) and its stratified percentile bootstrap
(``rliable.library.get_interval_estimates``). One task here, so the score matrix is
``[runs, 1]`` and the stratified bootstrap is the plain bootstrap over runs.

A handful of seeds per algorithm is what RL comparisons can afford, so point estimates
come with percentile-bootstrap intervals (runs resampled with replacement; the same
inputs and seed always give the same interval), for two statistics:

- the mean;
- the interquartile mean (IQM) as rliable defines it, the 25% trimmed mean
  ``scipy.stats.trim_mean(scores, proportiontocut=0.25)``: the ``int(n / 4)`` smallest
  and the ``int(n / 4)`` largest of the ``n`` runs are dropped *whole* and the rest
  averaged. For fewer than 4 runs nothing is dropped: **with 3 seeds the IQM equals the
  mean** (``iqm([0, 0, 6]) == 2``). (Before rliable, this module weighted the samples
  straddling the quartiles by their mass inside; that gave ``(x1 + 4 x2 + x3) / 6`` for
  3 runs. That definition is gone.)

rliable 1.2.0 resamples with NumPy's *global* generator (``np.random.choice`` in
``StratifiedBootstrap.update_indices``) and ignores the ``random_state`` it is given, so
:func:`bootstrap_ci` and :func:`band` seed that global generator with ``seed`` for the
call and put its previous state back afterwards (not thread-safe). rliable is imported
when first needed: ``import rliable.library`` takes 1 to 2 s (arch, statsmodels).

Learning curves logged at different x values (generated tokens, say) are put on one grid
by linear interpolation (:func:`curves_on_grid`, rliable has no such function) and banded
point by point (:func:`band`).

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

Aggregate = Callable[[NDArray[np.float64]], NDArray[np.float64] | np.floating | float]
"""An rliable aggregate function: a score matrix ``[runs, tasks, ...]`` to a scalar or 1-D
array."""


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


def iqm(values: ArrayLike, axis: int = -1) -> NDArray[np.float64] | float:
    """Interquartile mean along ``axis``: ``rliable.metrics.aggregate_iqm`` of each slice.

    That is the 25% trimmed mean: ``int(n / 4)`` samples dropped at each end, the rest
    averaged, so for ``n < 4`` the plain mean.

    Example:
        >>> iqm([1.0, 2.0, 3.0, 4.0, 100.0])  # drops 1 and 100: (2 + 3 + 4) / 3
        3.0
        >>> iqm([0.0, 0.0, 6.0])  # 3 samples: nothing dropped, the mean
        2.0
    """
    from rliable import metrics

    array = np.asarray(values, dtype=np.float64)
    if array.ndim <= 1:
        return float(metrics.aggregate_iqm(array))
    return np.apply_along_axis(metrics.aggregate_iqm, axis, array).astype(np.float64)


def _aggregate(statistic: Statistic) -> Aggregate:
    """The rliable aggregate over a ``[runs, 1]`` matrix that computes ``statistic``."""
    from rliable import metrics

    if statistic is np.mean:
        return metrics.aggregate_mean
    if statistic is iqm:
        return metrics.aggregate_iqm

    def aggregate(scores: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(statistic(scores.T, axis=-1), dtype=np.float64).ravel()

    return aggregate


def _interval_estimates(
    scores: NDArray[np.float64], func: Aggregate, *, confidence: float, reps: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """rliable's percentile-bootstrap point estimates ``[k]`` and intervals ``[2, k]``.

    rliable draws from NumPy's global generator whatever ``random_state`` says: seed it
    for the call, and give the caller back the state it had.
    """
    from rliable import library

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = library.get_interval_estimates(
            {"runs": scores},
            func,
            method="percentile",
            reps=reps,
            confidence_interval_size=confidence,
        )
    finally:
        np.random.set_state(state)
    point = np.asarray(points["runs"], dtype=np.float64).reshape(-1)
    return point, np.asarray(intervals["runs"], dtype=np.float64).reshape(2, -1)


def _check(data: NDArray[np.float64], confidence: float) -> None:
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if np.isnan(data).any():
        raise ValueError("bootstrap_ci got NaN: drop runs that did not finish first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(
    values: ArrayLike,
    statistic: Statistic = np.mean,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of ``statistic`` over ``values`` (one value per run).

    ``rliable.library.get_interval_estimates`` on the ``[runs, 1]`` score matrix, with
    ``rliable.metrics.aggregate_mean`` for ``np.mean``, ``aggregate_iqm`` for :func:`iqm`,
    and any other statistic applied to the runs of each resample.

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
    _check(data, confidence)
    point, interval = _interval_estimates(
        data[:, None], _aggregate(statistic), confidence=confidence, reps=resamples, seed=seed
    )
    return Interval(float(point[0]), float(interval[0, 0]), float(interval[1, 0]), confidence)


def summarize(values: Sequence[float], *, seed: int = 0, confidence: float = 0.95) -> dict:
    """Mean and IQM of ``values``, each with its bootstrap interval (10,000 resamples).

    One bootstrap for both: the resamples depend only on ``seed`` and the number of runs,
    so each interval is the one :func:`bootstrap_ci` gives with the same seed.

    Example:
        >>> sorted(summarize([0.2, 0.4, 0.3]))
        ['iqm', 'mean', 'n']
    """
    from rliable import metrics

    data = np.asarray(values, dtype=np.float64).ravel()
    _check(data, confidence)

    def both(scores: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])

    point, interval = _interval_estimates(
        data[:, None], both, confidence=confidence, reps=10_000, seed=seed
    )
    mean, iqm_ = (
        Interval(float(point[k]), float(interval[0, k]), float(interval[1, k]), confidence)
        for k in range(2)
    )
    return {"n": len(values), "mean": mean, "iqm": iqm_}


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

    One ``get_interval_estimates`` call over the ``[runs, 1, points]`` scores (rliable's
    layout for scores along training) with ``aggregate_mean`` at each point; the runs are
    resampled independently at each point. Points where some run has no value (NaN) are
    NaN in all three outputs.
    """
    from rliable import metrics

    values = np.asarray(values, dtype=np.float64)
    mean = np.full(values.shape[1], np.nan)
    low, high = mean.copy(), mean.copy()
    complete = ~np.isnan(values).any(axis=0)
    if not complete.any():
        return mean, low, high
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores = values[:, None, complete]

    def per_point(s: NDArray[np.float64]) -> NDArray[np.float64]:
        # aggregate_mean averages over runs, then tasks: on [runs, 1, points] it gives
        # every point's mean in one call (a loop over points took ~3 s a band).
        return np.asarray(metrics.aggregate_mean(s), dtype=np.float64)

    point, interval = _interval_estimates(
        scores, per_point, confidence=confidence, reps=resamples, seed=seed
    )
    mean[complete], low[complete], high[complete] = point, interval[0], interval[1]
    return mean, low, high
