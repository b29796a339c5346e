"""The text of report.md, rendered from a sweep log, its report config and the analysis tables (pure).

Layout: the title; **Findings** (sentences generated from the tables, ``findings.py``); the ranked **Summary**
table; the **Figures**; the **Details** (time to every target in both readings, P(sooner) matrices, the AlgoPerf
profile); then an **Appendix**: protocol (evaluation grid, targets and their provenance, what n means for the
intervals), proxy calibration, model selection, run status (scored and reference runs) and warnings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from tvr_convbench.bench.analysis import tables
from tvr_convbench.bench.analysis.findings import findings
from tvr_convbench.bench.analysis.load import SweepLog
from tvr_convbench.bench.analysis.pipeline import Analysis
from tvr_convbench.bench.analysis.stats import median_coverage, min_seeds_for_median_interval, order_statistic_rank
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


# --- the answer ----------------------------------------------------------------------------------------------
def findings_section(analysis: Analysis) -> list[str]:
    return ["## Findings", "", *findings(analysis), ""]


def seed_note(analysis: Analysis) -> list[str]:
    """A bold line when a method (or every method) has a single analysed seed: no interval for it."""
    runs = analysis.summary.set_index("method")["runs"]
    if analysis.max_runs < 2:
        return ["**One seed per method: no confidence intervals can be given; all numbers are single runs.**", ""]
    single = [m for m, n in runs.items() if n == 1]
    if not single:
        return []
    return [
        f"**One analysed seed for {', '.join(single)}: no interval for {'it' if len(single) == 1 else 'them'}.**",
        "",
    ]


def summary_section(analysis: Analysis) -> list[str]:
    cfg = analysis.cfg
    name = "IQM" if cfg.aggregate == "iqm" else "median"
    target = tables.headline_target(analysis.targets)
    legend = (
        f"Ranked by the AlgoPerf performance-profile score in steps (then seconds): the area under the fraction of "
        f"the {analysis.targets['target'].nunique()} targets a method meets within tau times the fastest method's "
        f"median, tau in [1, {cfg.profile_max_ratio:g}], over the range (1 = always the fastest). Best val "
        f"{cfg.metric}: {name} over seeds [{cfg.confidence:.0%} percentile bootstrap interval]. Steps and train "
        f"seconds to the {target} target: median over seeds [distribution-free order-statistic interval] of the first "
        "evaluation meeting it, then the interpolated crossing; ∞ = censored (at least half the runs missed it); "
        f"{tables.NO_INTERVAL} = too few seeds for an interval of that coverage. ms/step = train milliseconds per "
        "optimizer step; eval share = evaluation / (evaluation + training) seconds; means over runs."
    )
    table = tables.markdown_table(tables.summary_table(analysis))
    return ["## Summary", "", *seed_note(analysis), table, "", legend, ""]


def figures_section(captions: dict[str, str]) -> list[str]:
    lines = ["## Figures", ""]
    for path, caption in captions.items():
        lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    return lines


def details_section(analysis: Analysis) -> list[str]:
    labels = analysis.log.labels
    lines = ["## Details", "", "### Time to every target", ""]
    lines += [tables.markdown_table(tables.ttt_detail_table(analysis.ttt)), ""]
    if analysis.summary["runs"].gt(0).sum() < 2:
        return [*lines, "Only one method has finished runs: nothing to compare.", ""]
    lines += [
        "### P(sooner)",
        "",
        "P(a run of the row method meets a target sooner than a run of the column method), Mann-Whitney over all "
        "seed pairs (ties, two misses included, count 1/2), the mean over targets, with its percentile bootstrap "
        "interval (runs of each method resampled, each with all its targets); 0.5 = no difference. Per-target "
        "values are in pairwise.csv.",
        "",
    ]
    for axis in ("steps", "seconds"):
        lines += [f"By {axis}:", "", tables.markdown_table(tables.pairwise_matrix(analysis.pairwise, axis, labels)), ""]
    lines += [
        "### AlgoPerf performance profile",
        "",
        "Per workload (here: each target on this dataset) the median over seeds of the time to target, a median "
        f"above {analysis.cfg.profile_max_ratio:g}x the fastest set to ∞, then the ratio to the fastest method; a "
        "failed or diverged run is a miss (∞) before the median. Score = the area under the fraction of workloads "
        "within tau, over the tau range (AlgoPerf, scoring/performance_profile.py).",
        "",
        tables.markdown_table(tables.profile_table(analysis.profile_scores)),
        "",
    ]
    return lines + tuning_lines(analysis) + projection_lines(analysis)


def tuning_lines(analysis: Analysis) -> list[str]:
    """The tuning phase: the space, the rule, every trial of every method with the selected one marked."""
    if analysis.tuning is None:
        return []
    tuning = analysis.log.sweep.tuning
    rule = tuning.rule
    space = "; ".join(f"{k} in {[float(f'{v:g}') for v in vs]}" for k, vs in tuning.space.items())
    tied = "; ".join(f"{k} follows {v}" for k, v in tuning.tied.items())
    intro = (
        f"The same {len(analysis.tuning.selection.trials)} trials for every method ({tuning.search} search over "
        f"{space}{'; ' + tied if tied else ''}) on tuning seeds {list(tuning.seeds)}, never scored; rule declared "
        f"before anything ran: fewest median {rule.axis} to the {rule.target} target, ties by the median {rule.tie}. "
        "Cells: median [min, max] over the tuning seeds. A selection at an end of its grid is flagged: the grid was "
        "too narrow for that method."
    )
    table = tables.sensitivity_table(analysis.tuning.table, analysis.tuning.keys, rule.axis)
    return ["### Tuning and sensitivity", "", intro, "", tables.markdown_table(table), ""]


def projection_lines(analysis: Analysis) -> list[str]:
    """Steps to target at DiDeMo step costs: clearly a projection, never mixed into the measured columns."""
    head = ["### Cost at DiDeMo shapes (a projection, not a measurement)", ""]
    if analysis.projection.empty:
        return [*head, f"No benchmark file ({analysis.cfg.bench or 'none configured'}): run `make bench` first.", ""]
    intro = (
        "The proxy's seconds are seconds at proxy shapes. Projected here: each method's median steps to a target on "
        "this sweep times its measured train-step time at DiDeMo shapes (D 512, 64 frames, 64 tokens, batch 32; "
        f"`make bench` on {analysis.bench_machine}), i.e. what the step counts would cost on DiDeMo."
    )
    return [*head, intro, "", tables.markdown_table(tables.projection_table(analysis.projection)), ""]


# --- the appendix --------------------------------------------------------------------------------------------
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
    tested = (
        "test split also evaluated (reported at the val-selected step only)"
        if log.trainer.eval_test
        else "test split not evaluated"
    )
    return (
        f"- Evaluation grid (the whole val split, the same for every method): {log.trainer.schedule_text()}; {tested}"
    )


def method_rows(log: SweepLog) -> list[dict[str, Any]]:
    rows = []
    for spec in log.sweep.methods:
        args = ", ".join(f"{k}={v}" for k, v in spec.args.items()) or "defaults"
        trainer = ", ".join(f"{k}={v}" for k, v in spec.trainer.items())
        row = {"label": spec.label, "method": spec.method, "args": args, "trainer override": trainer or "none"}
        rows.append(row | {"in this regime": regime_note(spec.method, regime(log)) or "as specified"})
    return rows


def regime_note(method: str, regime_name: str) -> str | None:
    """What a method cannot do in this backbone regime (e.g. TS2-Net's token shift needs a live vision tower)."""
    from tvr_convbench.methods import METHODS

    return METHODS.get(method).cls.regime_note(regime_name) if method in METHODS else None


def seeds_line(log: SweepLog, cfg: ReportConfig) -> str:
    """The scored seeds and what their number means for the intervals."""
    seeds, confidence = log.sweep.seeds, cfg.confidence
    n, needed = len(seeds), min_seeds_for_median_interval(confidence)
    rank = order_statistic_rank(n, confidence)
    if rank is None:
        median = f"no distribution-free {confidence:.0%} interval of a median exists at n = {n} (needs {needed})"
    else:
        median = (
            f"median intervals are the order statistics x({rank}) and x({n + 1 - rank}) "
            f"(exact coverage {median_coverage(n, rank):.1%})"
        )
    cut = int(0.25 * n)
    iqm = f"the IQM averages the middle {n - 2 * cut} of {n} values"
    return (
        f"- Scored seeds: {seeds} ({n} per method); {median}; {iqm}, and its percentile bootstrap interval "
        f"({cfg.bootstrap_reps:,} resamples, seed {cfg.bootstrap_seed}) under-covers at small n"
    )


def protocol_section(log: SweepLog, cfg: ReportConfig, analysis: Analysis | None) -> list[str]:
    direction = "higher" if cfg.higher_is_better else "lower"
    lines = ["## Appendix: protocol", "", dataset_line(log), f"- Backbone regime: {regime(log)}", budget_line(log)]
    lines += [evaluation_line(log), seeds_line(log, cfg)]
    lines += [
        f"- Metric: val {cfg.metric} ({direction} is better) for model selection, targets, curves and AUC",
        "- Clock: train seconds exclude evaluation; time to target = the first evaluation meeting the target "
        "(AlgoPerf), with the crossing interpolated between the two evaluations that bracket it as a second "
        "reading; a run that never meets it, a failed run and a diverged run are censored as ∞, never dropped",
        trainer_line(log),
        "",
        tables.markdown_table(pd.DataFrame(method_rows(log))),
        "",
    ]
    if analysis is not None:
        lines += targets_lines(analysis)
    return lines


def trainer_line(log: SweepLog) -> str:
    """Every trainer setting of the protocol; a tuned one says so (each method's value is in the tuning section)."""
    tuned = {*log.sweep.tuning.space, *log.sweep.tuning.tied}
    settings = dataclasses.asdict(log.trainer).items()
    cells = [f"`{k}`: tuned per method" if k in tuned else f"`{k}={v}`" for k, v in settings]
    return "- All trainer settings: " + ", ".join(cells)


def targets_lines(analysis: Analysis) -> list[str]:
    shown = analysis.targets.assign(value=analysis.targets["value"].map(lambda v: tables.fmt(v, 2)))
    shown = shown.assign(fraction=shown["fraction"].map(lambda v: tables.fmt(v, 2)))
    provenance = f"Targets ({analysis.target_set.describe()}):"
    lines = [provenance, "", tables.markdown_table(shown[["target", "fraction", "value"]]), ""]
    runs = analysis.target_set.reference_runs
    if runs:
        cells = pd.DataFrame({"reference run": list(runs), "best": [tables.fmt(v, 2) for v in runs.values()]})
        lines += [tables.markdown_table(cells), ""]
    return lines


def calibration_section(log: SweepLog) -> list[str]:
    calibration = log.data.get("calibration")
    if not calibration:
        return []
    intro = "Calibration of the proxy's difficulty, as recorded in data.json:"
    return [
        "## Appendix: proxy calibration",
        "",
        intro,
        "",
        tables.markdown_table(tables.mapping_table(calibration)),
        "",
    ]


def selection_section(analysis: Analysis) -> list[str]:
    metric = analysis.cfg.metric
    intro = (
        f"Per run, the evaluation with the best val {metric} (the first on ties); test metrics are read at that "
        "step only. All val and test metrics at the selected step are in selection.csv."
    )
    table = tables.markdown_table(tables.selection_table(analysis.selection, metric))
    return ["## Appendix: model selection", "", intro, "", table, ""]


def status_section(log: SweepLog, reference: SweepLog | None) -> list[str]:
    counts = log.runs["status"].value_counts()
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    note = (
        "Failed and diverged runs enter every statistic as misses; running, missing and unknown runs are not "
        "analysed; none is counted as a slow run."
    )
    lines = ["## Appendix: run status", "", f"{len(log.runs)} scored runs: {summary}. {note}", ""]
    lines += [tables.markdown_table(tables.status_table(log.runs)), ""]
    if reference is not None and len(reference.runs):
        lines += ["Reference runs (they fixed the targets; never scored):", ""]
        lines += [tables.markdown_table(tables.status_table(reference.runs)), ""]
    return lines


def warnings_section(log: SweepLog, analysis: Analysis | None) -> list[str]:
    notes = log.warnings + (analysis.notes if analysis is not None else ())
    body = [f"- {w}" for w in notes] or ["- none"]
    return ["## Appendix: warnings", "", *body, ""]


def render_report(
    log: SweepLog,
    cfg: ReportConfig,
    analysis: Analysis | None,
    captions: dict[str, str],
    reference: SweepLog | None = None,
) -> str:
    """The whole report.md text."""
    lines = [title(log), ""]
    if analysis is None:
        lines += ["## Findings", "", "No finished run to analyse: see the run status and warnings below.", ""]
    else:
        lines += findings_section(analysis) + summary_section(analysis) + figures_section(captions)
        lines += details_section(analysis)
    lines += protocol_section(log, cfg, analysis) + calibration_section(log)
    if analysis is not None:
        lines += selection_section(analysis)
    lines += status_section(log, reference) + warnings_section(log, analysis)
    return "\n".join(lines).rstrip() + "\n"
