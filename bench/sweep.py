"""The sweep runner: methods x seeds on one protocol, resumable and idempotent.

Phases: the reference runs (every method on the reference seeds, never scored) first; then ``targets.json`` is
written (``bench.targets``); then the scored runs. A rerun skips runs whose status is ``done`` or ``diverged``
(``tvr-convbench train`` skips them too), resumes unfinished ones from their last checkpoint and retries failed
ones. A run that raises is marked ``failed`` (traceback beside it) and the sweep goes on; one whose loss or recall
becomes non-finite is stopped and marked ``diverged``; the exit code is 1 when any run failed. Runs execute one
after another by default, or in ``--jobs N`` processes.

Safety before anything runs (every check first, writing nothing: a ``ConfigError`` exits 2 and leaves the folders
as they were):
- one sweep at a time per folder: an OS file lock on ``runs/<sweep>/.lock`` (taken after the checks, released on any
  exit, by the OS when the holder dies, so a stale lock file never blocks); a second sweep exits 2 naming the
  holder's PID; each training process also locks its run folder (``<run>/.lock``), so ``tvr-convbench train`` of a
  run a sweep is training (or the reverse) is refused too, while trains of different runs (a SLURM array) coexist;
- every run folder carries the fingerprint of its resolved config; a folder of a planned run whose ``config.yaml``
  differs (or is missing or unreadable), in any status, is refused with the one-line mismatch error, or with
  ``restart_changed`` wiped (under its run lock) and rerun from scratch: state written under another config is never
  resumed;
- ``preflight`` opens the sweep's data (a feature store is checked against its manifest and for non-finite
  values), builds every method entry once on the data's shapes (naming the argument its constructor rejects),
  checks batch sizes against the train split, the accelerator, and that the output folders can be written.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from tvr_convbench.bench.config import RunConfig, SweepConfig
from tvr_convbench.bench.progress import SweepProgress
from tvr_convbench.bench.runlog import collect_results, eval_share, fingerprint, read_status
from tvr_convbench.bench.selection import read_selection
from tvr_convbench.bench.wandb_mirror import sweep_mode
from tvr_convbench.core.errors import ConfigError, one_line
from tvr_convbench.core.files import atomic_write_yaml, check_unlocked, check_writable, folder_lock
from tvr_convbench.core.schema import FINISHED_STATUSES, RunPaths, SweepPaths


@dataclass
class Outcome:
    run: str
    status: str  # done | failed | diverged | skipped (finished before: ``finished`` says how)
    line: str
    finished: str | None = None
    """a skipped run's status (``done`` or ``diverged``)"""

    @property
    def result(self) -> str:
        """done | diverged | failed, whether it ran now or before"""
        return self.finished if self.status == "skipped" and self.finished else self.status


# --- configs under one sweep name ----------------------------------------------------------------------------
def saved_fingerprint(run_dir: Path) -> str:
    """The fingerprint of the config a run folder was made with, from its ``config.yaml`` read back (so defaults
    added since count as unchanged); ``""`` (a changed config) when it is missing or does not read back: state
    without the config it was made with is never resumed or counted."""
    try:
        return fingerprint(RunConfig.from_file(RunPaths(run_dir).config))
    except (ConfigError, OSError, UnicodeDecodeError):
        return ""


def changed_runs(sweep_dir: Path, runs: list[RunConfig]) -> list[tuple[RunConfig, str]]:
    """(run, why) of every planned run whose folder holds state made under another config, in any status."""
    out = []
    for cfg in runs:
        run_dir = sweep_dir / cfg.run
        if not run_dir.is_dir() or not any(not p.name.startswith(".") for p in run_dir.iterdir()):
            continue  # nothing but a lock or a write probe: no state to mix up
        if saved_fingerprint(run_dir) != fingerprint(cfg):
            out.append((cfg, _difference(run_dir, cfg)))
    return out


def _difference(run_dir: Path, cfg: RunConfig) -> str:
    try:
        old = RunConfig.from_file(RunPaths(run_dir).config).to_dict()
    except (ConfigError, OSError, UnicodeDecodeError):
        return "its config.yaml is missing or unreadable"
    new = cfg.to_dict()
    return "changed: " + ", ".join(sorted(k for k in new if old.get(k) != new[k]))


def check_compatible(sweep_dir: Path, runs: list[RunConfig], restart_changed: bool = False) -> list[str]:
    """Refuse to mix results of different configs under one sweep name; with ``restart_changed`` wipe the changed
    run folders instead (each under its run lock, so never one a process is training in; returns their names)."""
    changed = changed_runs(sweep_dir, runs)
    if changed and not restart_changed:
        cfg, why = changed[0]
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ConfigError(
            f"{sweep_dir / cfg.run}: run {cfg.run!r} was made with a different config ({why}){more}; use a new "
            f"sweep name, --restart-changed to rerun it from scratch, or delete {sweep_dir / cfg.run}"
        )
    for cfg, _ in changed:
        wipe_run(sweep_dir / cfg.run)
    return [cfg.run for cfg, _ in changed]


def wipe_run(run_dir: Path) -> None:
    """Delete everything in a run folder but its lock file, holding that lock (``ConfigError`` if a process is
    training in it)."""
    lock = RunPaths(run_dir).lock
    with folder_lock(lock, "training process"):
        for path in run_dir.iterdir():
            if path == lock:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


# --- checks before the first run -----------------------------------------------------------------------------
def preflight(
    sweep: SweepConfig,
    sweep_dir: Path,
    reports_dir: Path | None = None,
    rerun: Collection[str] = (),
    planned: list[RunConfig] | None = None,
) -> None:
    """Raise ``ConfigError`` for anything knowable before training that would fail a run (see the module doc);
    writes nothing. ``planned``: the runs to check (default: the sweep's); ``rerun``: finished runs among them that
    will run again (wiped by ``--restart-changed``)."""
    from tvr_convbench.bench.trainer import needs_patches

    runs = [
        cfg
        for cfg in (sweep.runs(read_selection(sweep, sweep_dir)) if planned is None else planned)
        if cfg.run in rerun or read_status(sweep_dir / cfg.run) not in FINISHED_STATUSES
    ]
    if runs:
        splits = ("train", "val", "test") if any(cfg.trainer.eval_test for cfg in runs) else ("train", "val")
        patches = any(needs_patches(cfg.method) for cfg in runs)
        module = check_data(sweep.data, splits, f"{sweep.source}: data", patches)
        check_runs(runs, module, sweep.source)
    for folder, flag in ((sweep_dir, "--runs-dir"), (reports_dir, "--reports-dir")):
        if folder is not None:
            _writable(folder, flag)


def _writable(folder: Path, flag: str) -> None:
    try:
        check_writable(folder, leave_nothing=True)
    except OSError as err:
        raise ConfigError(f"{flag}: {err}; nothing was run") from None


def check_data(data: dict, splits: tuple[str, ...], where: str, patches: bool = False):  # noqa: ANN201
    """Build the data module of a ``data:`` section and open ``splits`` (what every run does first), with patch
    tokens when a method of the sweep needs them; returns the module."""
    from tvr_convbench.bench.trainer import build_data

    try:
        module = build_data(data, patches)
        for split in splits:
            module.split(split)
    except (ValueError, OSError, MemoryError) as err:  # DataError / StoreError are ValueErrors naming the file
        raise ConfigError(f"{where}: {err}") from None
    return module


def check_runs(runs: list[RunConfig], data, where: str) -> None:  # noqa: ANN001 - a RetrievalDataModule
    """Every distinct method entry builds on the data's shapes; every batch fits the train split; the
    accelerator exists."""
    import torch

    train_items = len(data.split("train"))
    for cfg in {c.label: c for c in runs}.values():
        where_run = f"{where}: methods ({cfg.label})"
        if cfg.trainer.batch_size > train_items:
            raise ConfigError(
                f"{where_run}: trainer.batch_size {cfg.trainer.batch_size} exceeds the train split "
                f"({train_items} items)"
            )
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            raise ConfigError(f"{where_run}: trainer.accelerator is 'gpu' but no GPU is visible")
        problem = _build_problem(cfg, data.dims.as_kwargs())
        if problem is not None:
            raise ConfigError(f"{where_run}.args{problem}")


def _build_problem(cfg: RunConfig, dims: dict) -> str | None:
    """Why the method of ``cfg`` does not build on ``dims`` (``None`` when it does), naming the argument to blame:
    the one whose removal makes it build (a method's own check may raise anything, e.g. a ZeroDivisionError)."""
    from tvr_convbench.methods import build_method

    def error(args: dict) -> Exception | None:
        try:
            build_method(cfg.method, **dims, **args)
        except Exception as err:  # noqa: BLE001 - any failure to build is a bad argument, reported as one line
            return err
        return None

    err = error(cfg.method_args)
    if err is None:
        return None
    why = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError | TypeError) else str(err)
    args = cfg.method_args
    culprit = next((k for k in args if error({a: v for a, v in args.items() if a != k}) is None), None)
    if culprit is None:
        return f": {cfg.method} does not build ({one_line(why)})"
    return f".{culprit}: {args[culprit]!r} is rejected by {cfg.method} ({one_line(why)})"


# --- running -------------------------------------------------------------------------------------------------
def summary_line(cfg: RunConfig, summary) -> str:  # noqa: ANN001 - trainer.RunSummary
    share = eval_share(summary.eval_seconds, summary.train_seconds)
    ms = 1000 * summary.train_seconds / max(summary.steps, 1)
    resumed = f" (resumed at step {summary.resumed_from})" if summary.resumed_from is not None else ""
    diverged = f" | DIVERGED at step {summary.diverged_at}" if summary.diverged_at is not None else ""
    return (
        f"{cfg.run}: best val t2v R@1 {summary.best:.1f} at step {summary.best_step} | {summary.steps} steps, "
        f"{summary.train_seconds:.1f}s train ({ms:.0f} ms/step), eval {share:.0%} of eval + train"
        f"{resumed}{diverged}"
    )


def run_one(cfg: RunConfig, sweep_dir: Path, progress: bool, threads: int = 0) -> Outcome:
    """Train one run in this process (skipped when already finished); never raises for a failing run (it is
    recorded as failed)."""
    from tvr_convbench.bench.trainer import train

    status = read_status(sweep_dir / cfg.run)
    if status in FINISHED_STATUSES:
        return Outcome(cfg.run, "skipped", f"{cfg.run}: {status}, skipped", status)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        summary = train(cfg, sweep_dir / cfg.run, sweep_dir, progress=progress)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one failing run must not stop the sweep
        trace = RunPaths(sweep_dir / cfg.run).traceback
        see = f"; see {trace}" if trace.exists() else ""
        return Outcome(cfg.run, "failed", f"{cfg.run}: FAILED ({type(err).__name__}: {err}){see}")
    return Outcome(cfg.run, "diverged" if summary.diverged_at is not None else "done", summary_line(cfg, summary))


def run_sweep(
    sweep: SweepConfig,
    runs_root: Path,
    jobs: int = 1,
    progress: bool = True,
    reports_dir: Path | None = None,
    restart_changed: bool = False,
) -> list[Outcome]:
    """Run every unfinished run of ``sweep`` under ``runs_root/<name>``: reference (or tuning) runs, targets,
    the selection of each method's tuned setting, scored runs.

    Every check comes first and writes nothing (a ``ConfigError`` leaves the folders as they were); then the sweep
    takes its folder's lock for the rest."""
    sweep_dir = runs_root / sweep.name
    lock = SweepPaths(sweep_dir).lock
    check_unlocked(lock, "sweep")
    check_sweep(sweep, sweep_dir, reports_dir, restart_changed)
    with folder_lock(lock, "sweep"):
        prepare_sweep(sweep, sweep_dir, reports_dir, restart_changed)
        sweep_mode(sweep.wandb.mode, sweep_dir)  # one network probe per sweep; --jobs workers inherit it
        total = len(sweep.reference_runs()) + len(sweep.methods) * len(sweep.seeds)
        with SweepProgress(sweep.name, enabled=progress).start(total) as bar:
            outcomes = run_phase(sweep.reference_runs(), sweep_dir, jobs, progress, bar)
            targets = fix_sweep_targets(sweep, sweep_dir, bar)
            selection = fix_sweep_selection(sweep, sweep_dir, targets, bar)
            outcomes += run_phase(sweep.scored_runs(selection), sweep_dir, jobs, progress, bar)
        collect_results(sweep_dir)
    return outcomes


def check_sweep(sweep: SweepConfig, sweep_dir: Path, reports_dir: Path | None, restart_changed: bool) -> None:
    """Every check before the first run, writing nothing: configs of existing run folders, the targets file, the
    preflight (``ConfigError`` for the first problem)."""
    from tvr_convbench.bench.selection import check_selection_file
    from tvr_convbench.bench.targets import check_targets_file

    check_targets_file(sweep, sweep_dir)
    check_selection_file(sweep, sweep_dir)
    runs = sweep.runs(read_selection(sweep, sweep_dir))
    changed = [cfg.run for cfg, _ in changed_runs(sweep_dir, runs)]
    if changed and not restart_changed:
        check_compatible(sweep_dir, runs)  # raises the one-line mismatch error
    preflight(sweep, sweep_dir, reports_dir, rerun=changed)


def prepare_sweep(sweep: SweepConfig, sweep_dir: Path, reports_dir: Path | None, restart_changed: bool) -> None:
    """With the sweep's lock held: wipe the changed runs (``restart_changed``; refused without it), check the
    targets file again, then write ``sweep.yaml``."""
    from tvr_convbench.bench.targets import check_targets_file

    wiped = check_compatible(sweep_dir, sweep.runs(read_selection(sweep, sweep_dir)), restart_changed)
    for run in wiped:
        print(f"{run}: made with another config; wiped, rerun from scratch (--restart-changed)", flush=True)
    check_targets_file(sweep, sweep_dir)
    atomic_write_yaml(SweepPaths(sweep_dir).sweep, sweep.to_dict())


def fix_sweep_targets(sweep: SweepConfig, sweep_dir: Path, bar: SweepProgress | None = None):  # noqa: ANN201
    """Write ``targets.json`` before the first scored run (``bench.targets``), with the zero-shot floor; returns
    the targets (the file's when it exists; ``None`` for post hoc targets)."""
    from tvr_convbench.bench.calibration import zero_shot_metrics
    from tvr_convbench.bench.targets import TargetSet, fix_targets
    from tvr_convbench.bench.trainer import build_data

    path = SweepPaths(sweep_dir).targets
    if sweep.targets.source == "posthoc":
        return None
    if path.exists():
        return TargetSet.read(path)
    floor = zero_shot_metrics(build_data(sweep.data), sweep.trainer.eval_batch_size, sweep.trainer.eval_block)
    targets = fix_targets(sweep, sweep_dir, floor[sweep.report.metric])
    values = ", ".join(f"{label} {value:.2f}" for label, value in zip(targets.labels, targets.values))
    _say(bar, f"targets ({targets.describe()}): {values}")
    return targets


def fix_sweep_selection(sweep: SweepConfig, sweep_dir: Path, targets, bar: SweepProgress | None = None):  # noqa: ANN001, ANN201
    """Write ``selection.json`` (each method's tuned setting) after the targets, before the first scored run."""
    from tvr_convbench.bench.selection import fix_selection, read_selection

    existing = read_selection(sweep, sweep_dir)  # None without a tuning section
    if existing is not None or not sweep.tuning.enabled:
        return existing
    selection = fix_selection(sweep, sweep_dir, targets)
    for label, choice in selection.choices.items():
        settings = ", ".join(f"{k}={v:g}" for k, v in choice["settings"].items())
        edge = f"; AT THE EDGE of the grid: {', '.join(choice['edge'])}" if choice["edge"] else ""
        _say(bar, f"selected {label}: {settings} ({choice['why']}){edge}")
    return selection


def _say(bar: SweepProgress | None, line: str) -> None:
    if bar is not None:
        bar.write(line)
    else:
        print(line, flush=True)


def run_phase(runs: list[RunConfig], sweep_dir: Path, jobs: int, progress: bool, bar: SweepProgress) -> list[Outcome]:
    """Run the unfinished runs of one phase (one after another, or in ``jobs`` processes); ``bar`` prints each
    outcome's line as it finishes."""
    todo = [cfg for cfg in runs if read_status(sweep_dir / cfg.run) not in FINISHED_STATUSES]
    outcomes = [bar.finished(_skipped(c, read_status(sweep_dir / c.run))) for c in runs if c not in todo]
    if jobs <= 1:
        outcomes += [bar.finished(run_one(cfg, sweep_dir, progress)) for cfg in todo]
    else:
        outcomes += _run_parallel(todo, sweep_dir, jobs, bar)
    return outcomes


def _skipped(cfg: RunConfig, status: str | None) -> Outcome:
    return Outcome(cfg.run, "skipped", f"{cfg.run}: {status}, skipped", status)


def auto_jobs(num_threads: int, cores: int | None = None) -> int:
    """Processes that fill the cores at ``num_threads`` torch threads each (1 when the threads are torch's default)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // num_threads) if num_threads > 0 else 1


def _run_parallel(todo: list[RunConfig], sweep_dir: Path, jobs: int, bar: SweepProgress) -> list[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    outcomes = []
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        with _interrupt_on_sigterm():
            futures = [pool.submit(run_one, cfg, sweep_dir, False, threads) for cfg in todo]
            for future in cf.as_completed(futures):
                outcomes.append(bar.finished(future.result()))
    except BaseException:
        _stop_workers(pool)  # an interrupted sweep leaves no orphan training into its run folders
        raise
    pool.shutdown()
    return outcomes


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a scheduler's time limit) like Ctrl-C for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers: their runs stay ``running`` and resume from their
    last checkpoint on the next sweep (the OS releases their folder locks)."""
    processes = list((pool._processes or {}).values())  # noqa: SLF001 - the executor has no public handle
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
