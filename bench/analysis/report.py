"""``write_report(sweep_dir, out_dir)``: the only function of ``bench.analysis`` that writes files.

It writes ``out_dir/report.md``, ``out_dir/figures/*.png`` and the tables as ``out_dir/*.csv``, each atomically
(``tvr_convbench.core.files``: temporary file in the same folder, then ``os.replace``), so no reader sees a
half-written file.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from tvr_convbench.bench.analysis import aggregate, figures, tables
from tvr_convbench.bench.analysis.document import render_report
from tvr_convbench.bench.analysis.findings import finding_frame
from tvr_convbench.bench.analysis.load import load_sweep
from tvr_convbench.bench.analysis.pipeline import Analysis, analyse, has_curves, read_report_config
from tvr_convbench.core.files import atomic_write_bytes, atomic_write_text


def save_figure(fig: Figure, path: Path, dpi: int) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def metric_slug(metric: str) -> str:
    return metric.replace("/", "_").replace("@", "")


def curve_figures(analysis: Analysis, styles: dict) -> dict[str, tuple[Figure, str]]:
    """Val metric vs step and vs train seconds, with bootstrap bands."""
    cfg, labels, slug = analysis.cfg, analysis.log.labels, metric_slug(analysis.cfg.metric)
    note = figures.band_note(analysis.max_runs, cfg.confidence, cfg.aggregate)
    out = {}
    for x, xlabel, name in (("step", "optimizer step", "step"), ("train_seconds", "train seconds", "seconds")):
        bands = aggregate.curve_bands(analysis.curves, x, labels, cfg)
        fig = figures.curve_figure(bands, analysis.targets, f"val {cfg.metric}", xlabel, styles, note)
        out[f"val_{slug}_vs_{name}.png"] = (fig, f"val {cfg.metric} vs {xlabel}")
    return out


def other_figures(analysis: Analysis, styles: dict) -> dict[str, tuple[Figure, str]]:
    """Training loss, time-to-target intervals and the performance profile."""
    cfg, log = analysis.cfg, analysis.log
    window = cfg.loss_window or max(1, log.max_steps // 50)
    losses = aggregate.train_curves(log.metrics, window, "loss")
    recall = aggregate.train_curves(log.metrics, window, "recall")
    loss_note = f"mean over seeds, trailing moving average over {window} steps"
    budgets = {"steps": float(log.max_steps), "seconds": float(analysis.curves["train_seconds"].max())}
    ttt_note = (
        f"{cfg.confidence:.0%} order-statistic interval over seeds"
        if analysis.max_runs > 1
        else "one seed: no interval"
    )
    profile_note = f"workloads = targets; median over seeds first; tau up to {cfg.profile_max_ratio:g}"
    recall_fig = figures.loss_figure(recall, styles, loss_note, "in-batch training recall")
    out = {}
    if analysis.tuning is not None:
        rule = analysis.log.sweep.tuning.rule
        fig = figures.sensitivity_figure(analysis.tuning.table, analysis.tuning.keys, styles, rule.target)
        out["sensitivity.png"] = (fig, "sensitivity: best val and time to the selection target vs each tuned setting")
    return out | {
        "train_loss.png": (figures.loss_figure(losses, styles, loss_note), "training loss and loss parts vs step"),
        "train_recall.png": (recall_fig, "in-batch training recall (the global batch, every step) vs step"),
        "time_to_target.png": (
            figures.time_to_target_figure(analysis.ttt, budgets, styles, ttt_note),
            "median steps and train seconds to each target, with order-statistic intervals",
        ),
        "performance_profile.png": (
            figures.profile_figure(analysis.profile, styles, profile_note),
            "AlgoPerf performance profiles over workloads (targets)",
        ),
    }


def csv_tables(analysis: Analysis | None, runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {"runs.csv": tables.status_table(runs)}
    if analysis is None:
        return out
    return out | {
        "targets.csv": analysis.targets,
        "summary.csv": analysis.summary,
        "time_to_target.csv": analysis.ttt,
        "run_targets.csv": analysis.per_run,
        "run_costs.csv": analysis.costs,
        "selection.csv": analysis.selection,
        "pairwise.csv": analysis.pairwise,
        "profile_scores.csv": analysis.profile_scores,
        "findings.csv": finding_frame(analysis),
        "projection.csv": analysis.projection,
        **({"sensitivity.csv": analysis.tuning.table} if analysis.tuning is not None else {}),
    }


def write_report(sweep_dir: Path | str, out_dir: Path | str) -> Path:
    """Build the convergence report of a sweep.

    Args:
        sweep_dir: ``runs/<sweep>/``; the ``report`` mapping of its sweep.yaml is the ReportConfig.
        out_dir: where report.md, figures/*.png and the CSV tables go (created if needed).

    Returns:
        The path of report.md.
    """
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    cfg = read_report_config(sweep_dir)
    log = load_sweep(sweep_dir, cfg.metric)
    reference = load_sweep(sweep_dir, cfg.metric, phase="reference") if log.sweep.reference_runs() else None
    analysis = analyse(log, cfg) if has_curves(log) else None
    styles = figures.method_styles(log.labels)
    made = (curve_figures(analysis, styles) | other_figures(analysis, styles)) if analysis else {}
    for name, (fig, _) in made.items():
        save_figure(fig, out_dir / "figures" / name, cfg.dpi)
    runs = log.runs if reference is None else pd.concat([reference.runs, log.runs], ignore_index=True)
    for name, frame in csv_tables(analysis, runs).items():
        atomic_write_text(out_dir / name, frame.to_csv(index=False))
    captions = {f"figures/{name}": caption for name, (_, caption) in made.items()}
    path = out_dir / "report.md"
    atomic_write_text(path, render_report(log, cfg, analysis, captions, reference))
    return path
