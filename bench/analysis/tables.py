"""Markdown renderings of the analysis tables (numbers formatted, +inf shown as a censored "∞").

Pure functions from DataFrames to strings; the CSV versions of the same tables are written by ``report.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

INF, MISSING = "∞", "–"


def fmt(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals; +inf as ∞ (censored), NaN/None as –."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and math.isinf(value):
        return INF if value > 0 else "-" + INF
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def fmt_interval(point: float, lower: float, upper: float, digits: int = 1) -> str:
    """``point [lower, upper]``; the point alone when there is no interval (one seed)."""
    if math.isnan(lower) and math.isnan(upper):
        return fmt(point, digits)
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


def ttt_cell(row: pd.Series) -> str:
    """One time-to-target cell: point [interval] plus the censored count."""
    digits = digits_for(row["axis"])
    return fmt_interval(row["point"], row["lower"], row["upper"], digits) + censored_note(row["censored"], row["runs"])


def results_table(summary: pd.DataFrame, ttt: pd.DataFrame, metric: str, aggregate: str) -> pd.DataFrame:
    """Per method: best val metric, median steps/seconds to each target (CI, misses), AUC, costs."""
    aggregate = "IQM" if aggregate == "iqm" else aggregate
    medians = ttt[ttt["statistic"] == "median"]
    rows = []
    for row in summary.itertuples(index=False):
        cells = {"method": row.method, "runs": str(row.runs)}
        if row.runs == 0:
            rows.append(cells)
            continue
        cells[f"best val {metric} ({aggregate})"] = fmt_interval(row.best, row.best_lower, row.best_upper, 1)
        for item in medians[medians["method"] == row.method].itertuples(index=False):
            cells[f"{item.axis} to {item.target}"] = ttt_cell(pd.Series(item._asdict()))
        cells[f"AUC ({aggregate})"] = fmt_interval(row.auc, row.auc_lower, row.auc_upper, 1)
        cells |= {"s/step": fmt(row.seconds_per_step, 4), "eval s": fmt(row.eval_seconds, 2)}
        cells["eval share"] = fmt(100 * row.eval_share, 1) + "%"
        rows.append(cells)
    return pd.DataFrame(rows).fillna("no finished run")


def ttt_detail_table(ttt: pd.DataFrame) -> pd.DataFrame:
    """Per method, target and axis: median and IQM with intervals, and how many runs missed."""
    keys = ["method", "target", "axis"]
    wide = ttt.assign(
        cell=ttt.apply(lambda r: fmt_interval(r["point"], r["lower"], r["upper"], digits_for(r["axis"])), axis=1)
    )
    table = wide.pivot_table(index=keys, columns="statistic", values="cell", aggfunc="first", sort=False).reset_index()
    missed = wide.drop_duplicates(keys).set_index(keys)
    table["missed"] = [
        f"{missed.loc[tuple(k), 'censored']}/{missed.loc[tuple(k), 'runs']}" for k in table[keys].to_numpy()
    ]
    return table[[*keys, "median", "iqm", "missed"]].rename(columns={"iqm": "IQM"})


def pairwise_matrix(pairwise: pd.DataFrame, axis: str, labels: list[str]) -> pd.DataFrame:
    """P(row sooner than column), averaged over targets; the diagonal is blank."""
    mean = pairwise[(pairwise["axis"] == axis) & (pairwise["target"] == "all")]
    table = mean.pivot(index="method", columns="other", values="probability")
    present = [m for m in labels if m in table.index]
    table = table.reindex(index=present, columns=present).map(lambda v: fmt(v, 2))
    return table.rename_axis(index=None, columns=None).reset_index(names="P(row sooner)")


def profile_table(scores: pd.DataFrame) -> pd.DataFrame:
    wide = scores.pivot(index="method", columns="axis", values="score").reindex(columns=["steps", "seconds"])
    wide = wide.reindex(list(dict.fromkeys(scores["method"])))
    return wide.map(lambda v: fmt(v, 3)).rename_axis(index=None, columns=None).reset_index(names="method")


def selection_table(selection: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per run: the selected step, its val metric and the test metrics at that step."""
    shown = ["run", "step", f"val {metric}", *[c for c in selection.columns if c.startswith("test ")]]
    shown = [c for c in shown if c in selection.columns]
    table = selection[shown].copy()
    for column in shown[2:]:
        table[column] = table[column].map(lambda v: fmt(v, 1))
    return table.assign(step=table["step"].map(lambda v: fmt(v, 0))).rename(columns={"step": "selected step"})


def status_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every planned run: status, evaluations, last evaluated step and, for failures, the traceback's last line."""
    table = runs[["run", "label", "seed", "status", "evaluations", "last_step", "traceback"]].copy()
    table["last_step"] = table["last_step"].map(lambda v: fmt(v, 0))
    table["analysed"] = runs["included"].map({True: "yes", False: "no"})
    return table.rename(columns={"label": "method", "last_step": "last val step", "traceback": "failure"})


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
