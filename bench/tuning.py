"""The tuning ruleset (AlgoPerf's external tuning, in our terms): every method gets the same search space and the
same trials on tuning seeds that are never scored, a selection rule declared before anything runs picks each
method's setting, and the scored seeds then run it.

- ``TuningConfig`` (the sweep's ``tuning`` section): a search ``space`` of trainer settings on log grids (e.g. the
  head ``lr`` and the backbone/adapter ``backbone_lr``), optionally ``tied`` settings that follow a tuned one, the
  ``search`` (``grid``: every combination; ``axes``: one setting at a time through the sweep's own value, which
  must be in its grid), the tuning ``seeds`` and the selection ``rule``.
- The tuning runs are ordinary runs (resumable, logged, exported), named ``<label>-t<k>-s<seed>``; they are also
  the reference runs that fix the targets (``bench.targets``), so scored seeds never set a target.
- ``select`` applies the rule to the finished trials: per method, the trial with the fewest median (over tuning
  seeds) steps (or seconds) to the rule's target, ties broken by the median best val value (or AUC), then by
  trial order; a selected value at an end of its grid is flagged (the grid was too narrow for that method).
  ``selection.json`` records the space, the trials, the rule and each method's choice with why; it is written once
  before the first scored run and a rerun with another space or rule is a config mismatch.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.files import atomic_write_json, from_json_safe, json_safe

TUNABLE = ("lr", "backbone_lr", "weight_decay", "warmup", "grad_clip")
"""trainer settings a tuning space may search (positive numbers)"""


@dataclass(frozen=True)
class SelectionRule:
    """How a method's setting is chosen among its trials (declared before anything runs)."""

    target: str = "90%"
    """the target whose time decides (a target label of the sweep, e.g. ``90%``)"""
    axis: Literal["steps", "seconds"] = "steps"
    """fewest median optimizer steps, or train seconds, to the target"""
    tie: Literal["best", "auc"] = "best"
    """ties (equal medians, e.g. two trials that both miss) broken by the median best val value, or AUC"""


@dataclass(frozen=True)
class TuningConfig:
    """The tuning ruleset: the same search space and trials for every method, on seeds never scored."""

    space: dict = field(default_factory=dict)
    """trainer setting -> its grid of values (positive numbers, e.g. a log grid containing the official value)"""
    tied: dict = field(default_factory=dict)
    """trainer setting -> the tuned setting it follows in every trial (e.g. ``backbone_lr: lr``)"""
    search: Literal["grid", "axes"] = "grid"
    """``grid``: every combination of the space; ``axes``: one setting at a time through the sweep's own values"""
    seeds: tuple[int, ...] = ()
    """tuning seeds (disjoint from the scored seeds and from targets.seeds)"""
    rule: SelectionRule = field(default_factory=SelectionRule)
    """the selection rule"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))
        for key, values in self.space.items():
            _check_values(key, values)
        object.__setattr__(self, "space", {k: tuple(float(v) for v in vs) for k, vs in self.space.items()})
        for key, source in self.tied.items():
            if key not in TUNABLE or key in self.space:
                raise ValueError(
                    f"tied.{key}: must be a tunable trainer setting not in the space ({', '.join(TUNABLE)})"
                )
            if source not in self.space:
                raise ValueError(f"tied.{key}: follows {source!r}, which is not a key of the space")
        if self.space and not self.seeds:
            raise ValueError("seeds: a tuning space needs tuning seeds (never scored), e.g. seeds: [100]")
        if len(set(self.seeds)) < len(self.seeds) or any(not 0 <= s < 2**32 for s in self.seeds):
            raise ValueError(f"seeds: need distinct seeds in [0, 2**32), got {list(self.seeds)}")

    @property
    def enabled(self) -> bool:
        return bool(self.space)

    def trials(self, official: dict[str, float]) -> list[dict[str, float]]:
        """Every trial's settings (tied ones included), in a fixed order: the same list for every method.
        ``official`` holds the sweep's own trainer values (the ``axes`` search goes through them)."""
        keys = sorted(self.space)
        if self.search == "grid":
            points = [dict(zip(keys, combo)) for combo in itertools.product(*(self.space[k] for k in keys))]
        else:
            points = []
            for key in keys:
                points += [{**{k: official[k] for k in keys}, key: v} for v in self.space[key]]
            points = list({tuple(sorted(p.items())): p for p in points}.values())  # the centre once
        return [{**p, **{t: p[s] for t, s in self.tied.items()}} for p in points]


def _check_values(key: str, values: Any) -> None:
    if key not in TUNABLE:
        raise ValueError(f"space.{key}: not a tunable trainer setting (tunable: {', '.join(TUNABLE)})")
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"space.{key}: expected a non-empty list of values, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"space.{key}: every value must be a positive number, got {value!r}")
    if len(set(values)) < len(values):
        raise ValueError(f"space.{key}: duplicate values in {list(values)}")


def check_official(tuning: TuningConfig, official: dict[str, float], where: str) -> None:
    """The ``axes`` search goes through the sweep's own values: each must be in its grid."""
    if tuning.search != "axes":
        return
    for key, values in tuning.space.items():
        if float(official[key]) not in values:
            raise ConfigError(
                f"{where}: tuning.space.{key}: the axes search needs the sweep's own value "
                f"{official[key]!r} in the grid {list(values)}"
            )


def trial_label(index: int) -> str:
    return f"t{index}"


# --- selection -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """One method's selected trial, and why."""

    trial: int
    settings: dict[str, float]
    time: float
    """median over tuning seeds of the time to the rule's target (+inf: missed)"""
    tie_value: float
    edge: list[str]
    """tuned settings whose selected value is an end of its grid"""
    why: str


def choose(
    trials: list[dict[str, float]], times: np.ndarray, ties: np.ndarray, tuning: TuningConfig, higher: bool
) -> Choice:
    """Apply the rule to one method's trials: times and tie values are [K trials, S seeds]."""
    median_time = np.median(times, axis=1)  # [K]
    median_tie = np.median(ties, axis=1)  # [K]
    order = sorted(range(len(trials)), key=lambda k: (median_time[k], -median_tie[k] if higher else median_tie[k], k))
    best = order[0]
    tied = [k for k in order if median_time[k] == median_time[best]]
    edge = [key for key, grid in tuning.space.items() if trials[best][key] in (min(grid), max(grid)) and len(grid) > 1]
    rule = tuning.rule
    why = f"fewest median {rule.axis} to {rule.target} ({_fmt(median_time[best])}) among {len(trials)} trials" + (
        f"; {len(tied)} tied, broken by the median {rule.tie} ({_fmt(median_tie[best])})" if len(tied) > 1 else ""
    )
    return Choice(best, dict(trials[best]), float(median_time[best]), float(median_tie[best]), edge, why)


def _fmt(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.4g}"


@dataclass(frozen=True)
class Selection:
    """The content of ``selection.json``."""

    space: dict
    tied: dict
    search: str
    seeds: list[int]
    rule: dict
    trials: list[dict[str, float]]
    choices: dict[str, dict]
    """label -> Choice fields"""

    def protocol(self) -> dict:
        return {
            "space": self.space,
            "tied": self.tied,
            "search": self.search,
            "seeds": self.seeds,
            "rule": self.rule,
            "trials": self.trials,
        }

    def settings(self, label: str) -> dict[str, float]:
        return dict(self.choices[label]["settings"])

    def write(self, path: Path) -> None:
        atomic_write_json(path, json_safe(self.__dict__), indent=2)

    @classmethod
    def read(cls, path: Path) -> Selection:
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: from_json_safe(v) for k, v in raw.items()})
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"{path}: unreadable selection ({err}); delete it to select again") from None


def protocol_of(tuning: TuningConfig, trials: list[dict[str, float]]) -> dict:
    return {
        "space": {k: list(v) for k, v in tuning.space.items()},
        "tied": dict(tuning.tied),
        "search": tuning.search,
        "seeds": list(tuning.seeds),
        "rule": tuning.rule.__dict__ | {},
        "trials": trials,
    }
