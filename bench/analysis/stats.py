"""Aggregates over seeds and their interval estimates, following rliable (Agarwal et al. 2021, arXiv 2108.13264).

- ``iqm``: interquartile mean = 25% trimmed mean (``scipy.stats.trim_mean(x, 0.25)``: ``int(0.25 n)`` values cut
  from each end), robust like the median but more efficient.
- ``bootstrap_intervals``: percentile intervals from a stratified bootstrap (runs resampled with replacement
  independently within each task column), vectorised over resamples; deterministic in the given seed.
- ``probability_of_improvement``: P(X sooner than Y), the Mann-Whitney U statistic over n*m pairs, ties count 1/2.
- ``performance_profile``: Dolan & More (arXiv cs/0102001) as used by AlgoPerf: the fraction of cases a method
  solves within tau times the fastest method's time.

Censored times are +inf. The median and IQM of censored values may be +inf; interval bounds are order statistics
of the bootstrap distribution (``method="lower"``/``"higher"``), never interpolated, so an infinite bound stays
infinite instead of becoming NaN.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

Statistic = Callable[[np.ndarray, int], np.ndarray]


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean along ``axis`` (+inf when an infinite value survives the trimming)."""
    ordered = np.sort(values, axis=axis)
    n = ordered.shape[axis]
    cut = int(0.25 * n)
    return np.take(ordered, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def median(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median along ``axis`` (+inf when at least half of the values are infinite)."""
    return np.median(values, axis=axis)


STATISTICS: dict[str, Statistic] = {"iqm": iqm, "median": median}


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator determined by ``seed`` and the keys (e.g. method label, quantity), independent of call order."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


def stratified_resamples(values: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap resamples of runs, drawn independently within each task column.

    Args:
        values: scores of one method. [N runs, T tasks]
        reps: number of resamples.
        rng: random generator.

    Returns:
        Resampled scores. [reps, N, T]
    """
    n, t = values.shape
    index = rng.integers(0, n, size=(reps, n, t))  # [R, N, T]
    return values[index, np.arange(t)]  # [R, N, T]


def bootstrap_intervals(
    values: np.ndarray, statistic: str, reps: int, confidence: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile bootstrap interval of a statistic over runs, per task column.

    Args:
        values: scores of one method. [N runs, T tasks]
        statistic: "iqm" or "median".
        reps: bootstrap resamples.
        confidence: interval coverage in (0, 1).
        rng: random generator.

    Returns:
        (point, lower, upper), each [T]; the bounds are NaN with fewer than two runs (no interval from one seed).
    """
    aggregate = STATISTICS[statistic]
    point = aggregate(values, axis=0)  # [T]
    if values.shape[0] < 2:
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    boot = aggregate(stratified_resamples(values, reps, rng), axis=1)  # [R, T]
    alpha = (1.0 - confidence) / 2.0
    lower = np.quantile(boot, alpha, axis=0, method="lower")  # [T]
    upper = np.quantile(boot, 1.0 - alpha, axis=0, method="higher")  # [T]
    return point, lower, upper


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(a run of X reaches the target sooner than a run of Y): U / (n m), ties (inf vs inf too) count 1/2.

    Args:
        x: times to target of X (+inf = censored). [N]
        y: times to target of Y. [M]
    """
    sooner = (x[:, None] < y[None, :]).astype(np.float64)  # [N, M]
    ties = x[:, None] == y[None, :]  # [N, M]
    return float((sooner + 0.5 * ties).mean())


def performance_ratios(times: np.ndarray) -> np.ndarray:
    """Ratio of each method's time to the fastest method's time per case; +inf where a method missed.

    Args:
        times: times to target (+inf censored, NaN = method has no run for this case). [C cases, M methods]

    Returns:
        Ratios >= 1 (the fastest, including a time of 0, has ratio 1; NaN stays NaN). [C, M]
    """
    fastest = np.nanmin(times, axis=1, keepdims=True)  # [C, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = times / fastest  # [C, M]
    ratio = np.where(times == fastest, 1.0, ratio)
    return np.where(np.isinf(times), np.inf, ratio)


def performance_profile(times: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rho_m(tau): the fraction of a method's cases solved within tau times the fastest time.

    Args:
        times: times to target, as in ``performance_ratios``. [C, M]
        taus: ratio thresholds. [K]

    Returns:
        Profile values in [0, 1] (cases a method has no run for are left out of its fraction). [K, M]
    """
    ratio = performance_ratios(times)  # [C, M]
    observed = ~np.isnan(ratio)  # [C, M]
    within = ratio[None, :, :] <= taus[:, None, None]  # [K, C, M]
    return within.sum(axis=1) / np.maximum(observed.sum(axis=0), 1)  # [K, M]


def profile_score(profile: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """AlgoPerf benchmark score: the area under the profile over [1, tau_max] divided by (tau_max - 1). [K, M] -> [M]"""
    return np.trapezoid(profile, taus, axis=0) / (taus[-1] - taus[0])
