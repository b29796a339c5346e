"""Aggregation across seeds: interval tables, costs, pairwise probabilities, profiles and curve bands.

Pure functions of the per-run tables (``targets.run_table``) and the tidy metrics; every interval comes from
``stats.bootstrap_intervals`` with a generator keyed by (bootstrap_seed, method, quantity), so each number is
deterministic and independent of which other methods are in the sweep.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tvr_convbench.bench.analysis.stats import (
    bootstrap_intervals,
    performance_profile,
    probability_of_improvement,
    profile_score,
    rng_for,
)
from tvr_convbench.bench.config import ReportConfig

AXES = {"steps": "steps_to_target", "seconds": "seconds_to_target"}
INTERVAL_COLUMNS = ["method", "column", "statistic", "point", "lower", "upper", "runs"]


def method_matrix(per_run: pd.DataFrame, method: str, column: str, targets: list[str]) -> np.ndarray:
    """One method's values of a per-run column as a [N runs, T targets] matrix (targets in the given order)."""
    rows = per_run[per_run["method"] == method]
    return rows.pivot(index="run", columns="target", values=column)[targets].to_numpy(dtype=float)


def intervals(
    values: np.ndarray, method: str, columns: list[str], statistic: str, cfg: ReportConfig, key: str
) -> pd.DataFrame:
    """Point estimates and bootstrap intervals of one method's [N, T] values, one row per column."""
    rng = rng_for(cfg.bootstrap_seed, method, key, statistic)
    point, lower, upper = bootstrap_intervals(values, statistic, cfg.bootstrap_reps, cfg.confidence, rng)
    rows = [(method, c, statistic, p, lo, hi, values.shape[0]) for c, p, lo, hi in zip(columns, point, lower, upper)]
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def time_to_target_intervals(per_run: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """Median and IQM of steps and seconds to each target per method, with intervals and censored counts."""
    targets, frames = list(dict.fromkeys(per_run["target"])), []
    for method in labels:
        if not (per_run["method"] == method).any():
            continue
        for axis, column in AXES.items():
            values = method_matrix(per_run, method, column, targets)  # [N, T]
            for statistic in ("median", "iqm"):
                frame = intervals(values, method, targets, statistic, cfg, axis)
                frames.append(frame.assign(axis=axis, censored=np.isinf(values).sum(axis=0)))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*INTERVAL_COLUMNS, "axis"])
    return table.rename(columns={"column": "target"})


def run_costs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: seconds per optimizer step, mean and total evaluation seconds, eval share, final wall seconds."""
    train = metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss")]
    last = train.sort_values("step").groupby("run").last()
    per_step = (last["train_seconds"] / last["step"].where(last["step"] > 0)).rename("seconds_per_step")
    time = metrics[metrics["split"] == "time"]
    evals = time[time["metric"] == "eval_seconds"].groupby("run")["value"]
    wall = time[time["metric"] == "wall_seconds"].groupby("run")["value"].max().rename("wall_seconds")
    costs = pd.concat([per_step, evals.mean().rename("eval_seconds"), evals.sum().rename("eval_total")], axis=1)
    costs["eval_share"] = costs["eval_total"] / (costs["eval_total"] + last["train_seconds"])
    keys = metrics.drop_duplicates("run").set_index("run")[["method", "seed"]]
    return keys.join(costs.join(wall), how="left").reset_index()


def method_summary(per_run: pd.DataFrame, costs: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """Per method: runs, best val metric and AUC (cfg.aggregate with interval), mean costs per run."""
    runs = per_run.drop_duplicates("run")
    rows = []
    for method in labels:
        mine = runs[runs["method"] == method]
        if mine.empty:
            rows.append({"method": method, "runs": 0})
            continue
        row = {"method": method, "runs": len(mine)}
        for quantity in ("best", "auc"):
            values = mine[[quantity]].to_numpy(dtype=float)  # [N, 1]
            point = intervals(values, method, [quantity], cfg.aggregate, cfg, quantity).iloc[0]
            row |= {quantity: point["point"], f"{quantity}_lower": point["lower"], f"{quantity}_upper": point["upper"]}
        row |= costs[costs["method"] == method][["seconds_per_step", "eval_seconds", "eval_share"]].mean().to_dict()
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_probabilities(per_run: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """P(method reaches the target sooner than other), per axis and target, plus the mean over targets ("all")."""
    present = [m for m in labels if (per_run["method"] == m).any()]
    rows = []
    for axis, column in AXES.items():
        for target, group in per_run.groupby("target", sort=False):
            times = {m: group.loc[group["method"] == m, column].to_numpy(dtype=float) for m in present}
            rows += [
                (axis, target, a, b, probability_of_improvement(times[a], times[b]))
                for a in present
                for b in present
                if a != b
            ]
    table = pd.DataFrame(rows, columns=["axis", "target", "method", "other", "probability"])
    overall = table.groupby(["axis", "method", "other"], sort=False)["probability"].mean().reset_index()
    return pd.concat([table, overall.assign(target="all")], ignore_index=True)


def case_matrix(per_run: pd.DataFrame, column: str, labels: list[str]) -> np.ndarray:
    """Times as [cases (target, seed), methods]; NaN where a method has no run for that seed."""
    table = per_run.pivot_table(
        index=["target", "seed"], columns="method", values=column, aggfunc="first", dropna=False
    )
    return table.reindex(columns=labels).to_numpy(dtype=float)


def profiles(per_run: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Performance profiles over (target, seed) cases for steps and seconds, and their AlgoPerf scores."""
    present = [m for m in labels if (per_run["method"] == m).any()]
    taus = np.linspace(1.0, cfg.profile_max_ratio, 601)
    curves, scores = [], []
    for axis, column in AXES.items():
        profile = performance_profile(case_matrix(per_run, column, present), taus)  # [K, M]
        curves.append(pd.DataFrame(profile, columns=present).assign(tau=taus, axis=axis))
        scores.append(pd.DataFrame({"method": present, "axis": axis, "score": profile_score(profile, taus)}))
    long = pd.concat(curves).melt(id_vars=["axis", "tau"], var_name="method", value_name="fraction")
    return long, pd.concat(scores, ignore_index=True)


def run_on_grid(curves: pd.DataFrame, x: str, grid: np.ndarray) -> np.ndarray:
    """Every run's value interpolated onto a common grid (never extrapolated). [N runs, G]"""
    return np.stack(
        [np.interp(grid, run[x].to_numpy(float), run["value"].to_numpy(float)) for _, run in curves.groupby("run")]
    )


def common_grid(curves: pd.DataFrame, x: str, points: int) -> np.ndarray:
    """The x values every run of a method covers: union of its steps, or an even grid of train seconds."""
    end = curves.groupby("run")[x].max().min()
    if x == "step":
        steps = np.unique(curves["step"].to_numpy(float))
        return steps[steps <= end]
    return np.linspace(0.0, float(end), points)


def curve_bands(curves: pd.DataFrame, x: str, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """Per method: cfg.aggregate of the val metric over seeds on a common x grid, with a bootstrap band."""
    frames = []
    for method in labels:
        mine = curves[curves["method"] == method]
        if mine.empty:
            continue
        grid = common_grid(mine, x, cfg.curve_points)  # [G]
        values = run_on_grid(mine, x, grid)  # [N, G]
        rng = rng_for(cfg.bootstrap_seed, method, "curve", x)
        point, lower, upper = bootstrap_intervals(values, cfg.aggregate, cfg.band_reps, cfg.confidence, rng)
        frames.append(pd.DataFrame({"method": method, "x": grid, "center": point, "lower": lower, "upper": upper}))
    return pd.concat(frames, ignore_index=True)


def loss_curves(metrics: pd.DataFrame, window: int) -> pd.DataFrame:
    """Training loss and loss parts per method: mean over seeds, then a trailing moving average of ``window`` steps."""
    train = metrics[metrics["split"] == "train"]
    mean = train.groupby(["method", "metric", "step"], sort=False)["value"].mean().reset_index()
    mean = mean.sort_values(["method", "metric", "step"], kind="stable")
    smooth = mean.groupby(["method", "metric"], sort=False)["value"].transform(
        lambda s: s.rolling(window, min_periods=1).mean()
    )
    return mean.assign(value=smooth)
