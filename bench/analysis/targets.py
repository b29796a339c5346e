"""Per-run convergence measurements: targets, time to target, best value, area under the curve, model selection.

Time to target follows AlgoPerf's scoring (``scoring/performance_profile.py``): the first evaluation whose value
meets the target (at or above it for recall, at or below it for the rank metrics), read at evaluation points
without interpolation. A run that never meets a target is censored at +inf and kept, never dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tvr_convbench.bench.config import ReportConfig
from tvr_convbench.core.schema import METRIC_NAMES

RUN_KEYS = ["method", "seed", "run"]


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
    met = values[:, None] >= targets[None, :] if higher else values[:, None] <= targets[None, :]  # [E, T]
    first = met.argmax(axis=0)  # [T]
    hit = met.any(axis=0)  # [T]
    return np.where(hit, steps[first], np.inf), np.where(hit, seconds[first], np.inf)


def reference_value(curves: pd.DataFrame, reference: str) -> float:
    """Best value any run reached ("best") or the highest per-method median of the runs' bests ("median_best")."""
    best = curves.groupby(["method", "run"], sort=False)["value"].max()
    return float(best.max() if reference == "best" else best.groupby(level="method").median().max())


def target_table(cfg: ReportConfig, curves: pd.DataFrame) -> pd.DataFrame:
    """The targets: label, fraction (NaN for absolute targets), value, and how the value was defined."""
    if cfg.absolute_targets is not None:
        sign = "≥" if cfg.higher_is_better else "≤"
        rows = [(f"{sign}{v:g}", float("nan"), float(v), "absolute (config)") for v in cfg.absolute_targets]
    else:
        ref = reference_value(curves, cfg.reference) if len(curves) else float("nan")
        how = {"best": "best value of any run", "median_best": "highest per-method median over seeds of the best"}
        rows = [(f"{100 * f:g}%", f, f * ref, f"{f:g} x {ref:.4g} ({how[cfg.reference]})") for f in cfg.targets]
    return pd.DataFrame(rows, columns=["target", "fraction", "value", "definition"])


def run_table(
    curves: pd.DataFrame, targets: pd.DataFrame, max_steps: int | dict[str, int], higher: bool
) -> pd.DataFrame:
    """Per run and target: steps/seconds to target (inf = censored), reached, best value and step, AUC over the
    step budget (one for all runs, or each run's own: ``max_steps[run]``)."""
    values, rows = targets["value"].to_numpy(), []
    for (method, seed, run), curve in curves.groupby(RUN_KEYS, sort=False):
        steps, seconds, scores = (curve[c].to_numpy(dtype=float) for c in ("step", "train_seconds", "value"))
        to_steps, to_seconds = first_reach(steps, seconds, scores, values, higher)
        best, best_step = best_of(steps, scores, higher)
        auc = normalised_auc(steps, scores, max_steps if isinstance(max_steps, int) else max_steps[run])
        for target, value, n_steps, n_seconds in zip(targets["target"], values, to_steps, to_seconds):
            rows.append(
                (method, seed, run, target, value, n_steps, n_seconds, bool(np.isfinite(n_steps)), best, best_step, auc)
            )
    columns = [*RUN_KEYS, "target", "target_value", "steps_to_target", "seconds_to_target", "reached"]
    return pd.DataFrame(rows, columns=[*columns, "best", "best_step", "auc"])


def _column_order(column: str) -> tuple[bool, int, str]:
    split, metric = column.split(" ", 1)
    return split != "val", METRIC_NAMES.index(metric) if metric in METRIC_NAMES else len(METRIC_NAMES), metric


def model_selection(metrics: pd.DataFrame, per_run: pd.DataFrame) -> pd.DataFrame:
    """Per run: the evaluation with the best val metric and every val (and test, if logged) metric at that step.

    Test metrics are read at the selected step only, never at their own best step.
    """
    chosen = per_run.drop_duplicates("run")[[*RUN_KEYS, "best_step"]].rename(columns={"best_step": "step"})
    rows = metrics[metrics["split"].isin(["val", "test"])].merge(chosen[["run", "step"]], on=["run", "step"])
    table = rows.assign(column=rows["split"] + " " + rows["metric"]).pivot(
        index="run", columns="column", values="value"
    )
    ordered = sorted(table.columns, key=_column_order)
    return chosen.merge(table[ordered].reset_index(), on="run", how="left").reset_index(drop=True)
