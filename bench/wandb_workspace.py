"""``tvr-convbench wandb-workspace SWEEP``: the saved wandb workspace of a sweep, defined in code.

The definition (``workspace_definition``) is plain JSON built here: the runs of one sweep (filter: tag
``sweep:<sweep>``, which its runs and its results run carry; not ``config.sweep``: wandb-workspaces turns a config
key ``sweep`` into the run attribute ``Sweep``) and job type ``scored`` or ``results`` (the tuning and reference
runs stay out of the bands), grouped by ``Group`` (``<sweep>/<label>``: one band per method
entry), x axis ``step``, and five sections:

1. *Validation retrieval*: val R@1 (the report metric and the other direction) vs ``step`` and vs
   ``train_seconds``, mean over seeds with a min-max band;
2. *Training loss*: ``train/loss`` vs ``step`` and vs ``train_seconds``, same bands;
3. *Training recall (in-batch)*: ``train/t2v/R@1``, ``train/t2v/R@5``, ``train/v2t/R@1``, ``train/v2t/R@5`` vs
   ``step``;
4. *Time to target*: bars of ``target/<t>/steps`` and ``target/<t>/seconds`` per method (mean over the seeds
   that reached it; the censored statistics are in the results table);
5. *Results*: the ``<sweep>-results`` run's tables (``results/summary``, ``results/time_to_target``) and figures.

With ``wandb-workspaces`` installed (the ``wandb`` extra) the definition becomes a
``wandb_workspaces.workspaces.Workspace``; it is saved when an account is configured and the server answers,
and its view spec is written beside the plain definition to ``reports/<sweep>/wandb-workspace.json`` in any case.
Without an account nothing leaves the machine: run the command again after ``wandb login`` (and
``wandb sync runs/<sweep>/wandb``) to save it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tvr_convbench.bench.config import SweepConfig
from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.files import atomic_write_text
from tvr_convbench.core.schema import SweepPaths

FORMAT = "tvr-convbench/wandb-workspace/1"
WORKSPACE_FILE = "wandb-workspace.json"
TRAIN_RECALL = ("train/t2v/R@1", "train/t2v/R@5", "train/v2t/R@1", "train/v2t/R@5")
"""the trainer's in-batch recall at every step"""
X_AXES = (("step", "step"), ("train_seconds", "train seconds"))
SHOWN_JOB_TYPES = ("scored", "results")
"""the runs the workspace shows: the scored seeds and the results record (tuning and reference runs, which fix the
targets and the selected settings, are left to the run table)"""
BAND = {"group_by": "Group", "aggregate": "mean", "band": "minmax"}
"""every curve: mean over the seeds of a group, shaded from the lowest to the highest seed"""


def workspace_definition(sweep_dir: Path, report_dir: Path | None = None, entity: str | None = None) -> dict:
    """The plain definition of a sweep's workspace (see the module docstring). Reads ``sweep.yaml`` and the
    targets (``targets.json``, else ``<report_dir>/targets.csv``, else the sweep's target fractions)."""
    sweep = _sweep(sweep_dir)
    metric = sweep.report.metric
    other = ("v2t" if metric.startswith("t2v") else "t2v") + metric[3:]
    line = lambda y, x, label: {"kind": "line", "title": f"{y} vs {label}", "x": x, "y": [y], **BAND}  # noqa: E731
    targets = target_labels(sweep_dir, report_dir, sweep)
    sections = [
        {
            "name": "Validation retrieval",
            "panels": [line(f"val/{m}", x, lab) for m in (metric, other) for x, lab in X_AXES],
        },
        {"name": "Training loss", "panels": [line("train/loss", x, label) for x, label in X_AXES]},
        {"name": "Training recall (in-batch)", "panels": [line(key, "step", "step") for key in TRAIN_RECALL]},
        {
            "name": "Time to target",
            "panels": [
                {
                    "kind": "bar",
                    "title": f"{unit} to target (mean of the seeds that reached it; censored: results table)",
                    "metrics": [f"target/{t}/{unit}" for t in targets],
                    **BAND,
                }
                for unit in ("steps", "seconds")
            ]
            if targets
            else [],
        },
        {
            "name": "Results",
            "panels": [
                {"kind": "table", "title": "best and AUC per method, with intervals", "key": "results/summary"},
                {
                    "kind": "table",
                    "title": "time to target: median and IQM with intervals",
                    "key": "results/time_to_target",
                },
                {"kind": "media", "title": "report figures", "keys": figure_keys(report_dir)},
            ],
        },
    ]
    return {
        "format": FORMAT,
        "sweep": sweep.name,
        "entity": entity or sweep.wandb.entity,
        "project": sweep.wandb.project,
        "name": f"tvr-convbench {sweep.name}",
        "runset": {
            "filter": {"tag": f"sweep:{sweep.name}", "job_types": list(SHOWN_JOB_TYPES)},
            "group_by": "Group",
            "x_axis": "step",
        },  # fmt: skip
        "targets": targets,
        "sections": sections,
    }


def target_labels(sweep_dir: Path, report_dir: Path | None, sweep: SweepConfig | None = None) -> list[str]:
    """The targets' labels (``50%``, ``≥30``, ...), as the summaries name them."""
    fixed = SweepPaths(Path(sweep_dir)).root / "targets.json"
    if fixed.is_file():
        labels = json.loads(fixed.read_text()).get("labels")
        if labels:
            return [str(label) for label in labels]
    table = Path(report_dir) / "targets.csv" if report_dir is not None else None
    if table is not None and table.is_file():
        import pandas as pd

        return [str(t) for t in pd.read_csv(table)["target"]]
    sweep = sweep or _sweep(sweep_dir)
    spec = getattr(sweep, "targets", None) or sweep.report
    values = getattr(spec, "values", None) or getattr(spec, "absolute_targets", None)
    if values and getattr(spec, "source", "absolute") == "absolute":
        sign = "≥" if "/R@" in sweep.report.metric else "≤"
        return [f"{sign}{v:g}" for v in values]
    fractions = getattr(spec, "fractions", None) or getattr(spec, "targets", None) or ()
    return [f"{100 * f:g}%" for f in fractions]


def figure_keys(report_dir: Path | None) -> list[str]:
    """``figures/<name>`` of every report figure (the results run logs them under these keys)."""
    if report_dir is None:
        return []
    return [f"figures/{p.stem}" for p in sorted((Path(report_dir) / "figures").glob("*.png"))]


def to_workspace(definition: dict) -> Any:
    """The ``wandb_workspaces`` Workspace of a definition (ImportError without the ``wandb`` extra)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    def panel(spec: dict) -> Any:
        group = {"groupby": spec.get("group_by"), "groupby_aggfunc": spec.get("aggregate"),
                 "groupby_rangefunc": spec.get("band")}  # fmt: skip
        if spec["kind"] == "line":
            return wr.LinePlot(title=spec["title"], x=spec["x"], y=list(spec["y"]), **group)
        if spec["kind"] == "bar":
            return wr.BarPlot(title=spec["title"], metrics=list(spec["metrics"]), orientation="v", **group)
        if spec["kind"] == "table":
            return wr.WeavePanelSummaryTable(table_name=spec["key"])
        return wr.MediaBrowser(title=spec["title"], media_keys=list(spec["keys"]))

    runset = definition["runset"]
    return ws.Workspace(
        entity=definition["entity"] or "",
        project=definition["project"],
        name=definition["name"],
        sections=[
            ws.Section(name=s["name"], is_open=True, panels=[panel(p) for p in s["panels"]])
            for s in definition["sections"]
        ],
        settings=ws.WorkspaceSettings(x_axis=runset["x_axis"], max_runs=100),
        runset_settings=ws.RunsetSettings(
            filters=[
                expr.Tags().isin([runset["filter"]["tag"]]),
                expr.Metric("JobType").isin(runset["filter"]["job_types"]),
            ],
            groupby=[expr.Metric(runset["group_by"])],
        ),
    )


def view_spec(workspace: Any) -> dict:
    """The view wandb stores for a Workspace (what ``Workspace.save`` uploads), as JSON."""
    return workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def build_workspace(
    sweep_dir: Path, report_dir: Path, entity: str | None = None, save: bool = True
) -> tuple[Path, str | None, str]:
    """Write ``<report_dir>/wandb-workspace.json`` and, when an account is configured and ``save``, save the
    workspace to wandb. Returns (the JSON path, the saved workspace's URL or None, a line for the user)."""
    from tvr_convbench.bench.wandb_mirror import _has_account, sweep_mode

    sweep_dir, report_dir = Path(sweep_dir), Path(report_dir)
    definition = workspace_definition(sweep_dir, report_dir, entity)
    workspace, note = None, ""
    try:
        workspace = to_workspace(definition)
        definition["view"] = view_spec(workspace)
    except ImportError:
        definition["view"] = None
        note = "wandb-workspaces is not installed (pip install 'tvr-convbench[wandb]'): the plain definition only"
    path = report_dir / WORKSPACE_FILE
    mode = sweep_mode(_sweep(sweep_dir).wandb.mode, sweep_dir) if save and _has_account() else "offline"
    url = None
    if workspace is not None and mode == "online":
        try:
            if not definition["entity"]:
                import wandb

                workspace.entity = definition["entity"] = wandb.Api().default_entity
                definition["view"] = view_spec(workspace)
            url = workspace.save().url
            note = f"saved: {url}"
        except Exception as err:  # noqa: BLE001 - the JSON is written either way
            note = f"not saved ({type(err).__name__}: {err})"
    if url is None:
        later = f"wandb login, wandb sync {sweep_dir / 'wandb'}, then tvr-convbench wandb-workspace {sweep_dir.name}"
        note = f"{note + '; ' if note else ''}to save it: {later}"
    definition["saved"] = url
    atomic_write_text(path, json.dumps(definition, indent=1, ensure_ascii=False) + "\n")
    return path, url, note


def run_command(sweep: str, runs_dir: Path, reports_dir: Path, entity: str | None = None, save: bool = True) -> int:
    """The body of ``tvr-convbench wandb-workspace``: 0 when the definition is written (and saved, if it can be)."""
    sweep_dir = Path(runs_dir) / sweep
    if "/" in sweep or not SweepPaths(sweep_dir).sweep.is_file():
        raise ConfigError(f"no run log for sweep {sweep!r}: {SweepPaths(sweep_dir).sweep} does not exist")
    path, _, note = build_workspace(sweep_dir, Path(reports_dir) / sweep, entity, save)
    print(f"wandb workspace: {path} ({note})")
    return 0


def _sweep(sweep_dir: Path) -> SweepConfig:
    return SweepConfig.from_file(SweepPaths(Path(sweep_dir)).sweep)
