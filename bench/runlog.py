"""The local run log: the source of truth of every result (wandb only mirrors it).

The layout, column names and statuses are ``tvr_convbench.core.schema`` (``SweepPaths``, ``RunPaths``,
``COLUMNS``, ``STATUSES``). Every file is written atomically (``tvr_convbench.core.files``), so a reader (or a
resumed run) never sees a half-written file; a temporary file left by a killed process is removed when its run
starts again. ``metrics.csv`` is rewritten whole at every evaluation, just before the checkpoint; on resume, rows
after the checkpoint's step are discarded.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tvr_convbench.core.files import atomic_write_text
from tvr_convbench.core.schema import COLUMNS, STATUSES, Row, RunPaths, SweepPaths


def read_status(run_dir: Path) -> str | None:
    path = RunPaths(run_dir).status
    return path.read_text().strip() if path.exists() else None


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
        """Load an existing file, keeping only rows up to ``step`` (the checkpoint being resumed)."""
        self.rows = []
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if tuple(header or ()) != COLUMNS:
                raise ValueError(f"{self.path}: unexpected header {header}; expected {','.join(COLUMNS)}")
            for row in reader:
                if int(row[4]) <= step:
                    self.rows.append(_parse(row))


def _parse(cells: list[str]) -> Row:
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
        with open(metrics, newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                writer.writerow(row)
                count += 1
    atomic_write_text(SweepPaths(sweep_dir).results, out.getvalue())
    return count
