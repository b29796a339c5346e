"""Sweep throughput: runs per hour of the sweep's own runs, the way they used to run and the way they run now.

Many small runs on a few cores are latency-bound (a proxy train step reaches a small fraction of the matmul peak),
so one process with every core's threads leaves most of the machine idle. The measurement runs the same runs of
the sweep (every method, one scored seed, at the sweep's protocol; targets post hoc, wandb off) twice into
scratch folders, from the same data cache (generated first, untimed):

- ``before``: one run at a time, torch's default thread count (``--jobs 1``, ``trainer.num_threads: 0``);
- ``after``: ``--jobs auto``: ``cores / num_threads`` processes of one thread each (``trainer.num_threads: 1``).

Both wall times include everything a sweep does per run (spawning workers, the preflight, writing the logs). The
numbers of the ``after`` runs are those of the same runs made one at a time with one thread
(``tests/test_reliability.py::test_parallel_jobs_lock_their_own_run_folders``); ``max_val_diff`` says how far
``before``'s multi-threaded float reductions move the val metrics.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tvr_convbench.bench.perf.plan import Plan

PASSES = {"before": ("1", 0), "after": ("auto", 1)}
"""pass -> (--jobs, trainer.num_threads)"""


def measure_throughput(plan: Plan, sweep: str) -> dict[str, Any]:
    """Runs per hour of ``sweep``'s runs (one seed per method) in both ways, and the speed-up."""
    from tvr_convbench.bench.sweep import auto_jobs

    scratch = Path(tempfile.mkdtemp(prefix="tvr-throughput-"))
    try:
        cache = scratch / "cache"
        _warm(plan, sweep, cache)
        passes = {name: _run_pass(plan, sweep, scratch / name, cache, jobs, threads) for name, (jobs, threads) in
                  PASSES.items()}  # fmt: skip
        diff = _max_val_diff(scratch / "before", scratch / "after")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    before, after = passes["before"], passes["after"]
    return {
        "sweep": sweep,
        "runs": before["runs"],
        "cores": os.cpu_count(),
        "jobs_after": auto_jobs(1),
        "passes": passes,
        "speedup": after["runs_per_hour"] / before["runs_per_hour"],
        "max_val_diff": diff,
    }


def throughput_sweep(plan: Plan, sweep: str, cache: Path, threads: int):  # noqa: ANN201 - a SweepConfig
    """The measured runs: ``sweep``'s methods at its protocol, one scored seed, no tuning, post hoc targets."""
    from tvr_convbench.bench.config import load_sweep

    overrides = ["seeds=[0]", "tuning={}", "targets={source: posthoc}", "wandb.mode=disabled",
                 f"trainer.num_threads={threads}", f"data.cache_dir={cache}",
                 *plan_overrides(plan)]  # fmt: skip
    return load_sweep(sweep, overrides)


def plan_overrides(plan: Plan) -> list[str]:
    """``--quick``: tiny data and a few steps (the full run keeps the sweep's own sizes)."""
    if not plan.quick:
        return []
    data = [f"data.{key}={value}" for key, value in plan.proxy_data]
    return [*data, "methods=[meanp, xpool]", f"trainer.max_steps={plan.harness_steps}", "trainer.val_every=2",
            "trainer.batch_size=8", "data.width=16", "data.max_words=12"]  # fmt: skip


def _run_pass(plan: Plan, sweep: str, root: Path, cache: Path, jobs: str, threads: int) -> dict:
    from tvr_convbench.bench.sweep import auto_jobs, run_sweep

    config = throughput_sweep(plan, sweep, cache, threads)
    processes = auto_jobs(threads) if jobs == "auto" else int(jobs)
    start = time.perf_counter()
    outcomes = run_sweep(config, root, jobs=processes, progress=False)
    wall = time.perf_counter() - start
    failed = [o.run for o in outcomes if o.status != "done"]
    if failed:
        raise RuntimeError(f"throughput pass {root.name}: runs did not finish: {', '.join(failed)}")
    return {"jobs": processes, "threads": threads or None, "runs": len(outcomes), "wall_seconds": wall,
            "runs_per_hour": 3600.0 * len(outcomes) / wall}  # fmt: skip


def _warm(plan: Plan, sweep: str, cache: Path) -> None:
    """Generate (and cache) the sweep's data, patch tokens included, before the timed passes."""
    from tvr_convbench.bench.sweep import check_data

    config = throughput_sweep(plan, sweep, cache, 1)
    check_data(config.data, ("train", "val"), f"{sweep}: data", patches=True)


def _max_val_diff(before: Path, after: Path) -> float:
    """The largest |difference| of a val metric between the two passes' runs (same run, step, metric)."""
    worst = 0.0
    for path in sorted(before.glob("*/*/metrics.csv")):
        a, b = _val_values(path), _val_values(after / path.relative_to(before))
        worst = max([worst, *(abs(a[k] - b[k]) for k in a.keys() & b.keys())])
    return worst


def _val_values(path: Path) -> dict[tuple[str, str], float]:
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["step"], r["metric"]): float(r["value"]) for r in csv.DictReader(f) if r["split"] == "val"}
