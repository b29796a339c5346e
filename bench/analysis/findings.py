"""The Findings that open a report: a few sentences generated from the analysis tables (no hand-typed number).

What they say, at the headline target (the one nearest to 90%): which methods reach it soonest in optimizer steps
and in train seconds (medians with their intervals, both readings), whether the leader is separated from the
runner-up (P(sooner) with its interval), which method reaches the best value, across all targets the AlgoPerf
profile scores, who missed or failed, and what the evidence cannot decide (pairs whose P(sooner) interval holds
0.5, medians without an interval, seconds measured under contention), and with tuning, the setting each method
was scored with.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tvr_convbench.bench.analysis.stats import min_seeds_for_median_interval
from tvr_convbench.bench.analysis.tables import digits_for, fmt, fmt_interval, headline_target, ttt_row

AXIS_WORDS = {"steps": ("optimizer steps", "steps"), "seconds": ("train seconds", "s")}


def order_by_time(analysis: Any, target: str, axis: str) -> list[str]:
    """Methods by median time to ``target`` (first reading, then interpolated); among equal medians (those
    censored, at infinity, above all) the one that missed it in fewer runs first."""

    def key(method: str) -> tuple[float, float, int]:
        first = ttt_row(analysis.ttt_index, method, target, axis)
        interp = ttt_row(analysis.ttt_index, method, target, axis, "interpolated")
        return (first.point, interp.point if interp else math.inf, first.censored)

    return sorted((m for m in analysis.log.labels if ttt_row(analysis.ttt_index, m, target, axis)), key=key)


def time_phrase(analysis: Any, method: str, target: str, axis: str) -> str:
    unit = AXIS_WORDS[axis][1]
    first = ttt_row(analysis.ttt_index, method, target, axis)
    interp = ttt_row(analysis.ttt_index, method, target, axis, "interpolated")
    if not math.isfinite(first.point):
        return f"{method} (missed in {first.censored}/{first.runs} runs)"
    cell = fmt_interval(first.point, first.lower, first.upper, digits_for(axis), first.runs)
    extra = f", interpolated {fmt(interp.point, digits_for(axis))}" if interp and math.isfinite(interp.point) else ""
    missed = f", {first.censored}/{first.runs} missed" if first.censored else ""
    return f"{method} {cell} {unit}{extra}{missed}"


def pair_probability(analysis: Any, a: str, b: str, axis: str, target: str) -> Any:
    rows = analysis.pairwise
    rows = rows[(rows["axis"] == axis) & (rows["target"] == target) & (rows["method"] == a) & (rows["other"] == b)]
    return next(rows.itertuples(index=False), None)


def separation(p: Any, a: str, b: str) -> str:
    interval = fmt_interval(p.probability, p.lower, p.upper, 2)
    if math.isnan(p.lower):
        return f"P({a} sooner than {b}) = {interval} (too few seeds for an interval)"
    verdict = "separated" if p.lower > 0.5 else "the evidence cannot separate them"
    return f"P({a} sooner than {b}) = {interval}: {verdict}"


def axis_finding(analysis: Any, target: str, axis: str) -> str:
    order = order_by_time(analysis, target, axis)
    words = AXIS_WORDS[axis][0]
    value = analysis.targets.set_index("target").loc[target, "value"]
    head = f"**Soonest to the {target} target ({analysis.cfg.metric} {fmt(value, 2)}) in {words}**: "
    reached = [m for m in order if math.isfinite(ttt_row(analysis.ttt_index, m, target, axis).point)]
    if not reached:
        return head + "no method reached it (median over seeds)."
    text = head + "; then ".join(time_phrase(analysis, m, target, axis) for m in order[:3]) + "."
    if len(order) > 1:
        p = pair_probability(analysis, order[0], order[1], axis, target)
        text += f" {separation(p, order[0], order[1])}." if p is not None else ""
    return text


def best_finding(analysis: Any) -> str:
    summary = analysis.summary[analysis.summary["runs"] > 0]
    higher = analysis.cfg.higher_is_better
    summary = summary.sort_values("best", ascending=not higher)
    name = "IQM" if analysis.cfg.aggregate == "iqm" else analysis.cfg.aggregate
    parts = [
        f"{row.method} {fmt_interval(row.best, row.best_lower, row.best_upper, 1, int(row.runs))}"
        for row in summary.head(3).itertuples(index=False)
    ]
    return f"**Best val {analysis.cfg.metric}** ({name} over seeds): " + ", then ".join(parts) + "."


def profile_finding(analysis: Any) -> str:
    scores = analysis.profile_scores
    parts = []
    for axis in ("steps", "seconds"):
        top = scores[scores["axis"] == axis].sort_values("score", ascending=False).head(3)
        parts.append(f"in {axis}: " + ", ".join(f"{r.method} {fmt(r.score, 3)}" for r in top.itertuples(index=False)))
    workloads = analysis.targets["target"].nunique()
    return (
        f"**Across all {workloads} targets** (AlgoPerf performance-profile score, 1 = always the fastest, median over "
        "seeds per target first): " + "; ".join(parts) + "."
    )


def tuning_finding(analysis: Any) -> list[str]:
    """The setting each method was scored with, and the ones selected at an end of their grid."""
    if analysis.tuning is None:
        return []
    choices = analysis.tuning.selection.choices
    parts = [f"{label} {', '.join(f'{k}={v:g}' for k, v in c['settings'].items())}" for label, c in choices.items()]
    edges = [label for label, c in choices.items() if c["edge"]]
    edge = f"; at an end of the grid (too narrow for them): {', '.join(edges)}" if edges else ""
    rule = analysis.log.sweep.tuning.rule
    return [
        f"**Selected settings** (fewest median {rule.axis} to {rule.target} over the tuning trials): "
        + "; ".join(parts)
        + edge
        + "."
    ]


def miss_findings(analysis: Any, target: str) -> list[str]:
    runs = analysis.log.runs
    broken = runs[runs["status"].isin(["failed", "diverged"])]
    lines = []
    if len(broken):
        listed = ", ".join(f"{r.run} ({r.status})" for r in broken.itertuples(index=False))
        lines.append(f"**Failed or diverged runs**, counted as misses: {listed}.")
    missed = analysis.per_run[(analysis.per_run["target"] == target) & ~analysis.per_run["reached"]]
    counts = missed.groupby("method", sort=False).size()
    if len(counts):
        total = analysis.per_run.drop_duplicates("run").groupby("method").size()
        listed = ", ".join(f"{m} {n}/{total[m]}" for m, n in counts.items())
        lines.append(f"**Missed the {target} target** within the budget (runs): {listed}.")
    return lines


def undecided(analysis: Any, target: str) -> str:
    """What the evidence cannot decide: unseparated pairs, medians without an interval, contention."""
    parts = []
    pairs = analysis.pairwise[(analysis.pairwise["target"] == target) & (analysis.pairwise["axis"] == "steps")]
    open_pairs = pairs[(pairs["lower"] <= 0.5) & (pairs["upper"] >= 0.5) & (pairs["method"] < pairs["other"])]
    if len(open_pairs):
        shown = ", ".join(f"{r.method}-{r.other}" for r in open_pairs.head(8).itertuples(index=False))
        more = f" and {len(open_pairs) - 8} more" if len(open_pairs) > 8 else ""
        parts.append(f"in steps to {target}, the P(sooner) interval holds 0.5 for {shown}{more}")
    n_min = min_seeds_for_median_interval(analysis.cfg.confidence)
    if analysis.max_runs < n_min:
        parts.append(
            f"with {analysis.max_runs} seeds no distribution-free {analysis.cfg.confidence:.0%} interval of a median "
            f"exists (it needs {n_min}): medians marked † have none"
        )
    noisy = [n for n in analysis.notes if "measure contention" in n]
    if noisy:
        parts.append("the seconds of " + ", ".join(n.split(":")[0] for n in noisy) + " measure a busy machine")
    if analysis.target_set.source == "posthoc":
        parts.append("the targets are post hoc (fixed from the scored runs themselves)")
    return "**What the evidence cannot decide**: " + ("; ".join(parts) if parts else "nothing flagged") + "."


def findings(analysis: Any) -> list[str]:
    """The Findings section's bullet lines."""
    target = headline_target(analysis.targets)
    lines = [axis_finding(analysis, target, "steps"), axis_finding(analysis, target, "seconds")]
    lines += [best_finding(analysis), profile_finding(analysis), *tuning_finding(analysis)]
    lines += miss_findings(analysis, target)
    lines.append(undecided(analysis, target))
    return [f"- {line}" for line in lines]


def finding_frame(analysis: Any) -> pd.DataFrame:
    """The findings as a one-column table (written as findings.csv beside the report)."""
    return pd.DataFrame({"finding": [line.removeprefix("- ") for line in findings(analysis)]})
