"""Aggregates over seeds and their interval estimates, following rliable (Agarwal et al. 2021, arXiv 2108.13264).

- ``iqm``: interquartile mean = 25% trimmed mean (``scipy.stats.trim_mean(x, 0.25)``: ``int(0.25 n)`` values cut
  from each end), robust like the median but more efficient.
- ``bootstrap_intervals``: percentile intervals from a stratified bootstrap (runs resampled with replacement
  independently within each task column), vectorised over resamples; deterministic in the given seed.
- ``median_interval``: the distribution-free order-statistic interval of a median (binomial: coverage at least the
  requested one by construction, whatever the distribution); none exists when n is too small (n < 6 at 95%).
- ``probability_of_improvement``: P(X sooner than Y), the Mann-Whitney U statistic over n*m pairs, ties count 1/2;
  ``probability_intervals``: per target and averaged over targets, with percentile bootstrap intervals (runs of
  X and of Y resampled independently).
- ``algoperf_profile``: AlgoPerf's performance profile (``scoring/performance_profile.py``): per workload the
  median over seeds of the time to target, times above 4x the fastest set to infinity, ratios to the fastest,
  rho(tau) = the fraction of all workloads within tau; the score is its area over [1, tau_max] / (tau_max - 1).

Censored times are +inf. The median and IQM of censored values may be +inf; interval bounds are order statistics
of the bootstrap distribution (``method="lower"``/``"higher"``), never interpolated, so an infinite bound stays
infinite instead of becoming NaN.
"""

from __future__ import annotations

import math
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


def profile_score(profile: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """AlgoPerf benchmark score: the area under the profile over [1, tau_max] divided by (tau_max - 1). [K, M] -> [M]"""
    return np.trapezoid(profile, taus, axis=0) / (taus[-1] - taus[0])


# --- distribution-free median interval -------------------------------------------------------------------------
def binomial_cdf(k: int, n: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n


def order_statistic_rank(n: int, confidence: float) -> int | None:
    """The largest 1-based rank r with coverage of [x(r), x(n + 1 - r)] >= ``confidence`` (None if even r = 1
    falls short): coverage = 1 - 2 P(B <= r - 1), B ~ Binomial(n, 1/2)."""
    best = None
    for r in range(1, n // 2 + 1):
        if 1.0 - 2.0 * binomial_cdf(r - 1, n) >= confidence:
            best = r
    return best


def median_coverage(n: int, rank: int) -> float:
    """The exact coverage of the order-statistic interval [x(rank), x(n + 1 - rank)] for a median."""
    return 1.0 - 2.0 * binomial_cdf(rank - 1, n)


def median_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(median, lower, upper) with the order-statistic interval; the bounds are NaN when n is too small for any
    interval of that coverage. +inf values (censored) sort last, so a bound may be +inf.

    Args:
        values: one method's values over seeds (no NaN: a failed run is +inf or -inf already). [N]
        confidence: the coverage the interval must have at least.
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    point = float(np.median(ordered)) if n else math.nan
    rank = order_statistic_rank(n, confidence)
    if rank is None:
        return point, math.nan, math.nan
    return point, float(ordered[rank - 1]), float(ordered[n - rank])


def min_seeds_for_median_interval(confidence: float) -> int:
    """The smallest n for which an order-statistic interval of ``confidence`` exists (6 at 95%)."""
    n = 1
    while order_statistic_rank(n, confidence) is None:
        n += 1
    return n


# --- P(sooner) with an interval --------------------------------------------------------------------------------
def _sooner(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X sooner than Y) per target column and resample: x [..., N, T], y [..., M, T] -> [..., T]."""
    sooner = (x[..., :, None, :] < y[..., None, :, :]).mean(axis=(-3, -2))
    ties = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return sooner + 0.5 * ties


def probability_intervals(
    x: np.ndarray, y: np.ndarray, reps: int, confidence: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(X sooner than Y) per target and its mean over targets, with percentile bootstrap intervals: runs (rows)
    of X and of Y are resampled independently, each run with all its targets, so the mean's interval comes from the
    same resamples. NaN bounds with fewer than two runs on a side.

    Args:
        x: times of X [N runs, T targets] (+inf = missed). y: times of Y [M, T].

    Returns:
        (point, lower, upper), each [T + 1]: the targets, then their mean.
    """
    point = _sooner(x, y)  # [T]
    point = np.append(point, point.mean())
    if len(x) < 2 or len(y) < 2:
        nan = np.full_like(point, np.nan)
        return point, nan, nan.copy()
    xs = x[rng.integers(0, len(x), size=(reps, len(x)))]  # [R, N, T]
    ys = y[rng.integers(0, len(y), size=(reps, len(y)))]  # [R, M, T]
    boot = _sooner(xs, ys)  # [R, T]
    boot = np.concatenate([boot, boot.mean(axis=1, keepdims=True)], axis=1)  # [R, T + 1]
    alpha = (1.0 - confidence) / 2.0
    lower = np.quantile(boot, alpha, axis=0, method="lower")
    upper = np.quantile(boot, 1.0 - alpha, axis=0, method="higher")
    return point, lower, upper


# --- AlgoPerf's performance profile ----------------------------------------------------------------------------
def workload_times(times: np.ndarray) -> np.ndarray:
    """Per method and workload, the median over seeds (+inf included; AlgoPerf: ``np.median`` of the studies).

    Args:
        times: [M methods, W workloads, S seeds] times to target (+inf = missed or failed).

    Returns:
        [M, W]
    """
    return np.median(times, axis=2)


def algoperf_ratios(medians: np.ndarray, max_ratio: float = 4.0) -> np.ndarray:
    """Each method's median time over the fastest method's, per workload, after AlgoPerf's rule that a time above
    ``max_ratio`` times the fastest is infinite. A workload nobody meets is infinite for all; 0/0 (two methods
    meeting a target at step 0) counts as 1, the fastest.

    Args:
        medians: [M, W] (``workload_times``).

    Returns:
        [M, W] ratios >= 1 or +inf.
    """
    fastest = medians.min(axis=0, keepdims=True)  # [1, W]
    capped = np.where(medians > max_ratio * fastest, np.inf, medians)  # [M, W]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = capped / fastest  # [M, W]
    ratio = np.where((capped == fastest) & np.isfinite(capped), 1.0, ratio)
    return np.where(np.isnan(ratio) | ~np.isfinite(fastest), np.inf, ratio)


def algoperf_profile(ratios: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rho_m(tau) = the fraction of all workloads whose ratio is at most tau. [M, W], [K] -> [K, M]"""
    return (ratios[None, :, :] <= taus[:, None, None]).sum(axis=2) / ratios.shape[1]  # [K, M]
