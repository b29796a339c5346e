"""Targets fixed before the scored runs: computed once, written with their provenance to ``targets.json``.

Rules (``TargetsConfig``):
- ``reference`` (the shipped sweeps): every method of the sweep runs on the reference seeds, which are never
  scored. The reference value is the highest over methods of the median over reference seeds of each run's best
  val value (``median_best``, AlgoPerf's target rule: the median "prevents selecting a lucky outlier"), or the best
  of any reference run (``best``). A failed or diverged reference run counts as the worst value, never dropped.
- ``gain`` (default): target_f = floor + f x (reference - floor), where the floor is zero-shot meanP on the same
  data (common to every method, recorded in the file), so a target measures training, not initialisation;
  ``fraction``: target_f = f x reference.
- ``absolute``: the configured values (written before any run).
- ``posthoc`` (no ``targets`` section): the scored runs set their own finish line (``f x`` the best of any scored
  run); nothing is written and the report flags it.

The file is written before the first scored run and never changed by one; a rerun whose targets configuration
differs from the file's is a config mismatch (one line, exit 2).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tvr_convbench.bench.config import RunConfig, SweepConfig, TargetsConfig, higher_is_better, target_labels
from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.files import atomic_write_json, from_json_safe, json_safe
from tvr_convbench.core.schema import RunPaths, SweepPaths

FINISHED = ("done", "failed", "diverged")
"""statuses of a reference run that can enter the reference value (failed and diverged count as the worst)"""


class TargetsError(RuntimeError):
    """The targets cannot be fixed (e.g. a reference run is unfinished, or none finished)."""


@dataclass(frozen=True)
class TargetSet:
    """The targets of a sweep and where they come from (the content of ``targets.json``)."""

    metric: str
    source: str
    rule: str
    reference: str
    fractions: list[float]
    labels: list[str]
    values: list[float]
    floor: float | None
    reference_value: float | None
    reference_runs: dict[str, float]
    """reference run -> its best val value (-inf / +inf: failed or diverged)"""
    seeds: list[int]
    methods: list[str]

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def protocol(self) -> dict:
        """What a rerun must agree on (the configuration part of the file)."""
        return protocol_of(
            self.metric, self.source, self.rule, self.reference, self.fractions, self.seeds, self.methods
        )

    def describe(self) -> str:
        """The provenance in one sentence, for reports."""
        if self.source == "absolute":
            return "absolute values from the sweep's targets section (fixed before any run)"
        if self.source == "posthoc":
            return f"post hoc: fractions of the best value of any scored run ({_fmt(self.reference_value)})"
        unit = "tuning trial" if self.source == "tuning" else "method"
        rule = f"median over seeds of each run's best, highest over {unit}s"
        rule = rule if self.reference == "median_best" else "best of any reference run"
        runs = "tuning runs" if self.source == "tuning" else "reference runs"
        scale = (
            f"floor {_fmt(self.floor)} (zero-shot meanP) + f x (reference - floor)"
            if self.rule == "gain"
            else "f x reference"
        )
        return (
            f"{len(self.reference_runs)} {runs} (seeds {self.seeds}, never scored); reference "
            f"{_fmt(self.reference_value)} = {rule}; targets = {scale}"
        )

    def table(self) -> pd.DataFrame:
        """target, fraction, value: the analysis's target table."""
        return pd.DataFrame(
            {"target": self.labels, "fraction": self.fractions or [math.nan] * len(self.values), "value": self.values}
        )

    def write(self, path: Path) -> None:
        atomic_write_json(path, json_safe(asdict(self)), indent=2)

    @classmethod
    def read(cls, path: Path) -> TargetSet:
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: from_json_safe(v) for k, v in raw.items()})
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"{path}: unreadable targets file ({err}); delete it to fix the targets again") from None


def protocol_of(metric: str, source: str, rule: str, reference: str, fractions, seeds, methods) -> dict:  # noqa: ANN001
    return {
        "metric": metric,
        "source": source,
        "rule": rule,
        "reference": reference,
        "fractions": [float(f) for f in fractions],
        "seeds": [int(s) for s in seeds],
        "methods": list(methods),
    }


def expected_protocol(sweep: SweepConfig) -> dict:
    t = sweep.targets
    fractions = [] if t.source == "absolute" else t.fractions
    seeds = {"reference": t.seeds, "tuning": sweep.tuning.seeds}.get(t.source, ())
    protocol = protocol_of(sweep.report.metric, t.source, t.rule, t.reference, fractions, seeds, _labels(sweep))
    return protocol | ({"values": [float(v) for v in t.values]} if t.source == "absolute" else {})


def check_targets_file(sweep: SweepConfig, sweep_dir: Path) -> None:
    """Refuse a rerun whose targets configuration differs from the ``targets.json`` already written."""
    path = SweepPaths(sweep_dir).targets
    if not path.exists():
        return
    saved = TargetSet.read(path)
    found = saved.protocol() | ({"values": saved.values} if saved.source == "absolute" else {})
    expected = expected_protocol(sweep)
    changed = sorted(k for k in expected if found.get(k) != expected[k])
    if changed:
        raise ConfigError(
            f"{path}: the targets were fixed with another configuration (changed: {', '.join(changed)}); "
            f"use a new sweep name, or delete {path} (and the runs scored against it) to fix them again"
        )


def fix_targets(sweep: SweepConfig, sweep_dir: Path, floor: float | None) -> TargetSet | None:
    """Write ``targets.json`` (reference runs finished, or absolute values) and return it; the file already there
    is kept (``check_targets_file`` has checked it). ``None`` for post hoc targets (nothing to write)."""
    path = SweepPaths(sweep_dir).targets
    if sweep.targets.source == "posthoc":
        return None
    if path.exists():
        return TargetSet.read(path)
    targets = compute_targets(sweep, sweep_dir, floor)
    targets.write(path)
    return targets


def compute_targets(sweep: SweepConfig, sweep_dir: Path, floor: float | None) -> TargetSet:
    t, metric = sweep.targets, sweep.report.metric
    if t.source == "absolute":
        values = [float(v) for v in t.values]
        labels = target_labels(t, metric)
        return TargetSet(
            metric, "absolute", t.rule, t.reference, [], labels, values, floor, None, {}, [], _labels(sweep)
        )
    runs = sweep.reference_runs()
    bests = {cfg.run: reference_best(cfg, sweep_dir, metric) for cfg in runs}
    groups = {cfg.run: cfg.label if cfg.trial is None else f"{cfg.label}/t{cfg.trial}" for cfg in runs}
    ref = reference_value(bests, groups, t.reference, metric)
    values = target_values(t, ref, floor)
    labels = target_labels(t, metric)
    seeds = sweep.tuning.seeds if t.source == "tuning" else t.seeds
    return TargetSet(
        metric,
        t.source,
        t.rule,
        t.reference,
        list(t.fractions),
        labels,
        values,
        floor,
        ref,
        bests,
        list(seeds),
        _labels(sweep),
    )


class TargetsWarning(UserWarning):
    """Targets that cannot measure convergence (e.g. the reference runs gained nothing over the floor)."""


def target_values(t: TargetsConfig, reference: float, floor: float | None) -> list[float]:
    """The target values of the fractions: ``gain`` from the floor to the reference, or ``fraction`` of it."""
    if t.rule == "gain":
        if floor is None:
            raise TargetsError("the gain rule needs the zero-shot floor, which could not be measured")
        if reference == floor:
            warnings.warn(
                f"the reference runs' best ({reference:g}) is the zero-shot floor: no run gained anything, so every "
                f"target equals the floor and is met at step 0 (it measures the initialisation, not convergence)",
                TargetsWarning,
                stacklevel=2,
            )
        return [float(floor + f * (reference - floor)) for f in t.fractions]
    return [float(f * reference) for f in t.fractions]


def reference_best(cfg: RunConfig, sweep_dir: Path, metric: str) -> float:
    """A reference run's best val value; the worst possible value for a failed or diverged run."""
    paths = RunPaths(sweep_dir / cfg.run)
    status = paths.status.read_text().strip() if paths.status.exists() else "missing"
    if status not in FINISHED:
        raise TargetsError(f"reference run {cfg.run} is {status}: the targets need every reference run finished")
    worst = -math.inf if higher_is_better(metric) else math.inf
    if status != "done":
        return worst
    rows = pd.read_csv(paths.metrics, dtype={"split": str, "metric": str})
    values = rows.loc[(rows["split"] == "val") & (rows["metric"] == metric), "value"].to_numpy(float)
    values = values[np.isfinite(values)]
    if not len(values):
        return worst
    return float(values.max() if higher_is_better(metric) else values.min())


def reference_value(bests: dict[str, float], labels: dict[str, str], rule: str, metric: str) -> float:
    """``median_best``: best over methods of the median over seeds of each run's best; ``best``: best of any run."""
    better = max if higher_is_better(metric) else min
    if rule == "best":
        value = better(bests.values())
    else:
        per_method: dict[str, list[float]] = {}
        for run, best in bests.items():
            per_method.setdefault(labels[run], []).append(best)
        value = better(float(np.median(v)) for v in per_method.values())
    if not math.isfinite(value):
        raise TargetsError("no reference run finished with a finite value: the targets cannot be fixed")
    return float(value)


def posthoc_targets(metric: str, fractions, bests: dict[str, float]) -> TargetSet:  # noqa: ANN001
    """Targets from the scored runs themselves (``f x`` the best of any run), for sweeps without a targets section
    and for run logs written before targets were fixed in advance."""
    finite = [v for v in bests.values() if math.isfinite(v)]
    ref = max(finite) if finite else math.nan
    if not higher_is_better(metric):
        raise TargetsError(f"{metric} is lower-is-better: post hoc fractions are undefined, give absolute targets")
    labels = target_labels(TargetsConfig(fractions=tuple(fractions)), metric)
    return TargetSet(
        metric,
        "posthoc",
        "fraction",
        "best",
        list(fractions),
        labels,
        [float(f * ref) for f in fractions],
        None,
        ref,
        {},
        [],
        [],
    )


def _labels(sweep: SweepConfig) -> list[str]:
    return [spec.label for spec in sweep.methods]


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
