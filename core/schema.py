"""The run-log schema: column names, run statuses, split and metric names, and every file name of a sweep.

The run log is the source of truth of every result; the trainer writes it, the analysis reads it, the wandb mirror
and the exports name its files. All of them take the names from here, so a renamed file or column changes in one
place. Layout of one sweep (``SweepPaths``; one ``RunPaths`` per run folder)::

    runs/<sweep>/sweep.yaml          the resolved sweep config
    runs/<sweep>/results.csv         every run's metrics rows (rebuilt by the sweep runner)
    runs/<sweep>/targets.json        the targets and their provenance, written before the first scored run
    runs/<sweep>/selection.json      each method's tuned setting and why (with a tuning section)
    runs/<sweep>/wandb/              offline wandb runs (``wandb sync`` / ``wandb leet``)
    runs/<sweep>/<run>/config.yaml   the run's resolved config
    runs/<sweep>/<run>/status        one of ``STATUSES``
    runs/<sweep>/<run>/metrics.csv   ``COLUMNS``, long format
    runs/<sweep>/<run>/data.json     the dataset's description (counts, calibration, protocol)
    runs/<sweep>/<run>/traceback.txt when failed, or diverged (the step and the non-finite values)
    runs/<sweep>/<run>/fingerprint   sha256 of the resolved config (a record: the compatibility check recomputes it
                                     from config.yaml, so a folder without one reads as changed)
    runs/<sweep>/.lock, <run>/.lock  OS file locks of the sweep and of the training process (their PIDs)
    runs/<sweep>/<run>/last.ckpt     the resume point, written at every evaluation
    runs/<sweep>/<run>/wandb_id      the run's wandb id (a resume continues the same wandb run)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

COLUMNS = ("sweep", "run", "method", "seed", "step", "train_seconds", "split", "metric", "value")
"""columns of ``metrics.csv`` and ``results.csv``, in file order"""
STATUSES = ("running", "done", "failed", "diverged")
"""what a run's ``status`` file may say (``diverged``: stopped at a non-finite loss or recall)"""
FINISHED_STATUSES = ("done", "diverged")
"""statuses a rerun skips (a diverged run would diverge again: it is a result, a miss)"""
DATA_SPLITS = ("train", "val", "test")
"""the splits of every dataset"""
LOG_SPLITS = (*DATA_SPLITS, "time")
"""values of the ``split`` column: training rows, evaluation rows, and timing rows (``eval_seconds``, ...)"""
RECALL_KS = (1, 5, 10)
METRIC_NAMES = tuple(f"{d}/{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR"))
"""the ten retrieval metrics of every evaluation, in log order"""


class Row(NamedTuple):
    """One row of a run's metrics log (the fields are ``COLUMNS``)."""

    sweep: str
    run: str
    method: str
    seed: int
    step: int
    train_seconds: float
    split: str
    metric: str
    value: float


@dataclass(frozen=True)
class RunPaths:
    """Every file of one run folder ``runs/<sweep>/<run>/``."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def traceback(self) -> Path:
        return self.root / "traceback.txt"

    @property
    def checkpoint(self) -> Path:
        return self.root / "last.ckpt"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint"

    @property
    def lock(self) -> Path:
        """held (an OS file lock) by the one process training this run; holds its PID"""
        return self.root / ".lock"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id"


@dataclass(frozen=True)
class SweepPaths:
    """Every file of one sweep folder ``runs/<sweep>/``."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def sweep(self) -> Path:
        return self.root / "sweep.yaml"

    @property
    def results(self) -> Path:
        return self.root / "results.csv"

    @property
    def targets(self) -> Path:
        """the targets, fixed before the first scored run, with their provenance"""
        return self.root / "targets.json"

    @property
    def selection(self) -> Path:
        """each method's tuned setting (the tuning space, trials, rule and why), fixed before the scored runs"""
        return self.root / "selection.json"

    @property
    def wandb(self) -> Path:
        """the ``dir`` given to ``wandb.init`` (wandb writes ``<it>/wandb/offline-run-*``)"""
        return self.root

    @property
    def lock(self) -> Path:
        """held (an OS file lock) by the one sweep running on this folder; holds its PID"""
        return self.root / ".lock"

    @property
    def exported_sweep(self) -> Path:
        return self.root / "exported-sweep.yaml"

    @property
    def wandb_sweep(self) -> Path:
        return self.root / "wandb-sweep.yaml"

    @property
    def slurm_script(self) -> Path:
        return self.root / "slurm.sbatch"

    @property
    def slurm_logs(self) -> Path:
        return self.root / "slurm"

    def run(self, name: str) -> RunPaths:
        return RunPaths(self.root / name)
