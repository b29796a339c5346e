"""Per-run convergence measurements: time to target (two readings), best value, area under the curve, selection.

Time to target, primary reading: AlgoPerf's (``scoring/performance_profile.py``): the first evaluation whose value
meets the target (at or above it for recall, at or below it for the rank metrics). Secondary reading: the crossing
interpolated linearly between the two evaluations that bracket it, in steps and in train seconds (a target met at
step 0 is met at 0). A run that never meets a target is censored at +inf and kept, never dropped. A failed run
misses every target and has the worst best value and AUC; a diverged run keeps what it met before diverging and
misses the rest (its curve stops there).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tvr_convbench.core.schema import METRIC_NAMES

RUN_KEYS = ["method", "seed", "run"]
TIME_COLUMNS = ["steps_to_target", "seconds_to_target", "steps_interpolated", "seconds_interpolated"]


def val_curves(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Validation rows of one metric: method, seed, run, step, train_seconds, value; runs in their order in
    ``metrics`` (the sweep's order), steps ascending."""
    rows = metrics[(metrics["split"] == "val") & (metrics["metric"] == metric)]
    order = rows["run"].map({run: i for i, run in enumerate(rows["run"].unique())})
    rows = rows.assign(order=order).sort_values(["order", "step"], kind="stable")
    return rows[[*RUN_KEYS, "step", "train_seconds", "value"]].reset_index(drop=True)


def best_of(steps: np.ndarray, values: np.ndarray, higher: bool) -> tuple[float, float]:
    """Best value of a curve and the first step it occurs at (NaN, NaN for an all-NaN curve)."""
    if np.isnan(values).all():
        return float("nan"), float("nan")
    index = int(np.nanargmax(values) if higher else np.nanargmin(values))
    return float(values[index]), float(steps[index])


def normalised_auc(steps: np.ndarray, values: np.ndarray, max_steps: int) -> float:
    """Trapezoid area under value-vs-step over the evaluations, divided by the step budget (metric units)."""
    return float(np.trapezoid(values, steps) / max_steps)


def _met(values: np.ndarray, targets: np.ndarray, higher: bool) -> np.ndarray:
    """[E, T]: evaluation e meets target t (NaN never does)."""
    return values[:, None] >= targets[None, :] if higher else values[:, None] <= targets[None, :]


def first_reach(
    steps: np.ndarray, seconds: np.ndarray, values: np.ndarray, targets: np.ndarray, higher: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Steps and train seconds of the first evaluation meeting each target; +inf where none does.

    Args:
        steps: evaluation steps, ascending. [E]
        seconds: train seconds at those evaluations. [E]
        values: metric values (NaN never meets a target). [E]
        targets: target values. [T]
        higher: whether larger values are better.

    Returns:
        (steps to target, seconds to target), each [T].
    """
    met = _met(values, targets, higher)  # [E, T]
    first = met.argmax(axis=0)  # [T]
    hit = met.any(axis=0)  # [T]
    return np.where(hit, steps[first], np.inf), np.where(hit, seconds[first], np.inf)


def interpolated_reach(
    steps: np.ndarray, seconds: np.ndarray, values: np.ndarray, targets: np.ndarray, higher: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The crossing of each target interpolated linearly between the evaluation before the first one meeting it
    and that one (steps and train seconds at the same fraction); 0 for a target met at the first evaluation,
    +inf for one never met. Arguments as ``first_reach``."""
    met = _met(values, targets, higher)  # [E, T]
    first = met.argmax(axis=0)  # [T]
    hit = met.any(axis=0)  # [T]
    before = np.maximum(first - 1, 0)  # [T]
    v0, v1 = values[before], values[first]  # [T]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(v1 != v0, (targets - v0) / (v1 - v0), 1.0)  # [T]
    fraction = np.where(np.isfinite(fraction), np.clip(fraction, 0.0, 1.0), 1.0)
    at_first = first == 0  # [T]
    step = np.where(at_first, steps[first], steps[before] + fraction * (steps[first] - steps[before]))
    second = np.where(at_first, seconds[first], seconds[before] + fraction * (seconds[first] - seconds[before]))
    return np.where(hit, step, np.inf), np.where(hit, second, np.inf)


def run_table(
    curves: pd.DataFrame,
    targets: pd.DataFrame,
    max_steps: int | dict[str, int],
    higher: bool,
    failed: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per run and target: both readings of steps/seconds to target (inf = censored), reached, best value and
    step, AUC over the step budget (one for all runs, or each run's own: ``max_steps[run]``).

    ``failed`` (method, seed, run) lists failed runs: they have no usable curve, miss every target, and get the
    worst best value and AUC (-inf for recall, +inf for the rank metrics), so no statistic drops them.
    """
    values, rows = targets["value"].to_numpy(dtype=float), []
    for (method, seed, run), curve in curves.groupby(RUN_KEYS, sort=False):
        steps, seconds, scores = (curve[c].to_numpy(dtype=float) for c in ("step", "train_seconds", "value"))
        reach = (*first_reach(steps, seconds, scores, values, higher),)
        reach += interpolated_reach(steps, seconds, scores, values, higher)
        best, best_step = best_of(steps, scores, higher)
        budget = max_steps if isinstance(max_steps, int) else max_steps[run]
        auc = normalised_auc(steps, scores, budget)
        rows += _target_rows((method, seed, run), targets, reach, best, best_step, auc)
    worst = -math.inf if higher else math.inf
    for method, seed, run in failed.itertuples(index=False) if failed is not None else ():
        missed = tuple(np.full(len(values), np.inf) for _ in TIME_COLUMNS)
        rows += _target_rows((method, seed, run), targets, missed, worst, math.nan, worst)
    columns = [*RUN_KEYS, "target", "target_value", *TIME_COLUMNS, "reached", "best", "best_step", "auc"]
    return pd.DataFrame(rows, columns=columns)


def _target_rows(key: tuple, targets: pd.DataFrame, reach: tuple, best: float, step: float, auc: float) -> list:
    rows = []
    for i, (target, value) in enumerate(zip(targets["target"], targets["value"])):
        times = [float(r[i]) for r in reach]
        rows.append((*key, target, float(value), *times, bool(np.isfinite(times[0])), best, step, auc))
    return rows


def _column_order(column: str) -> tuple[bool, int, str]:
    split, metric = column.split(" ", 1)
    return split != "val", METRIC_NAMES.index(metric) if metric in METRIC_NAMES else len(METRIC_NAMES), metric


def model_selection(metrics: pd.DataFrame, per_run: pd.DataFrame) -> pd.DataFrame:
    """Per run: the evaluation with the best val metric and every val (and test, if logged) metric at that step.

    Test metrics are read at the selected step only, never at their own best step. Failed runs have none.
    """
    chosen = per_run.drop_duplicates("run")[[*RUN_KEYS, "best_step"]].rename(columns={"best_step": "step"})
    chosen = chosen[chosen["step"].notna()]
    rows = metrics[metrics["split"].isin(["val", "test"])].merge(chosen[["run", "step"]], on=["run", "step"])
    table = rows.assign(column=rows["split"] + " " + rows["metric"]).pivot(
        index="run", columns="column", values="value"
    )
    ordered = sorted(table.columns, key=_column_order)
    return chosen.merge(table[ordered].reset_index(), on="run", how="left").reset_index(drop=True)
