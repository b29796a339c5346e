"""From a sweep folder to every table of the report: ``analyse`` and ``run_target_table``.

Layers: ``load`` (validated tidy table) -> ``targets`` (per-run measurements) -> ``aggregate``/``stats``
(aggregates over seeds, bootstrap intervals). Nothing here writes files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tvr_convbench.bench.analysis import aggregate
from tvr_convbench.bench.analysis.load import SweepLog, load_sweep, read_sweep
from tvr_convbench.bench.analysis.targets import model_selection, run_table, target_table, val_curves
from tvr_convbench.bench.config import ReportConfig


@dataclass(frozen=True)
class Analysis:
    """Every table of the report, computed from a sweep log and a report config."""

    log: SweepLog
    cfg: ReportConfig
    targets: pd.DataFrame
    """target, fraction, value, definition."""
    curves: pd.DataFrame
    """Val rows of the report metric: method, seed, run, step, train_seconds, value."""
    per_run: pd.DataFrame
    """``targets.run_table``: per run and target."""
    ttt: pd.DataFrame
    """``aggregate.time_to_target_intervals``."""
    summary: pd.DataFrame
    """``aggregate.method_summary``."""
    costs: pd.DataFrame
    """``aggregate.run_costs``."""
    pairwise: pd.DataFrame
    """``aggregate.pairwise_probabilities``."""
    profile: pd.DataFrame
    """Performance profiles (axis, tau, method, fraction)."""
    profile_scores: pd.DataFrame
    """method, axis, score."""
    selection: pd.DataFrame
    """``targets.model_selection``."""
    notes: tuple[str, ...] = field(default=())
    """Warnings about the results themselves (e.g. targets met before any training)."""

    @property
    def max_runs(self) -> int:
        """The most analysed seeds any method has (1 means no intervals anywhere)."""
        return int(self.summary["runs"].max())


def read_report_config(sweep_dir: Path | str) -> ReportConfig:
    """The ReportConfig of the ``report`` mapping in ``sweep.yaml`` (defaults when absent)."""
    return read_sweep(Path(sweep_dir)).report


class AnalysisWarning(UserWarning):
    """A caveat about the results of a sweep (not about its run log)."""


def initial_quality_notes(per_run: pd.DataFrame) -> list[str]:
    """Targets some run meets at step 0: they measure quality before training, not convergence speed."""
    at_zero = per_run[per_run["steps_to_target"] == 0]
    return [
        f"target {target} is met at step 0 (before any training) by {', '.join(group['run'])}: it measures initial "
        "quality, not convergence (in the performance profile, a run that needs training to meet it counts as a miss "
        "for that seed)"
        for target, group in at_zero.groupby("target", sort=False)
    ]


def analyse(log: SweepLog, cfg: ReportConfig) -> Analysis:
    """All tables of the report; the sweep must have at least one analysed run."""
    if not log.runs["included"].any():
        raise ValueError(f"{log.sweep_dir}: no finished run to analyse")
    labels, curves = log.labels, val_curves(log.metrics, cfg.metric)
    targets = target_table(cfg, curves)
    per_run = run_table(curves, targets, log.run_max_steps(), cfg.higher_is_better)
    costs = aggregate.run_costs(log.metrics)
    profile, scores = aggregate.profiles(per_run, labels, cfg)
    notes = initial_quality_notes(per_run)
    for note in notes:
        warnings.warn(note, AnalysisWarning, stacklevel=2)
    return Analysis(
        log=log,
        cfg=cfg,
        targets=targets,
        curves=curves,
        per_run=per_run,
        ttt=aggregate.time_to_target_intervals(per_run, labels, cfg),
        summary=aggregate.method_summary(per_run, costs, labels, cfg),
        costs=costs,
        pairwise=aggregate.pairwise_probabilities(per_run, labels),
        profile=profile,
        profile_scores=scores,
        selection=model_selection(log.metrics, per_run),
        notes=tuple(notes),
    )


def run_target_table(sweep_dir: Path | str) -> pd.DataFrame:
    """Per analysed run and target (for wandb run summaries and a wandb table).

    Columns: method, seed, run, target, target_value, steps_to_target, seconds_to_target (+inf = never reached),
    reached, best (best val metric), best_step, auc (normalised area under the val curve, metric units).
    """
    cfg = read_report_config(sweep_dir)
    log = load_sweep(sweep_dir, cfg.metric)
    curves = val_curves(log.metrics, cfg.metric)
    return run_table(curves, target_table(cfg, curves), log.run_max_steps(), cfg.higher_is_better)
