"""Mirror a sweep's convergence results to wandb: each run's summary gets its steps/seconds to every target, and
one sweep-level wandb run holds the results table. Best effort, like every wandb call here."""

from __future__ import annotations

import math
from pathlib import Path

from tvr_convbench.bench.config import RunConfig, SweepConfig, WandbConfig
from tvr_convbench.bench.wandb_mirror import WandbMirror, resolve_mode
from tvr_convbench.core.schema import SweepPaths


def mirror_targets(sweep_dir: Path) -> None:
    """Push per-run time-to-target values and the results table of ``sweep_dir`` to wandb (no-op when disabled)."""
    sweep = SweepConfig.from_file(SweepPaths(sweep_dir).sweep)
    wandb_cfg = sweep.wandb
    if resolve_mode(wandb_cfg.mode) == "disabled":
        return
    from tvr_convbench.bench.analysis import run_target_table

    table = run_target_table(sweep_dir)
    if table.empty:
        return
    for run, rows in table.groupby("run"):
        cfg = RunConfig.from_file(SweepPaths(sweep_dir).run(str(run)).config)
        values = {}
        for row in rows.itertuples():
            key = f"target/{row.target}"
            values[f"{key}/steps"] = row.steps_to_target if row.reached else None
            values[f"{key}/seconds"] = row.seconds_to_target if row.reached else None
            values[f"{key}/value"] = row.target_value
        mirror = WandbMirror()
        mirror.start(sweep_dir / str(run), sweep_dir, cfg, [], wandb_cfg.mode)
        mirror.summary(values)
        mirror.finish()
    _sweep_table(sweep_dir, sweep, wandb_cfg, table)


def _sweep_table(sweep_dir: Path, sweep: SweepConfig, wandb_cfg: WandbConfig, table) -> None:  # noqa: ANN001
    cfg = RunConfig(
        sweep=sweep.name,
        run=f"{sweep.name}-results",
        label="sweep",
        method="-",
        method_args={},
        seed=-1,
        data=sweep.data,
        trainer=sweep.trainer,
        wandb=wandb_cfg,
    )
    mirror = WandbMirror()
    mirror.start(sweep_dir, sweep_dir, cfg, ["results"], wandb_cfg.mode)
    clean = table.replace([math.inf, -math.inf], float("nan"))
    mirror.log_table("results/time_to_target", clean)
    mirror.finish()
