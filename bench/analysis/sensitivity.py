"""Sensitivity to the tuned settings: per method and trial, the best val value and the time to the selection
rule's target over the tuning seeds, the selected trial marked and a selection at an end of its grid flagged.

Pure functions of the tuning runs' per-run table (``bench.selection.trial_table``) and ``selection.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tvr_convbench.bench.config import SweepConfig
from tvr_convbench.bench.targets import TargetSet
from tvr_convbench.bench.tuning import Selection

TIME = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


@dataclass(frozen=True)
class Sensitivity:
    """The tuning phase of a sweep, for the report."""

    selection: Selection
    table: pd.DataFrame
    """method, trial, the tuned settings, best (median, min, max over tuning seeds), time to the rule's target
    (median, min, max), selected, edge"""
    keys: list[str]
    """the tuned settings (the space's keys)"""

    def edge_notes(self) -> list[str]:
        """A method whose selected value sits at an end of its grid: the grid was too narrow for it."""
        return [
            f"{label}: the selected {', '.join(c['edge'])} is at the edge of the tuning grid (the grid may be too "
            "narrow for it)"
            for label, c in self.selection.choices.items()
            if c["edge"]
        ]


def trial_summary(per_run: pd.DataFrame, sweep: SweepConfig, selection: Selection) -> pd.DataFrame:
    """One row per method and trial (see ``Sensitivity.table``)."""
    rule, trials = sweep.tuning.rule, selection.trials
    rows = per_run[per_run["target"] == rule.target]
    out = []
    for spec in sweep.methods:
        choice = selection.choices.get(spec.label, {})
        for k, settings in enumerate(trials):
            mine = rows[(rows["method"] == spec.label) & (rows["trial"] == k)]
            best, time = mine["best"].to_numpy(float), mine[TIME[rule.axis]].to_numpy(float)
            row = {"method": spec.label, "trial": k, **settings}
            row |= _spread("best", best) | _spread("time", time)
            row |= {"selected": choice.get("trial") == k, "edge": ", ".join(choice.get("edge", []))}
            out.append(row)
    return pd.DataFrame(out)


def _spread(name: str, values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {f"{name}_median": np.nan, f"{name}_min": np.nan, f"{name}_max": np.nan}
    return {
        f"{name}_median": float(np.median(values)),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
    }


def sensitivity(sweep: SweepConfig, sweep_dir: Path, targets: TargetSet) -> Sensitivity | None:
    """The tuning phase's table, or None (no tuning section, or no selection yet)."""
    from tvr_convbench.bench.selection import read_selection, trial_table

    selection = read_selection(sweep, sweep_dir)
    if selection is None:
        return None
    table = trial_summary(trial_table(sweep, sweep_dir, targets), sweep, selection)
    return Sensitivity(selection, table, sorted(sweep.tuning.space))


def slice_through_selected(table: pd.DataFrame, method: str, key: str, keys: list[str]) -> pd.DataFrame:
    """The trials of ``method`` along ``key`` with every other tuned setting at its selected value (a grid's
    slice, or an axis of the axes search), sorted by the value of ``key``."""
    mine = table[table["method"] == method]
    chosen = mine[mine["selected"]]
    if chosen.empty:
        return mine.iloc[0:0]
    for other in (k for k in keys if k != key):
        mine = mine[mine[other] == chosen[other].iloc[0]]
    return mine.sort_values(key)
