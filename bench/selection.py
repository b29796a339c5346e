"""Selection of each method's tuned setting from its finished trials, written once to ``selection.json``.

The rule (``bench.tuning.SelectionRule``) is declared in the sweep file before anything runs; the times to its
target come from the tuning runs, measured by the analysis exactly as for scored runs (the first evaluation
meeting the target; a failed or diverged trial misses it), against the targets fixed from those same tuning runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tvr_convbench.bench.config import SweepConfig
from tvr_convbench.bench.targets import TargetsError, TargetSet
from tvr_convbench.bench.tuning import Selection, choose, protocol_of
from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.schema import FINISHED_STATUSES, SweepPaths

TIME_COLUMNS = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


def check_selection_file(sweep: SweepConfig, sweep_dir: Path) -> None:
    """Refuse a rerun whose tuning space, trials, seeds or rule differ from the ``selection.json`` written."""
    path = SweepPaths(sweep_dir).selection
    if not sweep.tuning.enabled or not path.exists():
        return
    saved, expected = Selection.read(path).protocol(), protocol_of(sweep.tuning, sweep.trials())
    changed = sorted(k for k in expected if saved.get(k) != expected[k])
    if changed:
        raise ConfigError(
            f"{path}: the settings were selected under another tuning configuration (changed: {', '.join(changed)}); "
            f"use a new sweep name, or delete {path} (and the runs scored with it) to select again"
        )


def read_selection(sweep: SweepConfig, sweep_dir: Path) -> Selection | None:
    path = SweepPaths(sweep_dir).selection
    return Selection.read(path) if sweep.tuning.enabled and path.exists() else None


def fix_selection(sweep: SweepConfig, sweep_dir: Path, targets: TargetSet) -> Selection | None:
    """``selection.json`` (written once, before the first scored run); ``None`` without a tuning section."""
    if not sweep.tuning.enabled:
        return None
    existing = read_selection(sweep, sweep_dir)
    if existing is not None:
        return existing
    selection = select_trials(sweep, sweep_dir, targets)
    selection.write(SweepPaths(sweep_dir).selection)
    return selection


def select_trials(sweep: SweepConfig, sweep_dir: Path, targets: TargetSet) -> Selection:
    """Apply the rule to every method's finished trials."""
    per_run = trial_table(sweep, sweep_dir, targets)
    trials, rule = sweep.trials(), sweep.tuning.rule
    rows = per_run[per_run["target"] == rule.target]
    choices = {}
    for spec in sweep.methods:
        mine = rows[rows["method"] == spec.label]
        times = _matrix(mine, TIME_COLUMNS[rule.axis], len(trials))  # [K, S]
        ties = _matrix(mine, rule.tie, len(trials))  # [K, S]
        choices[spec.label] = choose(trials, times, ties, sweep.tuning, targets.higher_is_better).__dict__
    return Selection(**protocol_of(sweep.tuning, trials), choices=choices)


def trial_table(sweep: SweepConfig, sweep_dir: Path, targets: TargetSet):  # noqa: ANN201 - a DataFrame
    """The analysis's per-run table of the tuning runs (every one finished), with each run's trial index."""
    from tvr_convbench.bench.analysis.load import load_sweep
    from tvr_convbench.bench.analysis.pipeline import failed_runs
    from tvr_convbench.bench.analysis.targets import run_table, val_curves

    unfinished = [r for r, s in _statuses(sweep, sweep_dir).items() if s not in (*FINISHED_STATUSES, "failed")]
    if unfinished:
        raise TargetsError(f"tuning runs unfinished: {', '.join(unfinished[:5])}: the selection needs every trial")
    log = load_sweep(sweep_dir, targets.metric, phase="tuning")
    curves = val_curves(log.metrics, targets.metric)
    per_run = run_table(curves, targets.table(), log.run_max_steps(), targets.higher_is_better, failed_runs(log))
    trial = {cfg.run: cfg.trial for cfg in sweep.tuning_runs()}
    return per_run.assign(trial=per_run["run"].map(trial))


def _statuses(sweep: SweepConfig, sweep_dir: Path) -> dict[str, str]:
    from tvr_convbench.bench.runlog import read_status

    return {cfg.run: read_status(sweep_dir / cfg.run) or "missing" for cfg in sweep.tuning_runs()}


def _matrix(rows, column: str, trials: int) -> np.ndarray:  # noqa: ANN001 - a DataFrame
    """[K trials, S seeds] of one method's values, seeds in run order."""
    per_trial = [rows.loc[rows["trial"] == k, column].to_numpy(dtype=float) for k in range(trials)]
    width = max((len(v) for v in per_trial), default=0)
    return np.array([np.pad(v, (0, width - len(v)), constant_values=np.inf) for v in per_trial])
