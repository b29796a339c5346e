"""A sweep's convergence results in wandb (best effort, like every wandb call here: a failure warns, never fails).

- per run: its summaries (``run_summary_values``: time to target per target, best, selected step, AUC) go into
  the run's own wandb record (``wandb_mirror.write_run_summary``: one record and one unsynced folder per run);
- per sweep: one ``<sweep>-results`` run (group ``<sweep>/results``, job type ``results``, its own single folder)
  holds the report's tables as summary Tables (``results/summary``: best and AUC with intervals per method;
  ``results/time_to_target``: median and IQM steps/seconds to each target with intervals; ``results/targets``;
  ``results/run_targets``), every report figure as an image (``figures/<name>``), and ``report.md`` + the CSV
  tables + the figures as a versioned artifact ``<sweep>-report`` (type ``report``; offline artifacts work in
  wandb 0.31: the files are staged under ``WANDB_DATA_DIR`` until ``wandb sync`` uploads them).

Tables go into the summary, not the history: wandb's terminal viewer (``wandb leet``) plots a logged table's
``ncols``/``nrows`` as metrics, while a summary table is listed only (measured, wandb 0.31). Images are logged as
one history row (media panels read the history; the viewer does not plot image rows).

Where the per-run summaries are computed: at sweep end (``mirror_targets``, after the report), from the analysis
(``run_target_table``). With post hoc targets (no ``targets`` section: fractions of the best value of any run,
known only when every run has finished) that is the only place, so the sweep end rebuilds each offline record
once (``wandb_mirror.write_run_summary``). With targets fixed before the scored runs (``targets.json``) the trainer
can call ``run_summary_from_targets`` at the end of a run and pass the values to its own mirror before
``finish``; the sweep end then computes the same values, finds them written (``wandb_summary.json`` beside the
run) and opens nothing: one ``wandb.init`` per run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

from tvr_convbench.bench.config import RunConfig, SweepConfig
from tvr_convbench.bench.wandb_mirror import (
    RESULTS_ID_FILE,
    records,
    stored_id,
    sweep_mode,
    table_frame,
    write_record,
    write_run_summary,
)
from tvr_convbench.core.schema import SweepPaths

RESULT_TABLES = {
    "summary.csv": "results/summary",
    "time_to_target.csv": "results/time_to_target",
    "targets.csv": "results/targets",
    "run_targets.csv": "results/run_targets",
}
"""report CSV -> summary key of its wandb Table in the results run"""


def mirror_targets(sweep_dir: Path, report_dir: Path | None = None) -> dict[str, str]:
    """Push every analysed run's summaries into its own wandb record, then (with ``report_dir``, the folder of
    ``report.md``) the sweep's results run. Returns run -> how its record was written (``write_run_summary``)."""
    sweep_dir = Path(sweep_dir)
    try:
        sweep = SweepConfig.from_file(SweepPaths(sweep_dir).sweep)
        if sweep_mode(sweep.wandb.mode, sweep_dir) == "disabled":
            return {}
        values = sweep_summaries(sweep_dir)
    except Exception as err:  # noqa: BLE001 - wandb summaries must never fail a sweep
        warnings.warn(f"wandb summaries not written ({type(err).__name__}: {err})", stacklevel=2)
        return {}
    written = write_run_summaries(sweep_dir, values)
    if report_dir is not None:
        mirror_results(sweep_dir, Path(report_dir))
    return written


def sweep_summaries(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Run -> its summary values, from the analysis of the whole sweep (``run_target_table``)."""
    from tvr_convbench.bench.analysis import read_report_config, run_target_table

    table = run_target_table(sweep_dir)
    metric = read_report_config(sweep_dir).metric
    return {str(run): run_summary_values(rows, metric) for run, rows in table.groupby("run", sort=False)}


def run_summary_values(rows: Any, metric: str = "t2v/R@1") -> dict[str, Any]:
    """One run's summary values from its rows of ``run_target_table`` (one row per target).

    Keys: ``target/<target>/steps`` and ``/seconds`` (the first evaluation meeting it; None: never reached),
    ``/steps_interpolated`` and ``/seconds_interpolated`` (the crossing between evaluations, when the table has
    them), ``/value``, ``/reached``; ``best/val/<metric>``, ``best/step``, ``selected/step`` (the val-selected step,
    where test is reported) and ``auc/val/<metric>``."""
    values: dict[str, Any] = {}
    for row in rows.itertuples():
        key = f"target/{row.target}"
        values[f"{key}/steps"] = _number(row.steps_to_target, int) if row.reached else None
        values[f"{key}/seconds"] = _number(row.seconds_to_target, float) if row.reached else None
        for column in ("steps_interpolated", "seconds_interpolated"):
            if hasattr(row, column):
                values[f"{key}/{column}"] = _number(getattr(row, column), float) if row.reached else None
        values[f"{key}/value"] = _number(row.target_value, float)
        values[f"{key}/reached"] = bool(row.reached)
    first = next(rows.itertuples(), None)
    if first is not None:
        values[f"best/val/{metric}"] = _number(first.best, float)
        values["best/step"] = _number(first.best_step, int)
        values["selected/step"] = _number(first.best_step, int)
        values[f"auc/val/{metric}"] = _number(first.auc, float)
    return values


def run_summary_from_targets(run_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """A finished run's summary values against the targets fixed before it (``targets.json``: ``metric``,
    ``labels``, ``values``), from its ``metrics.csv`` with the analysis's own ``run_table`` (so the sweep end
    computes the same numbers and leaves the record alone); ``{}`` without a targets file (post hoc targets) or
    when they cannot be computed (warned). For the trainer to pass to its mirror before ``finish``."""
    import pandas as pd

    from tvr_convbench.bench.analysis.targets import run_table, val_curves
    from tvr_convbench.bench.config import higher_is_better

    path = SweepPaths(Path(sweep_dir)).root / "targets.json"
    if not path.exists():
        return {}
    try:
        spec = json.loads(path.read_text())
        metric = spec["metric"]
        labels, values = [str(t) for t in spec["labels"]], [float(v) for v in spec["values"]]
        log = pd.read_csv(Path(run_dir) / "metrics.csv", dtype={"split": str, "metric": str})
        max_steps = RunConfig.from_file(Path(run_dir) / "config.yaml").trainer.max_steps
        rows = run_table(val_curves(log, metric), pd.DataFrame({"target": labels, "value": values}), max_steps,
                         higher_is_better(metric))  # fmt: skip
    except Exception as err:  # noqa: BLE001 - a summary never fails a run; the sweep end computes them again
        run = Path(run_dir).name
        warnings.warn(f"wandb target summaries of {run} not computed ({type(err).__name__}: {err})", stacklevel=2)
        return {}
    return run_summary_values(rows, metric)


def write_run_summaries(sweep_dir: Path, values: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``write_run_summary`` for each run of ``values`` (run name -> its summary values)."""
    out = {}
    for run, run_values in values.items():
        run_dir = SweepPaths(Path(sweep_dir)).run(run).root
        try:
            cfg = RunConfig.from_file(run_dir / "config.yaml")
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"wandb summary of {run} not written ({type(err).__name__}: {err})", stacklevel=2)
            out[run] = "failed"
            continue
        out[run] = write_run_summary(run_dir, sweep_dir, cfg, run_values)
    return out


# --- the results run -----------------------------------------------------------------------------------------------
def mirror_results(sweep_dir: Path, report_dir: Path) -> str:
    """Write the ``<sweep>-results`` run from ``report_dir`` (report.md, the CSV tables, figures/*.png). Returns
    ``"rebuilt"`` / ``"resumed"`` (see ``wandb_mirror.write_record``), ``"disabled"``, ``"missing"`` (no report)
    or ``"failed"`` (warned)."""
    sweep_dir, report_dir = Path(sweep_dir), Path(report_dir)
    try:
        sweep = SweepConfig.from_file(SweepPaths(sweep_dir).sweep)
        mode = sweep_mode(sweep.wandb.mode, sweep_dir)
        if mode == "disabled":
            return "disabled"
        if not (report_dir / "report.md").is_file():
            return "missing"
        run_id = stored_id(sweep_dir / RESULTS_ID_FILE)
        fields = {
            "project": sweep.wandb.project,
            "entity": sweep.wandb.entity,
            "name": f"{sweep.name}-results",
            "group": f"{sweep.name}/results",
            "job_type": "results",
            "tags": ["results", f"sweep:{sweep.name}"],
            "config": {"sweep": sweep.name, "kind": "results", "report": dataclasses.asdict(sweep.report)},
        }
        how, _ = write_record(sweep_dir, run_id, mode, fields, lambda run, _: _fill_results(run, sweep, report_dir))
        return how
    except Exception as err:  # noqa: BLE001 - the results mirror must never fail a sweep
        warnings.warn(f"wandb results run not written ({type(err).__name__}: {err})", stacklevel=2)
        return "failed"


def _fill_results(run: Any, sweep: SweepConfig, report_dir: Path) -> None:
    import pandas as pd
    import wandb

    for name, key in RESULT_TABLES.items():
        path = report_dir / name
        if path.is_file():
            run.summary[key] = wandb.Table(dataframe=table_frame(pd.read_csv(path)))
    figures = sorted((report_dir / "figures").glob("*.png"))
    if figures:
        run.log({f"figures/{p.stem}": wandb.Image(str(p), caption=p.stem.replace("_", " ")) for p in figures})
    files = [report_dir / "report.md", *sorted(report_dir.glob("*.csv")), *figures]
    extra = report_dir / "wandb-workspace.json"
    if extra.is_file():
        files.append(extra)
    artifact = wandb.Artifact(
        f"{sweep.name}-report",
        type="report",
        description=f"tvr-convbench convergence report of sweep {sweep.name}: report.md, CSV tables, figures",
        metadata={"sweep": sweep.name, "files": len(files), "figures": len(figures)},
    )
    for path in files:
        artifact.add_file(str(path), name=str(path.relative_to(report_dir)))
    run.log_artifact(artifact)


def _number(value: Any, kind: type) -> Any:
    value = float(value)
    if not math.isfinite(value):
        return None
    return int(value) if kind is int else value


def results_records(sweep_dir: Path) -> list[Path]:
    """The local folders of the sweep's results run (one, unless it was synced and then written again)."""
    path = Path(sweep_dir) / RESULTS_ID_FILE
    return records(sweep_dir, path.read_text().strip()) if path.exists() else []
