"""The sweep runner: methods x seeds on one protocol, resumable and idempotent.

A rerun skips runs whose status is ``done`` (``bench train`` skips a done run too), resumes unfinished ones from
their last checkpoint and retries failed ones. A run that raises is marked ``failed`` (traceback beside it) and
the sweep goes on; the exit code is 1 when any run failed. Runs execute one after another by default, or in
``--jobs N`` processes.

Before anything is written, ``preflight`` opens the sweep's data (a feature store is checked against its manifest
and for non-finite values) and checks the output folder (free space, writable): a problem there is a
``ConfigError`` (exit code 2), not a failed run.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tvr_convbench.bench.config import RunConfig, SweepConfig
from tvr_convbench.bench.runlog import collect_results, read_status
from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.files import atomic_write_yaml, check_writable
from tvr_convbench.core.schema import RunPaths


@dataclass
class Outcome:
    run: str
    status: str  # done | failed | skipped
    line: str


def check_compatible(sweep_dir: Path, runs: list[RunConfig]) -> None:
    """Refuse to mix results of different configs under one sweep name."""
    for cfg in runs:
        path = RunPaths(sweep_dir / cfg.run).config
        if path.exists() and read_status(path.parent) in ("done", "running"):
            old, new = _saved_config(path), cfg.to_dict()
            if old != new:
                changed = sorted(k for k in new if old.get(k) != new[k])
                raise ConfigError(
                    f"{path}: run {cfg.run!r} was made with a different config (changed: {', '.join(changed)}); "
                    f"use a new sweep name, or delete {path.parent} to redo it"
                )


def _saved_config(path: Path) -> dict:
    """A run's saved config as a resolved dict; one that does not read back as a ``RunConfig`` is an empty one."""
    try:
        return RunConfig.from_file(path).to_dict()
    except ConfigError:
        return {}


def preflight(sweep: SweepConfig, sweep_dir: Path) -> None:
    """Raise ``ConfigError`` if the data of ``sweep`` does not open (checked while a run is left to do) or
    ``sweep_dir`` cannot hold its results."""
    from tvr_convbench.bench.trainer import needs_patches

    runs = [cfg for cfg in sweep.runs() if read_status(sweep_dir / cfg.run) != "done"]
    splits = ("train", "val", "test") if any(cfg.trainer.eval_test for cfg in runs) else ("train", "val")
    patches = any(needs_patches(cfg.method) for cfg in runs)
    if runs:
        check_data(sweep.data, splits, f"{sweep.source}: data", patches)
    try:
        check_writable(sweep_dir)
    except OSError as err:
        raise ConfigError(f"--runs-dir: {err}; nothing was run") from None


def check_data(data: dict, splits: tuple[str, ...], where: str, patches: bool = False) -> None:
    """Build the data module of a ``data:`` section and open ``splits`` (what every run does first), with patch
    tokens when a method of the sweep needs them."""
    from tvr_convbench.bench.trainer import build_data

    try:
        module = build_data(data, patches)
        for split in splits:
            module.split(split)
    except (ValueError, OSError) as err:  # DataError / StoreError are ValueErrors naming the file and field
        raise ConfigError(f"{where}: {err}") from None


def summary_line(cfg: RunConfig, summary) -> str:  # noqa: ANN001 - trainer.RunSummary
    share = summary.eval_seconds / summary.wall_seconds if summary.wall_seconds else 0.0
    ms = 1000 * summary.train_seconds / max(summary.steps, 1)
    resumed = f" (resumed at step {summary.resumed_from})" if summary.resumed_from else ""
    return (
        f"{cfg.run}: best val t2v R@1 {summary.best:.1f} at step {summary.best_step} | {summary.steps} steps, "
        f"{summary.train_seconds:.1f}s train ({ms:.0f} ms/step), "
        f"eval {share:.0%} of {summary.wall_seconds:.0f}s{resumed}"
    )


def run_one(cfg: RunConfig, sweep_dir: Path, progress: bool, threads: int = 0) -> Outcome:
    """Train one run in this process (skipped when already done); never raises for a failing run (it is recorded
    as failed)."""
    from tvr_convbench.bench.trainer import train

    if read_status(sweep_dir / cfg.run) == "done":
        return Outcome(cfg.run, "skipped", f"{cfg.run}: done, skipped")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        summary = train(cfg, sweep_dir / cfg.run, sweep_dir, progress=progress)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one failing run must not stop the sweep
        trace = sweep_dir / cfg.run / "traceback.txt"
        see = f"; see {trace}" if trace.exists() else ""
        return Outcome(cfg.run, "failed", f"{cfg.run}: FAILED ({type(err).__name__}: {err}){see}")
    return Outcome(cfg.run, "done", summary_line(cfg, summary))


def run_sweep(sweep: SweepConfig, runs_root: Path, jobs: int = 1, progress: bool = True) -> list[Outcome]:
    """Run every unfinished run of ``sweep`` under ``runs_root/<name>``; returns one outcome per run."""
    sweep_dir = runs_root / sweep.name
    runs = sweep.runs()
    check_compatible(sweep_dir, runs)
    preflight(sweep, sweep_dir)
    atomic_write_yaml(sweep_dir / "sweep.yaml", sweep.to_dict())
    todo = [cfg for cfg in runs if read_status(sweep_dir / cfg.run) != "done"]
    outcomes = [Outcome(c.run, "skipped", f"{c.run}: done, skipped") for c in runs if c not in todo]
    for outcome in outcomes:
        print(outcome.line, flush=True)
    if jobs <= 1:
        for cfg in todo:
            outcomes.append(_report(run_one(cfg, sweep_dir, progress)))
    else:
        outcomes += _run_parallel(todo, sweep_dir, jobs)
    collect_results(sweep_dir)
    return outcomes


def _run_parallel(todo: list[RunConfig], sweep_dir: Path, jobs: int) -> list[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    outcomes = []
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(run_one, cfg, sweep_dir, False, threads) for cfg in todo]
        for future in cf.as_completed(futures):
            outcomes.append(_report(future.result()))
    return outcomes


def _report(outcome: Outcome) -> Outcome:
    print(outcome.line, file=sys.stderr if outcome.status == "failed" else sys.stdout, flush=True)
    return outcome
