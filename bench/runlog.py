"""The local run log: the source of truth of every result (wandb only mirrors it).

Layout of one sweep::

    runs/<sweep>/sweep.yaml          the resolved sweep config
    runs/<sweep>/results.csv         every run's metrics rows (rebuilt by the sweep runner)
    runs/<sweep>/wandb/              offline wandb runs (``wandb sync`` / ``wandb leet``)
    runs/<sweep>/<run>/config.yaml   the run's resolved config
    runs/<sweep>/<run>/status        running | done | failed
    runs/<sweep>/<run>/metrics.csv   sweep, run, method, seed, step, train_seconds, split, metric, value
    runs/<sweep>/<run>/data.json     the dataset's description (counts, calibration, protocol)
    runs/<sweep>/<run>/traceback.txt when failed
    runs/<sweep>/<run>/last.ckpt     the resume point, written at every evaluation

Every file is written to a temporary name and renamed into place, so a reader (or a resumed run) never sees a
half-written file; a temporary file left by a killed process is removed when its run starts again. ``metrics.csv``
is rewritten whole at every evaluation, just before the checkpoint; on resume, rows after the checkpoint's step are
discarded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from datasets.files import atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported

COLUMNS = ("sweep", "run", "method", "seed", "step", "train_seconds", "split", "metric", "value")
STATUSES = ("running", "done", "failed")
MIN_FREE_BYTES = 64 * 2**20
"""free space a run needs before it starts (checkpoints, logs)"""


class OutputError(OSError):
    """An output folder that cannot be written (one-line message naming the folder)."""


def check_writable(folder: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Raise ``OutputError`` unless ``folder`` has ``min_free`` bytes free and can be created and written.

    The free space is checked first, on the nearest existing ancestor, so a full disk leaves nothing behind.
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise OutputError(f"{folder}: only {free / 2**20:.0f} MiB free, need {min_free / 2**20:.0f} MiB")
    probe = folder / f".write-probe.tmp{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{folder}: not writable ({err.strerror or err})") from None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp*``) a killed writer left in ``folder``; returns them."""
    stale = sorted(folder.glob(".*.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_status(run_dir: Path) -> str | None:
    path = run_dir / "status"
    return path.read_text().strip() if path.exists() else None


def write_status(run_dir: Path, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    atomic_write_text(run_dir / "status", status + "\n")


class MetricsLog:
    """In-memory rows of one run, flushed whole to ``metrics.csv``."""

    def __init__(self, path: Path, keys: dict[str, Any]) -> None:
        self.path = path
        self.keys = keys  # sweep, run, method, seed
        self.rows: list[tuple] = []

    def add(self, step: int, train_seconds: float, split: str, metrics: dict[str, float]) -> None:
        prefix = (self.keys["sweep"], self.keys["run"], self.keys["method"], self.keys["seed"], step, train_seconds)
        self.rows.extend((*prefix, split, name, float(value)) for name, value in metrics.items())

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
                    self.rows.append(
                        (row[0], row[1], row[2], int(row[3]), int(row[4]), float(row[5]), row[6], row[7], float(row[8]))
                    )


def _format(row: tuple) -> tuple:
    *head, train_seconds, split, metric, value = row
    return (*head, f"{train_seconds:.6f}", split, metric, repr(float(value)))


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
    atomic_write_text(sweep_dir / "results.csv", out.getvalue())
    return count
