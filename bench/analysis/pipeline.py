"""From a sweep folder to every table of the report: ``analyse`` and ``run_target_table``.

Layers: ``load`` (validated tidy table) -> ``targets`` (per-run measurements against the sweep's targets, read
from ``targets.json``) -> ``aggregate``/``stats`` (aggregates over seeds, intervals, profiles). Nothing here
writes files.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tvr_convbench.bench.analysis import aggregate
from tvr_convbench.bench.analysis.load import SweepLog, load_sweep, read_benchmark, read_sweep
from tvr_convbench.bench.analysis.sensitivity import Sensitivity, sensitivity
from tvr_convbench.bench.analysis.tables import index_ttt
from tvr_convbench.bench.analysis.targets import best_of, model_selection, run_table, val_curves
from tvr_convbench.bench.config import ReportConfig
from tvr_convbench.bench.targets import TargetSet, compute_targets, posthoc_targets
from tvr_convbench.core.schema import SweepPaths

CONTENTION_SPREAD = 1.5
"""a method whose step time varies across its seeds by more than this factor was measured on a busy machine"""


@dataclass(frozen=True)
class Analysis:
    """Every table of the report, computed from a sweep log and a report config."""

    log: SweepLog
    cfg: ReportConfig
    target_set: TargetSet
    """the targets and their provenance (``targets.json``, or post hoc)"""
    targets: pd.DataFrame
    """target, fraction, value."""
    curves: pd.DataFrame
    """Val rows of the report metric: method, seed, run, step, train_seconds, value."""
    per_run: pd.DataFrame
    """``targets.run_table``: per run and target (failed runs included as misses)."""
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
    """method, axis, score, and the per-workload medians and ratios."""
    selection: pd.DataFrame
    """``targets.model_selection``."""
    projection: pd.DataFrame = field(default_factory=pd.DataFrame)
    """``aggregate.projected_costs``: steps to target x train-step seconds at DiDeMo shapes (a projection)."""
    bench_machine: str = ""
    """the machine line of the benchmark the projection comes from"""
    tuning: Sensitivity | None = None
    """the tuning phase (trials, selection, sensitivity); None without a tuning section"""
    notes: tuple[str, ...] = field(default=())
    """Warnings about the results themselves (e.g. targets met before any training, contention)."""

    @functools.cached_property
    def ttt_index(self) -> dict:
        """``ttt`` keyed by (method, target, axis, reading, statistic) (``tables.index_ttt``)."""
        return index_ttt(self.ttt)

    @property
    def max_runs(self) -> int:
        """The most analysed seeds any method has (1 means no intervals anywhere)."""
        return int(self.summary["runs"].max())


def read_report_config(sweep_dir: Path | str) -> ReportConfig:
    """The ReportConfig of the ``report`` mapping in ``sweep.yaml`` (defaults when absent)."""
    return read_sweep(Path(sweep_dir)).report


class AnalysisWarning(UserWarning):
    """A caveat about the results of a sweep (not about its run log)."""


def sweep_targets(log: SweepLog, cfg: ReportConfig, curves: pd.DataFrame) -> tuple[TargetSet, list[str]]:
    """The sweep's targets: ``targets.json`` when the sweep fixed them in advance, else post hoc from the scored
    runs (with a note saying so)."""
    path = SweepPaths(log.sweep_dir).targets
    if log.sweep.targets.source != "posthoc" and path.exists():
        targets = TargetSet.read(path)
        if targets.metric != cfg.metric:
            raise ValueError(f"{path}: targets are for {targets.metric}, the report metric is {cfg.metric}")
        return targets, degenerate_notes(targets)
    if log.sweep.targets.source == "absolute":  # the values are the config's: nothing to fix first
        return compute_targets(log.sweep, log.sweep_dir, None), []
    bests = {
        run: best_of(c["step"].to_numpy(float), c["value"].to_numpy(float), cfg.higher_is_better)[0]
        for run, c in curves.groupby("run", sort=False)
    }
    targets = posthoc_targets(cfg.metric, log.sweep.targets.fractions, bests)
    why = "the sweep has no targets section" if log.sweep.targets.source == "posthoc" else f"{path} is missing"
    return targets, [f"targets are post hoc ({why}): the scored runs set their own finish line"]


def degenerate_notes(targets: TargetSet) -> list[str]:
    """Gain targets whose reference does not exceed the floor: every target is the floor (training gained
    nothing over zero-shot in the reference runs)."""
    if targets.rule != "gain" or targets.floor is None or targets.reference_value is None:
        return []
    gained = (
        targets.reference_value > targets.floor if targets.higher_is_better else targets.reference_value < targets.floor
    )
    if gained:
        return []
    return [
        f"the reference value {targets.reference_value:.4g} does not improve on the zero-shot floor "
        f"{targets.floor:.4g}: every gain target equals the floor"
    ]


def has_curves(log: SweepLog) -> bool:
    """At least one analysed run with evaluations (done or diverged): without one there is nothing to analyse."""
    return bool((log.runs["included"] & log.runs["status"].isin(["done", "diverged"])).any())


def initial_quality_notes(per_run: pd.DataFrame) -> list[str]:
    """Targets some run meets at step 0: they measure quality before training, not convergence speed."""
    at_zero = per_run[per_run["steps_to_target"] == 0]
    return [
        f"target {target} is met at step 0 (before any training) by {', '.join(group['run'])}: it measures initial "
        "quality, not convergence"
        for target, group in at_zero.groupby("target", sort=False)
    ]


def contention_notes(summary: pd.DataFrame) -> list[str]:
    """Methods whose step time varies across seeds by more than ``CONTENTION_SPREAD``: their seconds measure a
    busy machine."""
    noisy = summary[summary.get("step_time_spread", pd.Series(dtype=float)) > CONTENTION_SPREAD]
    return [
        f"{row.method}: its step time varies {row.step_time_spread:.1f}x across seeds (> {CONTENTION_SPREAD}x): its "
        "train seconds measure contention on a busy machine, not the method; compare it in steps"
        for row in noisy.itertuples(index=False)
    ]


def failed_runs(log: SweepLog) -> pd.DataFrame:
    failed = log.runs[log.runs["included"] & (log.runs["status"] == "failed")]
    return failed[["label", "seed", "run"]].rename(columns={"label": "method"})


def analyse(log: SweepLog, cfg: ReportConfig) -> Analysis:
    """All tables of the report; the sweep must have at least one analysed run."""
    if not has_curves(log):
        raise ValueError(f"{log.sweep_dir}: no finished run to analyse")
    labels, curves = log.labels, val_curves(log.metrics, cfg.metric)
    target_set, notes = sweep_targets(log, cfg, curves)
    targets = target_set.table()
    per_run = run_table(curves, targets, log.run_max_steps(), cfg.higher_is_better, failed_runs(log))
    costs = aggregate.run_costs(log.metrics)
    summary = aggregate.method_summary(per_run, costs, labels, cfg)
    profile, scores = aggregate.profiles(per_run, labels, cfg)
    notes += initial_quality_notes(per_run) + contention_notes(summary)
    step_seconds, machine = read_benchmark(cfg.bench, notes)
    tuned = sensitivity(log.sweep, log.sweep_dir, target_set) if log.sweep.tuning.enabled else None
    notes += tuned.edge_notes() if tuned is not None else []
    for note in notes:
        warnings.warn(note, AnalysisWarning, stacklevel=2)
    ttt = aggregate.time_to_target_intervals(per_run, labels, cfg)
    return Analysis(
        log=log,
        cfg=cfg,
        target_set=target_set,
        targets=targets,
        curves=curves,
        per_run=per_run,
        ttt=ttt,
        summary=summary,
        costs=costs,
        pairwise=aggregate.pairwise_probabilities(per_run, labels, cfg),
        profile=profile,
        profile_scores=scores,
        selection=model_selection(log.metrics, per_run),
        projection=aggregate.projected_costs(ttt, step_seconds),
        bench_machine=machine,
        tuning=tuned,
        notes=tuple(notes),
    )


def run_target_table(sweep_dir: Path | str) -> pd.DataFrame:
    """Per analysed run and target (for wandb run summaries and a wandb table).

    Columns: method, seed, run, target, target_value, steps_to_target, seconds_to_target (first evaluation meeting
    it; +inf = never reached), steps_interpolated, seconds_interpolated, reached, best (best val metric),
    best_step, auc (normalised area under the val curve, metric units).
    """
    cfg = read_report_config(sweep_dir)
    log = load_sweep(sweep_dir, cfg.metric)
    curves = val_curves(log.metrics, cfg.metric)
    target_set, _ = sweep_targets(log, cfg, curves)
    return run_table(curves, target_set.table(), log.run_max_steps(), cfg.higher_is_better, failed_runs(log))
