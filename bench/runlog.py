"""The local run log: the source of truth of every result (wandb only mirrors it).

The layout, column names and statuses are ``tvr_convbench.core.schema`` (``SweepPaths``, ``RunPaths``,
``COLUMNS``, ``STATUSES``). Every file is written atomically (``tvr_convbench.core.files``), so a reader (or a
resumed run) never sees a half-written file; a temporary file left by a killed process is removed when its run
starts again. ``metrics.csv`` is rewritten whole at every evaluation, just before the checkpoint; on resume, rows
after the checkpoint's step are discarded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

from tvr_convbench.bench.config import RunConfig
from tvr_convbench.core.errors import one_line
from tvr_convbench.core.files import atomic_write_text
from tvr_convbench.core.schema import COLUMNS, METRIC_NAMES, STATUSES, Row, RunPaths, SweepPaths


def fingerprint(cfg: RunConfig) -> str:
    """The sha256 of a run's resolved config (canonical JSON): equal fingerprints, equal runs."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_fingerprint(cfg: RunConfig, run_dir: Path) -> None:
    atomic_write_text(RunPaths(run_dir).fingerprint, fingerprint(cfg) + "\n")


def eval_share(eval_seconds: float, train_seconds: float) -> float:
    """Evaluation's share of a run's time: evaluation / (evaluation + training) seconds (the one definition)."""
    total = eval_seconds + train_seconds
    return eval_seconds / total if total > 0 else 0.0


def read_status(run_dir: Path) -> str | None:
    """The status word of a run folder (``None`` without a status file). An unknown or unreadable word is
    returned as it reads (undecodable bytes replaced): it is no finished status, so the run is (re)run."""
    path = RunPaths(run_dir).status
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() if path.exists() else None
    except OSError:
        return "unreadable"


def write_status(run_dir: Path, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    atomic_write_text(RunPaths(run_dir).status, status + "\n")


class MetricsLog:
    """In-memory rows of one run, flushed whole to ``metrics.csv``."""

    def __init__(self, path: Path, keys: dict[str, Any]) -> None:
        self.path = path
        self.keys = keys  # sweep, run, method, seed
        self.rows: list[Row] = []

    def add(self, step: int, train_seconds: float, split: str, metrics: dict[str, float]) -> None:
        keys = self.keys
        self.rows.extend(
            Row(keys["sweep"], keys["run"], keys["method"], keys["seed"], step, train_seconds, split, name, float(v))
            for name, v in metrics.items()
        )

    def flush(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(_format(row) for row in self.rows)
        atomic_write_text(self.path, buffer.getvalue())

    def load_until(self, step: int) -> None:
        """Load the file a checkpoint of ``step`` was saved with, keeping rows up to ``step``; ``DamagedLog``
        (one line naming the file) when it is missing, not UTF-8, malformed, cut short, or lacks that step's whole
        evaluation."""
        try:
            text = self.path.read_bytes().decode("utf-8")
            if text and not text.endswith("\n"):
                raise ValueError("the last line is cut short (no final newline)")
            reader = csv.reader(io.StringIO(text, newline=""))
            header = next(reader, None)
            if tuple(header or ()) != COLUMNS:
                raise ValueError(f"unexpected header {header}")
            rows = [_parse(row) for row in reader]
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
            raise DamagedLog(one_line(f"{self.path}: {type(err).__name__}: {err}")) from None
        logged = {r.metric for r in rows if r.step == step and r.split == "val"}
        if not set(METRIC_NAMES) <= logged:
            raise DamagedLog(f"{self.path}: no whole evaluation at step {step}, the checkpoint's step (truncated?)")
        self.rows = [r for r in rows if r.step <= step]


class DamagedLog(ValueError):
    """A ``metrics.csv`` that cannot be resumed from: one line naming the file."""


def _parse(cells: list[str]) -> Row:
    if len(cells) != len(COLUMNS):
        raise ValueError(f"a row has {len(cells)} cells, expected {len(COLUMNS)}")
    sweep, run, method, seed, step, seconds, split, metric, value = cells
    return Row(sweep, run, method, int(seed), int(step), float(seconds), split, metric, float(value))


def _format(row: Row) -> tuple:
    return (*row[:5], f"{row.train_seconds:.6f}", row.split, row.metric, repr(float(row.value)))


def collect_results(sweep_dir: Path) -> int:
    """Concatenate every run's ``metrics.csv`` into ``results.csv`` (atomically); returns the row count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for metrics in sorted(sweep_dir.glob("*/metrics.csv")):
        try:
            rows = _read_rows(metrics)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
            why = f"{metrics}: not collected into results.csv ({type(err).__name__}: {err})"
            warnings.warn(one_line(why), stacklevel=2)
            continue
        writer.writerows(rows)
        count += len(rows)
    atomic_write_text(SweepPaths(sweep_dir).results, out.getvalue())
    return count


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != COLUMNS:
            raise ValueError(f"unexpected header {header}")
        rows = list(reader)
    bad = next((i for i, row in enumerate(rows, 2) if len(row) != len(COLUMNS)), None)
    if bad is not None:
        raise ValueError(f"line {bad} has the wrong number of cells")
    return rows
