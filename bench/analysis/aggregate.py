"""Aggregation across seeds: interval tables, costs, pairwise probabilities, AlgoPerf profiles and curve bands.

Pure functions of the per-run tables (``targets.run_table``) and the tidy metrics. Intervals:
- medians: the distribution-free order-statistic interval (``stats.median_interval``; none when n is too small);
- IQM: the percentile bootstrap (``stats.bootstrap_intervals``), with a generator keyed by (bootstrap_seed, method,
  quantity), so each number is deterministic and independent of which other methods are in the sweep;
- P(X sooner than Y): a percentile bootstrap over the seeds of X and of Y.
Failed runs are in ``per_run`` as misses with the worst best value, so no statistic drops them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tvr_convbench.bench.analysis.stats import (
    algoperf_profile,
    algoperf_ratios,
    bootstrap_intervals,
    median_interval,
    probability_intervals,
    profile_score,
    rng_for,
    workload_times,
)
from tvr_convbench.bench.config import ReportConfig
from tvr_convbench.bench.runlog import eval_share

AXES = {"steps": "steps_to_target", "seconds": "seconds_to_target"}
"""axis -> the column of the primary (first evaluation meeting the target) reading"""
INTERPOLATED = {"steps": "steps_interpolated", "seconds": "seconds_interpolated"}
"""axis -> the column of the secondary (interpolated crossing) reading"""
READINGS = {"first": AXES, "interpolated": INTERPOLATED}
INTERVAL_COLUMNS = ["method", "column", "statistic", "point", "lower", "upper", "runs"]


def method_matrix(per_run: pd.DataFrame, method: str, column: str, targets: list[str]) -> np.ndarray:
    """One method's values of a per-run column as a [N runs, T targets] matrix (targets in the given order)."""
    rows = per_run[per_run["method"] == method]
    return rows.pivot(index="run", columns="target", values=column)[targets].to_numpy(dtype=float)


def intervals(
    values: np.ndarray, method: str, columns: list[str], statistic: str, cfg: ReportConfig, key: str
) -> pd.DataFrame:
    """Point estimates and intervals of one method's [N, T] values, one row per column: order statistics for the
    median, the percentile bootstrap for the IQM."""
    if statistic == "median":
        rows = [
            (method, c, statistic, *median_interval(values[:, i], cfg.confidence), values.shape[0])
            for i, c in enumerate(columns)
        ]
        return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    rng = rng_for(cfg.bootstrap_seed, method, key, statistic)
    point, lower, upper = bootstrap_intervals(values, statistic, cfg.bootstrap_reps, cfg.confidence, rng)
    rows = [(method, c, statistic, p, lo, hi, values.shape[0]) for c, p, lo, hi in zip(columns, point, lower, upper)]
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def time_to_target_intervals(per_run: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """Median and IQM of steps and seconds to each target per method, for both readings, with intervals and
    censored (missed) counts. Columns: method, target, statistic, point, lower, upper, runs, axis, reading,
    censored."""
    targets, frames = list(dict.fromkeys(per_run["target"])), []
    for method in (m for m in labels if (per_run["method"] == m).any()):
        for reading, columns in READINGS.items():
            for axis, column in columns.items():
                values = method_matrix(per_run, method, column, targets)  # [N, T]
                for statistic in ("median", "iqm"):
                    frame = intervals(values, method, targets, statistic, cfg, f"{axis}/{reading}")
                    frames.append(frame.assign(axis=axis, reading=reading, censored=np.isinf(values).sum(axis=0)))
    empty = pd.DataFrame(columns=[*INTERVAL_COLUMNS, "axis", "reading", "censored"])
    return (pd.concat(frames, ignore_index=True) if frames else empty).rename(columns={"column": "target"})


def run_costs(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: seconds per optimizer step, mean and total evaluation seconds, eval share (evaluation /
    (evaluation + training) seconds, ``bench.runlog.eval_share``), final wall seconds."""
    train = metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss")]
    last = train.sort_values("step").groupby("run").last()
    per_step = (last["train_seconds"] / last["step"].where(last["step"] > 0)).rename("seconds_per_step")
    time = metrics[metrics["split"] == "time"]
    evals = time[time["metric"] == "eval_seconds"].groupby("run")["value"]
    wall = time[time["metric"] == "wall_seconds"].groupby("run")["value"].max().rename("wall_seconds")
    costs = pd.concat([per_step, evals.mean().rename("eval_seconds"), evals.sum().rename("eval_total")], axis=1)
    train_seconds = last["train_seconds"].reindex(costs.index)
    costs["eval_share"] = [eval_share(e, t) for e, t in zip(costs["eval_total"], train_seconds)]
    keys = metrics.drop_duplicates("run").set_index("run")[["method", "seed"]]
    return keys.join(costs.join(wall), how="left").reset_index()


def method_summary(per_run: pd.DataFrame, costs: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """Per method: runs, best val metric and AUC (cfg.aggregate with interval), mean costs per run, and the spread
    of its step time over seeds (max / min: above 1.5 the seconds measure contention)."""
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
        own = costs[costs["method"] == method]
        row |= own[["seconds_per_step", "eval_seconds", "eval_share"]].mean().to_dict()
        step = own["seconds_per_step"].dropna()
        row["step_time_spread"] = float(step.max() / step.min()) if len(step) and step.min() > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_probabilities(per_run: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """P(method reaches the target sooner than other) with its bootstrap interval, per axis and target (primary
    reading), and "all" = the mean over targets with its interval from the same resamples."""
    present = [m for m in labels if (per_run["method"] == m).any()]
    targets, rows = list(dict.fromkeys(per_run["target"])), []
    for axis, column in AXES.items():
        for a in present:
            x = method_matrix(per_run, a, column, targets)  # [N, T]
            for b in (m for m in present if m != a):
                y = method_matrix(per_run, b, column, targets)  # [M, T]
                rng = rng_for(cfg.bootstrap_seed, a, b, axis)
                point, lower, upper = probability_intervals(x, y, cfg.band_reps, cfg.confidence, rng)
                rows += [(axis, t, a, b, p, lo, hi) for t, p, lo, hi in zip([*targets, "all"], point, lower, upper)]
    return pd.DataFrame(rows, columns=["axis", "target", "method", "other", "probability", "lower", "upper"])


def workload_matrix(per_run: pd.DataFrame, column: str, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Times as [M methods, W workloads (targets), S seeds] (+inf where a seed missed or failed), and the
    workload names. A method with fewer seeds than another is padded with +inf (a missing seed is a miss)."""
    workloads = list(dict.fromkeys(per_run["target"]))
    seeds = max(int(per_run.groupby(["method", "target"]).size().max()), 1)
    out = np.full((len(labels), len(workloads), seeds), np.inf)
    for (method, target), group in per_run.groupby(["method", "target"], sort=False):
        if method in labels:
            values = group[column].to_numpy(dtype=float)
            out[labels.index(method), workloads.index(target), : len(values)] = values
    return out, workloads


def profiles(per_run: pd.DataFrame, labels: list[str], cfg: ReportConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AlgoPerf performance profiles over workloads (here: targets) for steps and seconds, and their scores;
    per workload the median over seeds comes first (``stats.workload_times``)."""
    present = [m for m in labels if (per_run["method"] == m).any()]
    taus = np.linspace(1.0, cfg.profile_max_ratio, cfg.profile_points)
    curves, scores, medians = [], [], []
    for axis, column in AXES.items():
        times, workloads = workload_matrix(per_run, column, present)  # [M, W, S]
        ratios = algoperf_ratios(workload_times(times), cfg.profile_max_ratio)  # [M, W]
        profile = algoperf_profile(ratios, taus)  # [K, M]
        curves.append(pd.DataFrame(profile, columns=present).assign(tau=taus, axis=axis))
        scores.append(pd.DataFrame({"method": present, "axis": axis, "score": profile_score(profile, taus)}))
        medians.append(_ratio_table(workload_times(times), ratios, present, workloads, axis))
    long = pd.concat(curves).melt(id_vars=["axis", "tau"], var_name="method", value_name="fraction")
    score_table = pd.concat(scores, ignore_index=True)
    return long, score_table.merge(pd.concat(medians), on=["method", "axis"], how="left")


def _ratio_table(medians: np.ndarray, ratios: np.ndarray, methods: list[str], workloads: list[str], axis: str):  # noqa: ANN202
    rows = {"method": methods, "axis": axis}
    for w, name in enumerate(workloads):
        rows[f"median {name}"] = medians[:, w]
        rows[f"ratio {name}"] = ratios[:, w]
    return pd.DataFrame(rows)


def projected_costs(ttt: pd.DataFrame, step_seconds: dict[str, float]) -> pd.DataFrame:
    """Each method's median steps to each target (first reading) times its train-step seconds at DiDeMo shapes
    from the benchmark: what the step counts would cost on DiDeMo (a projection). Columns: method, target,
    steps, step_seconds, projected_seconds."""
    rows = ttt[(ttt["axis"] == "steps") & (ttt["reading"] == "first") & (ttt["statistic"] == "median")]
    rows = rows[rows["method"].isin(step_seconds)]
    seconds = rows["method"].map(step_seconds)
    return pd.DataFrame(
        {
            "method": rows["method"],
            "target": rows["target"],
            "steps": rows["point"],
            "step_seconds": seconds,
            "projected_seconds": rows["point"] * seconds,
        }
    ).reset_index(drop=True)


def run_on_grid(curves: pd.DataFrame, x: str, grid: np.ndarray) -> np.ndarray:
    """Every run's value interpolated onto a common grid, NaN beyond a run's last evaluation (never
    extrapolated). [N runs, G]"""
    out = []
    for _, run in curves.groupby("run", sort=False):
        xs, ys = run[x].to_numpy(float), run["value"].to_numpy(float)
        out.append(np.where(grid <= xs.max(), np.interp(grid, xs, ys), np.nan))
    return np.stack(out)


def common_grid(curves: pd.DataFrame, x: str, points: int) -> np.ndarray:
    """The x values of a method's curves: the union of its evaluation steps, or an even grid of train seconds up
    to its longest run (never cut where its fastest seed ends)."""
    if x == "step":
        return np.unique(curves["step"].to_numpy(float))
    return np.linspace(0.0, float(curves.groupby("run")[x].max().max()), points)


def curve_bands(curves: pd.DataFrame, x: str, labels: list[str], cfg: ReportConfig) -> pd.DataFrame:
    """Per method: cfg.aggregate of the val metric over the seeds covering each point of a common x grid, with a
    bootstrap band where at least two seeds cover it; ``runs`` counts them."""
    frames = []
    for method in labels:
        mine = curves[curves["method"] == method]
        if mine.empty:
            continue
        grid = common_grid(mine, x, cfg.curve_points)  # [G]
        values = run_on_grid(mine, x, grid)  # [N, G]
        frames.append(_band(values, grid, method, x, cfg))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "x", "center"])


def _band(values: np.ndarray, grid: np.ndarray, method: str, x: str, cfg: ReportConfig) -> pd.DataFrame:
    covering = (~np.isnan(values)).sum(axis=0)  # [G]
    center, lower, upper = (np.full(len(grid), np.nan) for _ in range(3))
    rng = rng_for(cfg.bootstrap_seed, method, "curve", x)
    for count in np.unique(covering[covering > 0]):
        cols = covering == count
        subset = values[:, cols]
        subset = subset[~np.isnan(subset).any(axis=1)]  # the runs covering these points
        point, lo, hi = bootstrap_intervals(subset, cfg.aggregate, cfg.band_reps, cfg.confidence, rng)
        center[cols], lower[cols], upper[cols] = point, lo, hi
    return pd.DataFrame(
        {"method": method, "x": grid, "center": center, "lower": lower, "upper": upper, "runs": covering}
    )


def train_curves(metrics: pd.DataFrame, window: int, kind: str) -> pd.DataFrame:
    """Per method, mean over seeds then a trailing moving average of ``window`` steps, of the training loss and
    its parts (``kind="loss"``) or of the in-batch recall (``kind="recall"``)."""
    train = metrics[metrics["split"] == "train"]
    is_loss = train["metric"].str.startswith("loss")
    train = train[is_loss] if kind == "loss" else train[~is_loss]
    mean = train.groupby(["method", "metric", "step"], sort=False)["value"].mean().reset_index()
    mean = mean.sort_values(["method", "metric", "step"], kind="stable")
    smooth = mean.groupby(["method", "metric"], sort=False)["value"].transform(
        lambda s: s.rolling(window, min_periods=1).mean()
    )
    return mean.assign(value=smooth)


def loss_curves(metrics: pd.DataFrame, window: int) -> pd.DataFrame:
    """Training loss and loss parts per method (``train_curves(kind="loss")``)."""
    return train_curves(metrics, window, "loss")
