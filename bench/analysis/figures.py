"""Figures of the convergence report. Every function returns a ``matplotlib.figure.Figure`` and never shows or
saves it (``report.py`` writes the files); pyplot's global state is not used.

Legible in a grayscale print: every method has its own line style and marker, not only its own colour; bands are
light fills around a drawn centre line, censored times are drawn at the right edge with an "∞" label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2, 2, 2))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
CENSORED_AT = 1.08  # censored (+inf) points sit at this multiple of the axis budget


def method_styles(labels: list[str]) -> dict[str, dict]:
    """Colour, line style and marker per method (cycled; distinct for up to eight methods)."""
    colors = [f"C{i % 10}" for i in range(len(labels))]
    return {
        label: {"color": colors[i], "linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}
        for i, label in enumerate(labels)
    }


def staggered(points: int, index: int, marks: int) -> tuple[int, int]:
    """``markevery`` for about ``marks`` markers per line, shifted per method so markers do not pile up."""
    every = max(1, points // marks)
    return (index * every // 7) % every, every


def band_note(runs: int, confidence: float, aggregate: str) -> str:
    if runs < 2:
        return "one seed: no confidence band"
    name = "IQM" if aggregate == "iqm" else aggregate
    return f"line: {name} over up to {runs} seeds; band: {confidence:.0%} bootstrap CI"


def _target_lines(ax: Axes, targets: pd.DataFrame) -> None:
    for row in targets.itertuples(index=False):
        ax.axhline(row.value, color="0.5", linestyle=":", linewidth=0.8)
        ax.annotate(
            row.target, (1.0, row.value), xycoords=("axes fraction", "data"), fontsize=7, va="center", ha="left"
        )


def curve_figure(
    bands: pd.DataFrame, targets: pd.DataFrame, ylabel: str, xlabel: str, styles: dict, note: str
) -> Figure:
    """Val metric vs step (or train seconds): a centre line per method, its bootstrap band, the target levels.

    Args:
        bands: method, x, center, lower, upper (``aggregate.curve_bands``).
        targets: target, value (``targets.target_table``).
        ylabel: metric name.
        xlabel: x-axis label.
        styles: ``method_styles`` output.
        note: subtitle (aggregate, seeds, band meaning).
    """
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, (method, band) in enumerate(bands.groupby("method", sort=False)):
        style = styles[method]
        ax.plot(band["x"], band["center"], label=method, markevery=staggered(len(band), i, 10), markersize=5, **style)
        if band["lower"].notna().any():
            ax.fill_between(band["x"], band["lower"], band["upper"], color=style["color"], alpha=0.15, linewidth=0)
    _target_lines(ax, targets)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs {xlabel}\n{note}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def loss_figure(losses: pd.DataFrame, styles: dict, note: str, title: str = "training loss") -> Figure:
    """Training loss and every logged loss part vs step (or any per-step training curves, e.g. the in-batch
    recall), one panel per metric key, one line per method."""
    keys = sorted(losses["metric"].unique(), key=lambda k: (k != "loss", k))
    cols = max(1, min(3, len(keys)))
    rows = max(1, -(-len(keys) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        panel = losses[losses["metric"] == key]
        for i, method in enumerate(m for m in styles if (panel["method"] == m).any()):
            curve = panel[panel["method"] == method]
            every = staggered(len(curve), i, 8)
            ax.plot(curve["step"], curve["value"], label=method, markevery=every, markersize=4, **styles[method])
        ax.set(title=key, xlabel="optimizer step")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    if keys:
        axes[0].legend(fontsize=7)
    else:
        axes[0].text(0.5, 0.5, f"no {title} logged", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    return fig


def _interval_row(ax: Axes, y: float, row: pd.Series, edge: float, style: dict, floor: float = 0.0) -> None:
    """One method's median and interval on a time-to-target panel; +inf drawn at ``edge`` and labelled ∞, values
    below ``floor`` (a log axis cannot show 0) drawn at it."""
    point = edge if np.isinf(row["point"]) else max(row["point"], floor)
    if not np.isnan(row["lower"]):
        lower, upper = max(min(row["lower"], edge), floor), max(min(row["upper"], edge), floor)
        ax.plot([lower, upper], [y, y], color=style["color"], linestyle=style["linestyle"], linewidth=2)
    ax.plot([point], [y], marker=style["marker"], color=style["color"], markersize=7, linestyle="none")
    if np.isinf(row["point"]) or np.isinf(row["upper"]):
        ax.annotate("∞", (edge, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)


def time_to_target_figure(ttt: pd.DataFrame, budgets: dict[str, float], styles: dict, note: str) -> Figure:
    """Median time to each target with bootstrap intervals: one panel for steps, one for train seconds; one row
    per (target, method), targets in blocks separated by lines.

    Args:
        ttt: ``aggregate.time_to_target_intervals`` rows (the median rows are drawn).
        budgets: axis ("steps", "seconds") -> budget; censored times are drawn just beyond it.
        styles: ``method_styles`` output.
        note: subtitle.
    """
    medians = ttt[ttt["statistic"] == "median"]
    if "reading" in medians:
        medians = medians[medians["reading"] == "first"]
    targets, methods = list(dict.fromkeys(medians["target"])), list(dict.fromkeys(medians["method"]))
    rows = [(t, m) for t in targets for m in methods]
    fig = Figure(figsize=(10.0, 0.24 * len(rows) + 1.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, axis in zip(axes, ("steps", "seconds")):
        panel = medians[medians["axis"] == axis].set_index(["target", "method"])
        _time_panel(ax, axis, panel, rows, budgets[axis], styles)
        for block in range(1, len(targets)):
            ax.axhline(block * len(methods) - 0.5, color="0.6", linewidth=0.6)
    labels = [f"{target}  {method}" for target, method in rows]
    axes[0].set(yticks=range(len(rows)), yticklabels=labels, ylim=(len(rows) - 0.5, -0.5))
    axes[0].tick_params(axis="y", labelsize=7)
    title = (
        "time to target (median; dotted line = step budget / longest run's train seconds; ∞ = missed; "
        "seconds on a log axis)"
    )
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    return fig


def _time_panel(ax: Axes, axis: str, panel: pd.DataFrame, rows: list, budget: float, styles: dict) -> None:
    """One panel of the time-to-target figure: steps on a linear axis, train seconds on a log axis (their
    spread across methods spans orders of magnitude)."""
    edge = CENSORED_AT * max(budget, 1e-9)
    finite = panel[["point", "lower", "upper"]].to_numpy(dtype=float)
    positive = finite[np.isfinite(finite) & (finite > 0)]
    floor = float(positive.min()) / 2 if axis == "seconds" and len(positive) else 0.0
    for y, key in enumerate(rows):
        if key in panel.index:
            _interval_row(ax, y, panel.loc[key], edge, styles[key[1]], floor)
    ax.axvline(budget, color="0.5", linestyle=":", linewidth=0.8)
    if axis == "seconds" and floor > 0:
        ax.set_xscale("log")
        ax.set(xlim=(floor / 1.5, edge * 1.5), xlabel="train seconds (log)")
    else:
        ax.set(xlim=(0, edge * 1.06), xlabel="optimizer steps" if axis == "steps" else "train seconds")
    ax.grid(axis="x", alpha=0.3)


def sensitivity_figure(table: pd.DataFrame, keys: list[str], styles: dict, rule: str) -> Figure:
    """Per tuned setting (a column), the best val value (top) and the median time to the rule's target (bottom) of
    each method's trials along that setting, the other settings at their selected values; the selected trial is a
    large filled marker, a trial that missed the target is drawn at the top edge (∞)."""
    from tvr_convbench.bench.analysis.sensitivity import slice_through_selected

    fig = Figure(figsize=(4.6 * len(keys), 6.4), layout="constrained")
    axes = fig.subplots(2, len(keys), squeeze=False)
    finite = table["time_median"][np.isfinite(table["time_median"])]
    edge = CENSORED_AT * (float(finite.max()) if len(finite) else 1.0)
    for col, key in enumerate(keys):
        for method, style in styles.items():
            line = slice_through_selected(table, method, key, keys)
            if line.empty:
                continue
            times = line["time_median"].where(np.isfinite(line["time_median"]), edge)
            for ax, y in ((axes[0, col], line["best_median"]), (axes[1, col], times)):
                ax.plot(line[key], y, label=method, markersize=4, **style)
                picked = line["selected"].to_numpy()
                ax.plot(line[key][picked], y[picked], marker=style["marker"], color=style["color"], markersize=10)
        axes[1, col].axhline(edge, color="0.5", linestyle=":", linewidth=0.8)
        axes[1, col].annotate("∞ (missed)", (0.01, edge), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        for row, label in ((0, "best val (median over tuning seeds)"), (1, f"median time to {rule}")):
            axes[row, col].set(xscale="log", xlabel=key, ylabel=label if col == 0 else None)
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("sensitivity to the tuned settings (large marker: the selected trial)", fontsize=9)
    return fig


def profile_figure(profile: pd.DataFrame, styles: dict, note: str) -> Figure:
    """AlgoPerf performance profiles for steps and train seconds: the fraction of workloads (targets) a method
    meets within tau times the fastest method's median."""
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, axis in zip(axes, ("steps", "seconds")):
        rows = profile[profile["axis"] == axis]
        for method, curve in rows.groupby("method", sort=False):
            ax.step(
                curve["tau"],
                curve["fraction"],
                where="post",
                label=method,
                markevery=60,
                markersize=5,
                **styles[method],
            )
        ax.set(xlabel=f"tau (ratio to the fastest, {axis})", title=f"performance profile: {axis}", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of workloads (targets)")
    axes[0].legend(fontsize=8)
    fig.suptitle(note, fontsize=9)
    return fig
