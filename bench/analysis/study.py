"""Across proxy worlds: the verdict of a multi-world sweep (a study), from the per-world sweeps it ran.

A study's ``worlds`` run as sweeps ``<study>-<world>``, each with its own tuning, targets and scored seeds. Here:
- the AlgoPerf performance profile over every workload, a workload being (world, target): per workload the
  median over seeds of the time to target, ratios to the fastest method, failed or missed = ∞;
- per world, the methods ordered by median steps (and train seconds) to the headline target, and whether that
  ordering holds in every world, or where it flips: the pairs of methods one world orders one way and another world
  the other way (a method that missed the target, median infinity, comes after every method that reached it; two
  that both missed are not ordered);
- Findings generated from those tables, then a table per world and the profile figure.
Each world's own report (``reports/<study>-<world>/report.md``) holds its details.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tvr_convbench.bench.analysis import aggregate, figures, tables
from tvr_convbench.bench.analysis.load import load_sweep, read_sweep
from tvr_convbench.bench.analysis.pipeline import Analysis, analyse, has_curves
from tvr_convbench.bench.analysis.tables import headline_target, ttt_row
from tvr_convbench.core.files import atomic_write_bytes, atomic_write_text
from tvr_convbench.core.schema import SweepPaths


@dataclass(frozen=True)
class Study:
    name: str
    analyses: dict[str, Analysis]
    """world -> its sweep's analysis"""
    per_run: pd.DataFrame
    """every world's per-run table; ``target`` is ``<world>/<target>`` (the workload)"""
    profile: pd.DataFrame
    profile_scores: pd.DataFrame

    @property
    def worlds(self) -> list[str]:
        return list(self.analyses)

    @property
    def labels(self) -> list[str]:
        return next(iter(self.analyses.values())).log.labels


def study_dirs(name: str, runs_dir: Path) -> dict[str, Path]:
    """world -> sweep folder, of every sweep under ``runs_dir`` that is a world of study ``name`` (its order: as
    the worlds were listed, read from each sweep's position in the study)."""
    found = {}
    for path in sorted(runs_dir.glob("*/sweep.yaml")):
        sweep = read_sweep(path.parent)
        if sweep.study == name:
            found[str(sweep.data.get("world", path.parent.name))] = path.parent
    return found


def analyse_study(name: str, dirs: dict[str, Path]) -> Study:
    analyses = {}
    for world, sweep_dir in dirs.items():
        log = load_sweep(sweep_dir, read_sweep(sweep_dir).report.metric)
        if has_curves(log):
            analyses[world] = analyse(log, log.sweep.report)
    if not analyses:
        raise ValueError(f"study {name}: no world has a finished run")
    per_run = pd.concat(
        [a.per_run.assign(world=w, target=w + "/" + a.per_run["target"]) for w, a in analyses.items()],
        ignore_index=True,
    )
    labels = next(iter(analyses.values())).log.labels
    profile, scores = aggregate.profiles(per_run, labels, next(iter(analyses.values())).cfg)
    return Study(name, analyses, per_run, profile, scores)


def times(analysis: Analysis, axis: str) -> dict[str, tuple[float, float]]:
    """Per method, (median first-evaluation time, median interpolated time) to the headline target."""
    target = headline_target(analysis.targets)
    out = {}
    for method in analysis.log.labels:
        first = ttt_row(analysis.ttt_index, method, target, axis)
        interp = ttt_row(analysis.ttt_index, method, target, axis, "interpolated")
        out[method] = (first.point if first else np.inf, interp.point if interp else np.inf)
    return out


def ordering(analysis: Analysis, axis: str) -> list[str]:
    """The methods that reached the headline target (median over seeds), soonest first; misses left out."""
    timed = times(analysis, axis)
    return sorted((m for m, t in timed.items() if np.isfinite(t[0])), key=timed.get)


def missed(analysis: Analysis, axis: str) -> list[str]:
    return [m for m, t in times(analysis, axis).items() if not np.isfinite(t[0])]


def order_text(analysis: Analysis, axis: str) -> str:
    timed, order = times(analysis, axis), ordering(analysis, axis)
    parts = [order[0]] if order else []
    for a, b in zip(order, order[1:]):
        parts.append(("= " if timed[a] == timed[b] else "< ") + b)
    gone = missed(analysis, axis)
    text = " ".join(parts) if parts else "none reached it"
    return text + (f"; missed: {', '.join(gone)}" if gone else "")


def compare(x: tuple[float, float], y: tuple[float, float]) -> int:
    """-1 when ``x`` is sooner, 1 when ``y`` is, 0 when neither (equal medians; both missed)."""
    return 0 if x == y else (-1 if x < y else 1)


def pair_orders(timed: dict[str, dict[str, tuple[float, float]]]) -> dict[tuple[str, str], dict[str, int]]:
    """For every pair of methods (a, b), per world (``timed``: world -> method -> times, as ``times`` gives
    them): -1 when a reaches the target sooner, 1 when b does, 0 when the world cannot order them. A method that
    missed it (median infinity) comes after every method that reached it."""
    labels = list(dict.fromkeys(m for t in timed.values() for m in t))
    return {
        (a, b): {w: compare(t[a], t[b]) for w, t in timed.items() if a in t and b in t}
        for a, b in itertools.combinations(labels, 2)
    }


def flips(orders: dict[tuple[str, str], dict[str, int]]) -> dict[tuple[str, str], dict[str, int]]:
    """The pairs that one world orders one way and another world the other way."""
    return {pair: o for pair, o in orders.items() if {-1, 1} <= set(o.values())}


def flip_text(pair: tuple[str, str], order: dict[str, int]) -> str:
    a, b = pair
    sooner = {v: ", ".join(w for w, x in order.items() if x == v) for v in (-1, 1)}
    return f"{a} before {b} in {sooner[-1]}, {b} before {a} in {sooner[1]}"


def ordering_finding(study: Study, axis: str) -> str:
    words = {"steps": "optimizer steps", "seconds": "train seconds"}[axis]
    orders = pair_orders({w: times(a, axis) for w, a in study.analyses.items()})
    ordered = {pair: o for pair, o in orders.items() if any(o.values())}
    target = headline_target(next(iter(study.analyses.values())).targets)
    head = (
        f"**Ordering in {words} to the {target} target** (medians over seeds per world; a method that missed it "
        f"comes after every method that reached it; {len(ordered)} pairs of methods ordered in at least one world)"
    )
    changed = flips(ordered)
    if not changed:
        return f"{head}: it holds in every world ({', '.join(study.worlds)}): no pair changes order."
    parts = [flip_text(pair, order) for pair, order in list(changed.items())[:4]]
    more = f"; and {len(changed) - 4} more pairs" if len(changed) > 4 else ""
    return f"{head}: it flips for {len(changed)} of them: " + "; ".join(parts) + more + "."


def leader_finding(study: Study) -> str:
    parts = []
    for world, analysis in study.analyses.items():
        steps, seconds = (ordering(analysis, axis) for axis in ("steps", "seconds"))
        lead = [order[0] if order else "none reached it" for order in (steps, seconds)]
        parts.append(f"{world}: {lead[0]} in steps, {lead[1]} in seconds")
    return "**Soonest to the headline target, per world**: " + "; ".join(parts) + "."


def profile_finding(study: Study) -> str:
    scores = study.profile_scores
    workloads = study.per_run["target"].nunique()
    parts = []
    for axis in ("steps", "seconds"):
        top = scores[scores["axis"] == axis].sort_values("score", ascending=False)
        parts.append(f"in {axis}: " + ", ".join(f"{r.method} {r.score:.3f}" for r in top.itertuples(index=False)))
    return (
        f"**Across all {workloads} workloads** ({len(study.worlds)} worlds x targets; AlgoPerf performance-profile "
        "score, median over seeds per workload first): " + "; ".join(parts) + "."
    )


def study_findings(study: Study) -> list[str]:
    lines = [ordering_finding(study, "steps"), ordering_finding(study, "seconds"), leader_finding(study)]
    return [f"- {line}" for line in [*lines, profile_finding(study)]]


def world_table(study: Study) -> pd.DataFrame:
    """Per world: its zero-shot floor, the headline target, the orderings, and each method's selected setting."""
    rows = []
    for world, analysis in study.analyses.items():
        target = headline_target(analysis.targets)
        value = analysis.targets.set_index("target").loc[target, "value"]
        row = {"world": world, "target": f"{target} ({tables.fmt(value, 2)})"}
        row["floor"] = tables.fmt(analysis.target_set.floor, 1)
        row["order in steps"] = order_text(analysis, "steps")
        row["order in seconds"] = order_text(analysis, "seconds")
        rows.append(row)
    return pd.DataFrame(rows)


def render_study(study: Study, captions: dict[str, str]) -> str:
    lines = [f"# Study report: {study.name} (synthetic DiDeMo proxy, {len(study.worlds)} worlds)", ""]
    lines += ["## Findings", "", *study_findings(study), ""]
    lines += ["## Per world", "", tables.markdown_table(world_table(study)), ""]
    links = ", ".join(f"[{w}](../{study.name}-{w}/report.md)" for w in study.worlds)
    lines += [f"Each world's own report: {links}.", ""]
    lines += ["## AlgoPerf performance profile over every workload", ""]
    lines += [tables.markdown_table(tables.profile_table(study.profile_scores)), ""]
    for path, caption in captions.items():
        lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_study_report(name: str, runs_dir: Path, out_dir: Path) -> Path:
    """``out_dir/report.md`` (and its figure and tables) of study ``name`` from its worlds' run logs."""
    dirs = study_dirs(name, runs_dir)
    if not dirs:
        raise ValueError(f"study {name}: no sweep under {runs_dir} is one of its worlds")
    study = analyse_study(name, dirs)
    cfg = next(iter(study.analyses.values())).cfg
    styles = figures.method_styles(study.labels)
    note = f"workloads = worlds x targets; median over seeds first; tau up to {cfg.profile_max_ratio:g}"
    fig = figures.profile_figure(study.profile, styles, note)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=cfg.dpi)
    atomic_write_bytes(out_dir / "figures" / "performance_profile.png", buffer.getvalue())
    atomic_write_text(out_dir / "profile_scores.csv", study.profile_scores.to_csv(index=False))
    atomic_write_text(out_dir / "worlds.csv", world_table(study).to_csv(index=False))
    captions = {"figures/performance_profile.png": "AlgoPerf performance profiles over every (world, target)"}
    path = out_dir / "report.md"
    atomic_write_text(path, render_study(study, captions))
    return path


def is_study(name: str, runs_dir: Path) -> bool:
    return not SweepPaths(runs_dir / name).sweep.is_file() and bool(study_dirs(name, runs_dir))
