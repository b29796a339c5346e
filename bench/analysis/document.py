"""The text of report.md, rendered from a sweep log, its report config and the analysis tables (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from tvr_convbench.bench.analysis import tables
from tvr_convbench.bench.analysis.load import SweepLog
from tvr_convbench.bench.analysis.pipeline import Analysis
from tvr_convbench.bench.config import ReportConfig

PROXY_TITLE = "synthetic DiDeMo proxy"
TRAINER_KEYS = ("batch_size", "optimizer", "lr", "backbone_lr", "warmup", "weight_decay", "grad_clip")
REGIME_KEYS = ("regime", "backbone_regime", "backbone")


def title(log: SweepLog) -> str:
    """The title names the dataset; a synthetic run log always says "synthetic DiDeMo proxy"."""
    if log.data.get("synthetic"):
        return f"# Convergence report: {log.name} ({PROXY_TITLE})"
    dataset = log.data.get("title") or log.data.get("name") or log.sweep.data.get("name", "dataset unknown")
    return f"# Convergence report: {log.name} ({dataset})"


def dataset_line(log: SweepLog) -> str:
    data, spec_data = log.data, log.sweep.data
    name = data.get("title") or data.get("name") or spec_data.get("name", "unknown")
    key = data.get("name", spec_data.get("name", "?"))
    counts = ", ".join(f"{split} {tables.fmt(n, 0)}" for split, n in (data.get("counts") or {}).items())
    synthetic = {True: "yes", False: "no"}.get(data.get("synthetic"), "unknown (no data.json)")
    return f"- Dataset: {name} (`{key}`); synthetic: {synthetic}; counts: {counts or 'not recorded'}"


def regime(log: SweepLog) -> str:
    for mapping in (dataclasses.asdict(log.trainer), log.sweep.data):
        for key in REGIME_KEYS:
            if key in mapping:
                return str(mapping[key])
    return "not recorded in sweep.yaml"


def budget_line(log: SweepLog) -> str:
    trainer = dataclasses.asdict(log.trainer)
    parts = [f"{key} {trainer[key]}" for key in TRAINER_KEYS]
    return "- Budget: " + "; ".join([f"{log.max_steps} optimizer steps", *parts])


def evaluation_line(log: SweepLog) -> str:
    every, test = log.trainer.val_every, log.trainer.eval_test
    tested = (
        "test split also evaluated (reported at the val-selected step only)" if test else "test split not evaluated"
    )
    return f"- Evaluation: full val split at step 0 and every {every} optimizer steps (and the last step); {tested}"


def method_rows(log: SweepLog) -> list[dict[str, Any]]:
    rows = []
    for spec in log.sweep.methods:
        args = ", ".join(f"{k}={v}" for k, v in spec.args.items()) or "defaults"
        trainer = ", ".join(f"{k}={v}" for k, v in spec.trainer.items())
        rows.append({"label": spec.label, "method": spec.method, "args": args, "trainer override": trainer or "none"})
    return rows


def protocol_section(log: SweepLog, cfg: ReportConfig, analysis: Analysis | None) -> list[str]:
    seeds = log.sweep.seeds
    direction = "higher" if cfg.higher_is_better else "lower"
    aggregate = "IQM (25% trimmed mean)" if cfg.aggregate == "iqm" else "median"
    lines = ["## Protocol", "", dataset_line(log), f"- Backbone regime: {regime(log)}", budget_line(log)]
    lines += [evaluation_line(log), f"- Seeds: {seeds} ({len(seeds)} per method)"]
    lines += [
        f"- Metric: val {cfg.metric} ({direction} is better) for model selection, targets, curves and AUC",
        "- Clock: train seconds exclude evaluation; time to target = the first evaluation meeting the target "
        "(no interpolation); a run that never meets it is censored as ∞, never dropped",
        f"- Across seeds: {aggregate} and median with {cfg.confidence:.0%} percentile bootstrap intervals "
        f"(stratified bootstrap: seeds resampled with replacement within each method and target; "
        f"{cfg.bootstrap_reps:,} resamples, seed {cfg.bootstrap_seed})",
        "- All trainer settings: " + ", ".join(f"`{k}={v}`" for k, v in dataclasses.asdict(log.trainer).items()),
        "",
        tables.markdown_table(pd.DataFrame(method_rows(log))),
        "",
    ]
    if analysis is not None:
        targets = analysis.targets.assign(value=analysis.targets["value"].map(lambda v: tables.fmt(v, 2)))
        lines += ["Targets:", "", tables.markdown_table(targets[["target", "value", "definition"]]), ""]
    return lines


def calibration_section(log: SweepLog) -> list[str]:
    calibration = log.data.get("calibration")
    if not calibration:
        return []
    intro = "Calibration of the proxy's difficulty, as recorded in data.json:"
    return ["## Proxy calibration", "", intro, "", tables.markdown_table(tables.mapping_table(calibration)), ""]


def single_seed_note(analysis: Analysis) -> list[str]:
    runs = analysis.summary.set_index("method")["runs"]
    if analysis.max_runs < 2:
        return ["**One seed per method: no confidence intervals can be given; all numbers are single runs.**", ""]
    single = [m for m, n in runs.items() if n == 1]
    return (
        [f"**One analysed seed for {', '.join(single)}: no interval for {'it' if len(single) == 1 else 'them'}.**", ""]
        if single
        else []
    )


def results_section(analysis: Analysis) -> list[str]:
    cfg = analysis.cfg
    name = "IQM" if cfg.aggregate == "iqm" else "median"
    results = tables.results_table(analysis.summary, analysis.ttt, cfg.metric, cfg.aggregate)
    legend = (
        f"Best val {cfg.metric} and AUC: {name} over seeds with {cfg.confidence:.0%} bootstrap interval. "
        "Steps/seconds to a target: median over seeds [interval]; ∞ = censored (at least half the runs missed); "
        "(k/n missed) counts runs that never met the target within the budget. AUC = trapezoid area under "
        f"val {cfg.metric} vs step divided by max_steps (metric units). s/step = train seconds per optimizer step; "
        "eval s = seconds per evaluation; eval share = evaluation / (evaluation + training) time; all means over runs."
    )
    detail = tables.markdown_table(tables.ttt_detail_table(analysis.ttt))
    lines = ["## Results", "", *single_seed_note(analysis), tables.markdown_table(results), "", legend, ""]
    return lines + ["### Time to target: median and IQM", "", detail, ""]


def comparison_section(analysis: Analysis) -> list[str]:
    labels = analysis.log.labels
    if analysis.summary["runs"].gt(0).sum() < 2:
        return ["## Which converges faster", "", "Only one method has finished runs: nothing to compare.", ""]
    lines = ["## Which converges faster", ""]
    lines += [
        "P(a run of the row method meets a target sooner than a run of the column method): Mann-Whitney over all "
        "seed pairs, ties (including two misses) count 1/2, mean over targets; 0.5 = no difference. Per-target "
        "values are in pairwise.csv.",
        "",
    ]
    for axis in ("steps", "seconds"):
        lines += [f"By {axis}:", "", tables.markdown_table(tables.pairwise_matrix(analysis.pairwise, axis, labels)), ""]
    lines += [
        "Performance-profile score (AlgoPerf): area under the fraction of (target, seed) cases met within tau times "
        f"the fastest method, tau in [1, {analysis.cfg.profile_max_ratio:g}], divided by the range "
        "(1 = always the fastest).",
        "",
        tables.markdown_table(tables.profile_table(analysis.profile_scores)),
        "",
    ]
    return lines


def selection_section(analysis: Analysis) -> list[str]:
    metric = analysis.cfg.metric
    intro = (
        f"Per run, the evaluation with the best val {metric} (the first on ties); test metrics are read at that "
        "step only. All val and test metrics at the selected step are in selection.csv."
    )
    return [
        "## Model selection",
        "",
        intro,
        "",
        tables.markdown_table(tables.selection_table(analysis.selection, metric)),
        "",
    ]


def status_section(log: SweepLog) -> list[str]:
    counts = log.runs["status"].value_counts()
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    note = "Failed, running, missing and unknown runs are not analysed; they are never counted as slow runs."
    return [
        "## Run status",
        "",
        f"{len(log.runs)} planned runs: {summary}. {note}",
        "",
        tables.markdown_table(tables.status_table(log.runs)),
        "",
    ]


def warnings_section(log: SweepLog, analysis: Analysis | None) -> list[str]:
    notes = log.warnings + (analysis.notes if analysis is not None else ())
    body = [f"- {w}" for w in notes] or ["- none"]
    return ["## Warnings", "", *body, ""]


def figures_section(captions: dict[str, str]) -> list[str]:
    lines = ["## Figures", ""]
    for path, caption in captions.items():
        lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    return lines


def render_report(log: SweepLog, cfg: ReportConfig, analysis: Analysis | None, captions: dict[str, str]) -> str:
    """The whole report.md text."""
    lines = [title(log), ""]
    lines += protocol_section(log, cfg, analysis) + calibration_section(log)
    if analysis is None:
        lines += ["## Results", "", "No finished run to analyse: see the run status and warnings below.", ""]
    else:
        lines += results_section(analysis) + comparison_section(analysis) + selection_section(analysis)
    lines += status_section(log) + warnings_section(log, analysis) + figures_section(captions)
    return "\n".join(lines).rstrip() + "\n"
