"""Markdown renderings of the analysis tables (numbers formatted, +inf shown as a censored "∞").

Pure functions from DataFrames to DataFrames of formatted cells; the CSV versions of the same tables are written
by ``report.py``. A median whose sample is too small for a distribution-free interval of the requested coverage
is marked ``†`` (``NO_INTERVAL``), never given an interval it does not have.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

INF, MISSING = "∞", "–"
NO_INTERVAL = "†"
"""a median without an order-statistic interval: too few seeds for the requested coverage"""


def fmt(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals; +inf as ∞ (censored), NaN/None as –."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and math.isinf(value):
        return INF if value > 0 else "-" + INF
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def fmt_interval(point: float, lower: float, upper: float, digits: int = 1, runs: int = 1) -> str:
    """``point [lower, upper]``; the point alone for one run, ``point †`` when an interval is missing for more."""
    if math.isnan(lower) and math.isnan(upper):
        return fmt(point, digits) + (f" {NO_INTERVAL}" if runs > 1 else "")
    return f"{fmt(point, digits)} [{fmt(lower, digits)}, {fmt(upper, digits)}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of a frame's (already formatted) cells."""
    header = [str(c) for c in frame.columns]
    cells = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def digits_for(axis: str) -> int:
    return 0 if axis == "steps" else 1


def censored_note(censored: int, runs: int) -> str:
    return f" ({censored}/{runs} missed)" if censored else ""


def ttt_cell(row: Any) -> str:
    """One time-to-target cell: point [interval] plus the missed count."""
    cell = fmt_interval(row.point, row.lower, row.upper, digits_for(row.axis), int(row.runs))
    return cell + censored_note(int(row.censored), int(row.runs))


def headline_target(targets: pd.DataFrame) -> str:
    """The target the summary and the findings lead with: the one nearest to 90% (fractions), else the middle."""
    fractions = targets["fraction"].to_numpy(dtype=float)
    if np.isfinite(fractions).any():
        return str(targets["target"].iloc[int(np.nanargmin(np.abs(fractions - 0.9)))])
    return str(targets["target"].iloc[len(targets) // 2])


def index_ttt(ttt: pd.DataFrame) -> dict[tuple, Any]:
    """The time-to-target rows keyed by (method, target, axis, reading, statistic), for constant-time lookups."""
    return {(r.method, r.target, r.axis, r.reading, r.statistic): r for r in ttt.itertuples(index=False)}


def ttt_row(index: dict, method: str, target: str, axis: str, reading: str = "first", stat: str = "median"):  # noqa: ANN201
    """One row of ``index_ttt`` (None when the method has no run for it)."""
    return index.get((method, target, axis, reading, stat))


def ranking(summary: pd.DataFrame, scores: pd.DataFrame) -> list[str]:
    """Methods ranked by the AlgoPerf profile score in steps, then in seconds, then by best value."""
    steps = scores[scores["axis"] == "steps"].set_index("method")["score"]
    seconds = scores[scores["axis"] == "seconds"].set_index("method")["score"]
    present = summary[summary["runs"] > 0]
    key = {m: (-steps.get(m, 0.0), -seconds.get(m, 0.0), -best) for m, best in zip(present["method"], present["best"])}
    return sorted(key, key=key.get)


def summary_table(analysis: Any) -> pd.DataFrame:
    """The ranked summary: profile scores, best value, both readings of steps and seconds to the headline target,
    misses, costs."""
    cfg, ttt, summary = analysis.cfg, analysis.ttt_index, analysis.summary.set_index("method")
    target = headline_target(analysis.targets)
    scores = analysis.profile_scores.pivot(index="method", columns="axis", values="score")
    aggregate = "IQM" if cfg.aggregate == "iqm" else cfg.aggregate
    rows = []
    for rank, method in enumerate(ranking(analysis.summary, analysis.profile_scores), 1):
        row = summary.loc[method]
        cells = {"rank": str(rank), "method": method, "seeds": str(int(row["runs"]))}
        cells["profile score (steps / seconds)"] = f"{fmt(scores.loc[method, 'steps'], 3)} / " + fmt(
            scores.loc[method, "seconds"], 3
        )
        cells[f"best val {cfg.metric} ({aggregate})"] = fmt_interval(
            row["best"], row["best_lower"], row["best_upper"], 1, int(row["runs"])
        )
        cells |= _headline_cells(ttt, method, target)
        cells |= {"ms/step": fmt(1e3 * row["seconds_per_step"], 1), "eval share": fmt(100 * row["eval_share"], 0) + "%"}
        rows.append(cells)
    return pd.DataFrame(rows)


def _headline_cells(ttt: dict, method: str, target: str) -> dict[str, str]:
    cells = {}
    for axis, name in (("steps", "steps"), ("seconds", "train s")):
        first, interp = ttt_row(ttt, method, target, axis), ttt_row(ttt, method, target, axis, "interpolated")
        value = ttt_cell(first) if first is not None else MISSING
        if interp is not None and math.isfinite(interp.point):
            value += f"; interp. {fmt(interp.point, digits_for(axis))}"
        cells[f"{name} to {target} (median [CI])"] = value
    return cells


def ttt_detail_table(ttt: pd.DataFrame) -> pd.DataFrame:
    """Per method, target and axis: median (first evaluation meeting it) and its interpolated reading, IQM, each
    with its interval, and how many runs missed."""
    keys, index = ["method", "target", "axis"], index_ttt(ttt)
    rows = []
    for method, target, axis in ttt[keys].drop_duplicates().itertuples(index=False):
        cell = {r: ttt_row(index, method, target, axis, *r) for r in _READINGS}
        first = cell[("first", "median")]
        rows.append({
            "method": method, "target": target, "axis": axis,
            "median (first eval)": fmt_interval(first.point, first.lower, first.upper, digits_for(axis), first.runs),
            "median (interpolated)": _plain_interval(cell[("interpolated", "median")], axis),
            "IQM (first eval)": _plain_interval(cell[("first", "iqm")], axis),
            "missed": f"{first.censored}/{first.runs}",
        })  # fmt: skip
    return pd.DataFrame(rows)


_READINGS = (("first", "median"), ("interpolated", "median"), ("first", "iqm"))


def _plain_interval(row: Any, axis: str) -> str:
    return fmt_interval(row.point, row.lower, row.upper, digits_for(axis), row.runs) if row is not None else MISSING


def pairwise_matrix(pairwise: pd.DataFrame, axis: str, labels: list[str]) -> pd.DataFrame:
    """P(row sooner than column) averaged over targets, with its bootstrap interval; the diagonal is blank."""
    mean = pairwise[(pairwise["axis"] == axis) & (pairwise["target"] == "all")].copy()
    mean["cell"] = [fmt_interval(p, lo, hi, 2) for p, lo, hi in zip(mean["probability"], mean["lower"], mean["upper"])]
    table = mean.pivot(index="method", columns="other", values="cell")
    present = [m for m in labels if m in table.index]
    table = table.reindex(index=present, columns=present).fillna(MISSING)
    return table.rename_axis(index=None, columns=None).reset_index(names="P(row sooner)")


def profile_table(scores: pd.DataFrame) -> pd.DataFrame:
    """AlgoPerf scores per axis and the per-workload ratios to the fastest median (∞: missed or > tau_max)."""
    methods = list(dict.fromkeys(scores["method"]))
    out = pd.DataFrame({"method": methods})
    for axis in ("steps", "seconds"):
        rows = scores[scores["axis"] == axis].set_index("method").reindex(methods)
        out[f"score ({axis})"] = rows["score"].map(lambda v: fmt(v, 3)).to_numpy()
        for column in (c for c in rows.columns if c.startswith("ratio ")):
            out[f"{column.removeprefix('ratio ')} ({axis})"] = rows[column].map(lambda v: fmt(v, 2)).to_numpy()
    return out


def sensitivity_table(table: pd.DataFrame, keys: list[str], axis: str) -> pd.DataFrame:
    """Per method and trial: the tuned settings, best val and time to the rule's target as median [min, max] over
    the tuning seeds, the selected trial marked (and flagged when at the edge of the grid)."""
    out = table[["method", "trial", *keys]].copy()
    for key in keys:
        out[key] = out[key].map(lambda v: f"{v:g}")
    out["best val"] = [_spread_cell(r, "best", 1) for r in table.itertuples(index=False)]
    out[f"{axis} to target"] = [_spread_cell(r, "time", digits_for(axis)) for r in table.itertuples(index=False)]
    out["selected"] = [
        ("✓" + (f" (edge: {r.edge})" if r.edge else "")) if r.selected else "" for r in table.itertuples()
    ]
    return out


def _spread_cell(row: Any, name: str, digits: int) -> str:
    median, low, high = (getattr(row, f"{name}_{s}") for s in ("median", "min", "max"))
    if low == high:
        return fmt(median, digits)
    return f"{fmt(median, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def projection_table(projection: pd.DataFrame) -> pd.DataFrame:
    """Per method: the DiDeMo step time and the projected seconds to each target (∞ where the median missed)."""
    wide = projection.pivot(index="method", columns="target", values="projected_seconds")
    wide = wide.reindex(
        index=list(dict.fromkeys(projection["method"])), columns=list(dict.fromkeys(projection["target"]))
    )
    step = projection.drop_duplicates("method").set_index("method")["step_seconds"].reindex(wide.index)
    out = pd.DataFrame({"method": wide.index, "DiDeMo s/step": [fmt(v, 2) for v in step]})
    for target in wide.columns:
        out[f"projected s to {target}"] = [fmt(v, 0) for v in wide[target]]
    return out


def selection_table(selection: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per run: the selected step, its val metric and the test metrics at that step."""
    shown = ["run", "step", f"val {metric}", *[c for c in selection.columns if c.startswith("test ")]]
    shown = [c for c in shown if c in selection.columns]
    table = selection[shown].copy()
    for column in shown[2:]:
        table[column] = table[column].map(lambda v: fmt(v, 1))
    return table.assign(step=table["step"].map(lambda v: fmt(v, 0))).rename(columns={"step": "selected step"})


def status_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every planned run: status, evaluations, last evaluated step, and for failures and divergences the
    traceback's last line."""
    table = runs[["run", "label", "seed", "status", "evaluations", "last_step", "traceback"]].copy()
    table["last_step"] = table["last_step"].map(lambda v: fmt(v, 0))
    table["analysed"] = runs["included"].map({True: "yes", False: "no"})
    return table.rename(columns={"label": "method", "last_step": "last val step", "traceback": "note"})


def mapping_table(mapping: dict[str, Any], prefix: str = "") -> pd.DataFrame:
    """A (possibly nested) mapping flattened into key/value rows (``a.b`` keys)."""
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += mapping_table(value, f"{name}.").itertuples(index=False, name=None)
        else:
            rows.append((name, fmt(value, 4) if isinstance(value, float) else str(value)))
    return pd.DataFrame(rows, columns=["key", "value"])
