"""Load a sweep's run log (``runs/<sweep>/``) into one validated, tidy table.

The layout is the sweep runner's contract (``tvr_convbench.core.schema``): ``sweep.yaml`` (the resolved sweep,
read back with ``SweepConfig.from_dict``), one folder per run ``<label>-s<seed>`` holding ``config.yaml`` (the run's
own resolved config, read with ``RunConfig.from_dict``: its trainer settings are the ones the run is analysed
with), ``status`` (running | done | failed), ``traceback.txt`` when failed, ``data.json`` and ``metrics.csv`` (long
format, columns ``COLUMNS``). ``results.csv`` (all runs concatenated) is only a fallback for a run whose own
``metrics.csv`` is missing. A run whose trainer settings differ from the sweep's (a per-method override, or a
config changed under it) breaks the one-protocol rule and is flagged.

Nothing is dropped silently: every missing, failed, diverged, still-running, unknown, duplicated or inconsistent
item becomes a message in ``SweepLog.warnings`` (also emitted with ``warnings.warn``). Finished runs enter the
statistics: ``done`` and ``diverged`` ones with their curves (a diverged run's stops where it diverged), ``failed``
ones as misses of every target (``included``); a run still running, missing, of unknown status, or done with an
unreadable log stays out and is listed. Every planned run of the phase (``scored`` by default, or the
``reference`` runs that fixed the targets) stays listed in ``SweepLog.runs`` with its status.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tvr_convbench.bench.config import RunConfig, SweepConfig, TrainerConfig
from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.schema import COLUMNS, LOG_SPLITS, RunPaths, SweepPaths

RUN_FILES = ("config.yaml", "metrics.csv", "status")


class SweepLogWarning(UserWarning):
    """A problem in a sweep's run log (missing, failed, running or inconsistent runs)."""


@dataclass(frozen=True)
class SweepLog:
    """A validated sweep: its config, the status of every planned run and the rows of the analysed runs."""

    sweep_dir: Path
    sweep: SweepConfig
    """The resolved ``sweep.yaml``."""
    configs: dict[str, RunConfig]
    """Every planned run's config: its own ``config.yaml`` where readable, else the one the sweep plans."""
    runs: pd.DataFrame
    """One row per planned run: run, label, method, seed, status, included, evaluations, last_step, traceback."""
    metrics: pd.DataFrame
    """Rows (``COLUMNS``) of the included runs only; ``method`` is the sweep entry's label."""
    data: dict[str, Any]
    """``data.json`` of the first run that has one (empty when none does)."""
    warnings: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.sweep.name

    @property
    def trainer(self) -> TrainerConfig:
        """The sweep's protocol (a run's own settings are in ``configs``)."""
        return self.sweep.trainer

    @property
    def max_steps(self) -> int:
        """The largest step budget of any run (the sweep's, unless a run overrides it)."""
        return max([self.trainer.max_steps, *(cfg.trainer.max_steps for cfg in self.configs.values())])

    def run_max_steps(self) -> dict[str, int]:
        """Each planned run's own step budget."""
        return {run: cfg.trainer.max_steps for run, cfg in self.configs.items()}

    @property
    def labels(self) -> list[str]:
        """Method labels in sweep order."""
        return list(dict.fromkeys(self.runs["label"]))


def read_sweep(sweep_dir: Path) -> SweepConfig:
    """``sweep.yaml`` read back with ``SweepConfig.from_dict`` (ValueError naming the file and key otherwise)."""
    path = SweepPaths(sweep_dir).sweep
    if not path.is_file():
        raise ValueError(f"{sweep_dir} has no sweep.yaml")
    return SweepConfig.from_file(path)


PHASES = ("scored", "reference", "tuning")
ANALYSED = ("done", "diverged", "failed")
"""statuses that enter the statistics (failed: as misses)"""


def phase_runs(sweep: SweepConfig, phase: str, sweep_dir: Path) -> list[RunConfig]:
    """The planned runs of one phase; the scored runs of a tuned sweep follow its ``selection.json`` (none before
    it exists)."""
    from tvr_convbench.bench.selection import read_selection

    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r} (one of {PHASES})")
    if phase == "tuning":
        return sweep.tuning_runs()
    return sweep.scored_runs(read_selection(sweep, sweep_dir)) if phase == "scored" else sweep.reference_runs()


def planned_runs(runs: list[RunConfig]) -> pd.DataFrame:
    """The planned runs of one phase, in sweep order: run, label, method, seed."""
    rows = [(cfg.run, cfg.label, cfg.method, cfg.seed) for cfg in runs]
    return pd.DataFrame(rows, columns=["run", "label", "method", "seed"])


def run_config(run_dir: Path, planned: RunConfig, notes: list[str]) -> RunConfig:
    """The run's own ``config.yaml`` (the settings it ran with), or the planned config when it has none."""
    path = RunPaths(run_dir).config
    if not path.is_file():
        return planned
    try:
        cfg = RunConfig.from_file(path)
    except (ConfigError, OSError, UnicodeDecodeError) as error:
        notes.append(f"{planned.run}: unreadable config.yaml ({error}); analysed with the sweep's settings")
        return planned
    return cfg


def protocol_override_note(cfg: RunConfig, sweep: SweepConfig) -> str | None:
    """A warning when a run's trainer settings differ from the sweep's (the one-protocol rule is broken); the
    settings the tuning ruleset searches (its space and tied settings) differ by design and are not flagged."""
    own, shared = dataclasses.asdict(cfg.trainer), dataclasses.asdict(sweep.trainer)
    tuned = {*sweep.tuning.space, *sweep.tuning.tied}
    changed = {k: v for k, v in own.items() if shared.get(k) != v and k not in tuned}
    if not changed:
        return None
    settings = ", ".join(f"{k}={v!r} (sweep: {shared.get(k)!r})" for k, v in changed.items())
    return f"{cfg.run}: trainer settings differ from the sweep's protocol: {settings}; analysed with its own settings"


def read_status(run_dir: Path) -> str:
    """The status word; ``missing`` without a run folder, ``unknown`` without a status file."""
    if not run_dir.is_dir():
        return "missing"
    path = run_dir / "status"
    if not path.is_file():
        return "unknown"
    return path.read_text().strip() or "unknown"


def last_traceback_line(run_dir: Path) -> str:
    path = run_dir / "traceback.txt"
    if not path.is_file():
        return "no traceback.txt"
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return lines[-1] if lines else "traceback.txt is empty"


def read_metrics_csv(path: Path) -> pd.DataFrame:
    """A metrics table with the key columns as strings and the numeric columns parsed by the C reader."""
    return pd.read_csv(path, dtype={c: str for c in ("sweep", "run", "method", "split", "metric")})


class _ResultsFallback:
    """``results.csv``, read at most once and only when a run lacks its own ``metrics.csv``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._frame = None

    def rows(self, run: str) -> pd.DataFrame | None:
        if self._frame is None:
            self._frame = read_metrics_csv(self.path) if self.path.is_file() else pd.DataFrame()
        if "run" not in self._frame:
            return None
        rows = self._frame[self._frame["run"] == run]
        return rows if len(rows) else None


def read_run_metrics(run_dir: Path, run: str, fallback: _ResultsFallback, notes: list[str]) -> pd.DataFrame | None:
    """The run's own ``metrics.csv``, else its rows of ``results.csv`` (with a warning), else None."""
    path = run_dir / "metrics.csv"
    if path.is_file():
        return read_metrics_csv(path)
    rows = fallback.rows(run)
    if rows is not None:
        notes.append(f"{run}: no metrics.csv; using its {len(rows)} rows from results.csv (may be stale)")
    return rows


def _to_numbers(column: pd.Series) -> tuple[pd.Series, int]:
    """The column as numbers, and how many non-empty cells were not numbers ("nan"/"inf" are numbers)."""
    if pd.api.types.is_numeric_dtype(column):
        return column, 0
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers, int((numbers.isna() & column.notna() & (column.str.lower() != "nan")).sum())


def _coerce_numbers(frame: pd.DataFrame, run: str, notes: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for name in ("seed", "step", "train_seconds", "value"):
        frame[name], unreadable = _to_numbers(frame[name])
        if unreadable:
            notes.append(f"{run}: {unreadable} {name} cells are not numbers (read as NaN)")
    bad = frame[["seed", "step"]].isna().any(axis=1)
    if bad.any():
        notes.append(f"{run}: dropped {int(bad.sum())} rows without a step or seed")
    frame = frame[~bad].astype({"seed": int, "step": int})
    nan_scores = frame["split"].isin(["val", "test"]) & frame["value"].isna()
    if nan_scores.any():
        notes.append(f"{run}: {int(nan_scores.sum())} val/test values are NaN (they never meet a target)")
    return frame


def _align_keys(frame: pd.DataFrame, entry: Any, sweep: str, notes: list[str]) -> pd.DataFrame:
    """Rows belong to the folder they were read from: report any disagreement, then use the planned keys."""
    expected = {"sweep": sweep, "run": entry.run, "method": entry.label, "seed": entry.seed}
    for column, value in expected.items():
        wrong = frame[column] != value
        if wrong.any():
            found = [str(v) for v in frame.loc[wrong, column].unique()[:3]]
            notes.append(f"{entry.run}: {int(wrong.sum())} rows have {column} in {found}, expected {value!r}")
    return frame.assign(sweep=sweep, run=entry.run, method=entry.label, seed=entry.seed)


def _drop_duplicates(frame: pd.DataFrame, run: str, notes: list[str]) -> pd.DataFrame:
    duplicated = frame.duplicated(["run", "split", "metric", "step"], keep="last")
    if duplicated.any():
        notes.append(f"{run}: {int(duplicated.sum())} duplicate (run, split, metric, step) rows; kept the last of each")
    return frame[~duplicated]


def validate_metrics(frame: pd.DataFrame, entry: Any, sweep: str, notes: list[str]) -> pd.DataFrame | None:
    """Check columns, keys, numbers and duplicates of one run's rows; None when the columns are unusable."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        notes.append(f"{entry.run}: metrics lack columns {missing}; run not analysed")
        return None
    extra = [c for c in frame.columns if c not in COLUMNS]
    if extra:
        notes.append(f"{entry.run}: ignored unexpected metrics columns {extra}")
    unknown = sorted(set(frame["split"].unique()) - set(LOG_SPLITS))
    if unknown:
        notes.append(f"{entry.run}: rows with unknown split(s) {unknown} are ignored")
    frame = _coerce_numbers(frame[list(COLUMNS)][frame["split"].isin(LOG_SPLITS)], entry.run, notes)
    frame = _drop_duplicates(_align_keys(frame, entry, sweep, notes), entry.run, notes)
    return frame.sort_values(["split", "metric", "step"], kind="stable").reset_index(drop=True)


def protocol_notes(run: str, val_steps: np.ndarray, frame: pd.DataFrame, trainer: TrainerConfig) -> list[str]:
    """Warnings for a finished run whose evaluations do not follow its protocol (``TrainerConfig.eval_steps``)."""
    notes, max_steps = [], trainer.max_steps
    if val_steps.max() < max_steps:
        notes.append(f"{run}: done but its last val evaluation is at step {val_steps.max()} < max_steps {max_steps}")
    expected = set(trainer.eval_steps())
    missing, extra = sorted(expected - set(val_steps.tolist())), sorted(set(val_steps.tolist()) - expected)
    if missing or extra:
        notes.append(f"{run}: val evaluations differ from the protocol: missing steps {missing}, extra {extra}")
    if trainer.eval_test and not (frame["split"] == "test").any():
        notes.append(f"{run}: trainer.eval_test is true but the run logged no test rows")
    return notes


def inclusion_note(run: str, status: str, val_steps: np.ndarray, max_steps: int, traceback: str) -> str | None:
    """Why a run stays out of the statistics (None when it goes in)."""
    last = f"step {val_steps.max()}" if len(val_steps) else "no evaluation yet"
    reasons = {
        "missing": f"{run}: planned in sweep.yaml but its folder does not exist (missing run)",
        "unknown": f"{run}: no status file; not analysed (cannot tell whether it finished)",
        "running": f"{run}: still running (last val evaluation: {last} of {max_steps}); not analysed",
    }
    if status in reasons:
        return reasons[status]
    if status not in ANALYSED:
        return f"{run}: unrecognised status {status!r}; not analysed"
    if status == "done" and not len(val_steps):
        return f"{run}: done but has no readable val evaluations of the report metric; not analysed"
    return None


def status_note(run: str, status: str, traceback: str) -> str | None:
    """The warning for a run that enters the statistics as a (partial) miss."""
    if status == "failed":
        return f"{run}: FAILED ({traceback}); counted as a miss of every target and the worst best value"
    if status == "diverged":
        return f"{run}: DIVERGED ({traceback}); a miss of every target it had not met before"
    return None


def run_rows(run_dir: Path, entry: Any, status: str, sweep: str, fallback: _ResultsFallback, notes: list[str]):
    """A planned run's validated rows, or None (no folder, no readable metrics, unusable columns)."""
    if status == "missing":
        return None
    try:
        frame = read_run_metrics(run_dir, entry.run, fallback, notes)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        notes.append(f"{entry.run}: unreadable metrics ({type(error).__name__}: {error})")
        return None
    if frame is None and status != "failed":
        notes.append(f"{entry.run}: no metrics.csv and no rows in results.csv")
    return validate_metrics(frame, entry, sweep, notes) if frame is not None else None


def load_run(
    sweep_dir: Path, entry: Any, cfg: RunConfig, metric: str, fallback: _ResultsFallback, notes: list[str]
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One planned run (its config ``cfg``) -> (its status row, its validated rows or None)."""
    run_dir = sweep_dir / entry.run
    status = read_status(run_dir)
    traceback = last_traceback_line(run_dir) if status in ("failed", "diverged") else ""
    frame = run_rows(run_dir, entry, status, cfg.sweep, fallback, notes) if status != "failed" else None
    is_val = (frame["split"] == "val") & (frame["metric"] == metric) if frame is not None else None
    val_steps = frame.loc[is_val, "step"].to_numpy() if frame is not None else np.array([], dtype=int)
    reason = inclusion_note(entry.run, status, val_steps, cfg.trainer.max_steps, traceback)
    if reason:
        notes.append(reason)
    elif status == "done":
        notes.extend(protocol_notes(entry.run, val_steps, frame, cfg.trainer))
    else:
        notes.append(status_note(entry.run, status, traceback))
    row = entry._asdict() | {"status": status, "included": reason is None, "evaluations": len(val_steps)}
    row |= {"last_step": int(val_steps.max()) if len(val_steps) else None, "traceback": traceback}
    return row, frame


def unexpected_folders(sweep_dir: Path, plan: pd.DataFrame) -> list[str]:
    planned = set(plan["run"])
    found = [p.name for p in sorted(sweep_dir.iterdir()) if p.is_dir() and any((p / f).exists() for f in RUN_FILES)]
    return [f"{name}: run folder not planned in sweep.yaml; ignored" for name in found if name not in planned]


def read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        notes.append(f"{path.parent.name}: unreadable data.json ({error})")
        return None


def read_data_info(sweep_dir: Path, runs: list[str], notes: list[str]) -> dict[str, Any]:
    """The first run's ``data.json``; a warning for every run whose data.json differs from it."""
    paths = {run: p for run in runs if (p := sweep_dir / run / "data.json").is_file()}
    infos = {run: info for run, path in paths.items() if (info := read_json(path, notes)) is not None}
    if not infos:
        notes.append("no run has a readable data.json: dataset counts and calibration are unknown")
        return {}
    first_run, first = next(iter(infos.items()))
    notes.extend(f"{run}: data.json differs from {first_run}'s" for run, info in infos.items() if info != first)
    return first


def empty_metrics() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("train_seconds", "value") else object) for c in COLUMNS})


def load_sweep(sweep_dir: Path | str, metric: str = "t2v/R@1", phase: str = "scored") -> SweepLog:
    """Read and validate the runs of one phase of ``runs/<sweep>/``; every problem becomes a warning (see the
    module docstring)."""
    from tvr_convbench.bench.selection import read_selection

    sweep_dir = Path(sweep_dir)
    sweep, notes = read_sweep(sweep_dir), []
    planned = phase_runs(sweep, phase, sweep_dir)
    plan, fallback = planned_runs(planned), _ResultsFallback(SweepPaths(sweep_dir).results)
    configs = {cfg.run: run_config(sweep_dir / cfg.run, cfg, notes) for cfg in planned}
    notes += [note for cfg in configs.values() if (note := protocol_override_note(cfg, sweep))]
    loaded = [
        load_run(sweep_dir, entry, configs[entry.run], metric, fallback, notes)
        for entry in plan.itertuples(index=False)
    ]
    runs = pd.DataFrame([row for row, _ in loaded])
    frames = [frame for row, frame in loaded if row["included"] and frame is not None]
    metrics = pd.concat(frames, ignore_index=True) if frames else empty_metrics()
    notes += unexpected_folders(sweep_dir, planned_runs(sweep.runs(read_selection(sweep, sweep_dir))))
    data = read_data_info(sweep_dir, list(plan["run"]), notes)
    for note in notes:
        warnings.warn(note, SweepLogWarning, stacklevel=2)
    return SweepLog(sweep_dir, sweep, configs, runs, metrics.astype({"seed": int}), data, tuple(notes))


def read_benchmark(path: str, notes: list[str]) -> tuple[dict[str, float], str]:
    """Train-step seconds per method at DiDeMo shapes from a ``make bench`` file, and its machine line; empty when
    the file is absent or unreadable (with a note)."""
    if not path:
        return {}, ""
    try:
        result = json.loads(Path(path).read_text())
        rows = [r for r in result["training"] if r.get("shapes") == "didemo"]
        machine = result.get("machine", {})
    except (OSError, ValueError, KeyError, TypeError) as error:
        notes.append(f"{path}: no benchmark to project DiDeMo costs from ({type(error).__name__})")
        return {}, ""
    line = f"{machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, torch {machine.get('torch', '?')}"
    return {str(r["method"]): float(r["ms_median"]) / 1e3 for r in rows}, line
