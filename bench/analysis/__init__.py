"""Convergence analysis of a sweep's run log: time and steps to target, AUC, IQM/median with bootstrap intervals,
probability of improvement, performance profiles, model selection, and the markdown report with its figures.

Entry points: ``write_report(sweep_dir, out_dir)`` and ``run_target_table(sweep_dir)``. ``write_report`` is
imported on first use, so ``run_target_table`` (e.g. for wandb summaries) does not pay for importing matplotlib.
"""

from typing import Any

from tvr_convbench.bench.analysis.load import SweepLog, SweepLogWarning, load_sweep
from tvr_convbench.bench.analysis.pipeline import (
    Analysis,
    AnalysisWarning,
    analyse,
    read_report_config,
    run_target_table,
)
from tvr_convbench.bench.config import ReportConfig

__all__ = [
    "Analysis",
    "AnalysisWarning",
    "ReportConfig",
    "SweepLog",
    "SweepLogWarning",
    "analyse",
    "load_sweep",
    "read_report_config",
    "run_target_table",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from tvr_convbench.bench.analysis.report import write_report

        return write_report
    raise AttributeError(f"module 'tvr_convbench.bench.analysis' has no attribute {name!r}")
