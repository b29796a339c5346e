"""Report configuration: which validation metric, which targets, and how intervals are estimated.

The sweep's ``sweep.yaml`` may hold a ``report`` mapping of these fields; absent keys take the defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

Reference = Literal["best", "median_best"]
Aggregate = Literal["iqm", "median"]
METRIC_NAMES = tuple(f"{d}/{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR"))
"""The ten retrieval metrics in the order bench/metrics.py defines them."""
METRIC_PATTERN = re.compile(r"^(t2v|v2t)/(R@\d+|MdR|MnR)$")


def higher_is_better(metric: str) -> bool:
    """Recall (``R@K``) grows with quality; the rank metrics (``MdR``, ``MnR``) shrink."""
    return "/R@" in metric


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ReportConfig:
    """What the convergence report measures and how (the ``report`` mapping of ``sweep.yaml``)."""

    metric: str = "t2v/R@1"
    """Validation metric for model selection, targets, curves and AUC: one of the ten retrieval metrics."""
    targets: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
    """Targets as fractions in (0, 1] of the reference value; used when ``absolute_targets`` is not given."""
    absolute_targets: tuple[float, ...] | None = None
    """Targets in metric units; replaces the fractions (required for the lower-is-better MdR/MnR)."""
    reference: Reference = "best"
    """Reference of the fractions: the best value any run reached ("best"), or the highest over methods of the
    median over seeds of each run's best ("median_best", AlgoPerf's target rule)."""
    aggregate: Aggregate = "iqm"
    """Central statistic over seeds for curves, best value and AUC (time to target reports median and IQM)."""
    confidence: float = 0.95
    """Coverage of the percentile bootstrap intervals, in (0, 1)."""
    bootstrap_reps: int = 10_000
    """Bootstrap resamples per interval (at least 100)."""
    band_reps: int = 2_000
    """Bootstrap resamples per point of the figures' curve bands (visual only; rliable uses 2,000 for profiles)."""
    bootstrap_seed: int = 0
    """Seed of the bootstrap; every interval is a deterministic function of it, the data and the method label."""
    profile_max_ratio: float = 4.0
    """Largest ratio to the fastest method shown in performance profiles (AlgoPerf uses 4); above 1."""
    curve_points: int = 50
    """Points of the common train-seconds grid the metric curves are interpolated onto (at least 2)."""
    loss_window: int = 0
    """Moving-average window (optimizer steps) of the training-loss figure; 0 = max_steps // 50."""
    dpi: int = 150
    """Resolution of the PNG figures (at least 50)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.absolute_targets is not None:
            object.__setattr__(self, "absolute_targets", tuple(self.absolute_targets))
        self._check_metric()
        self._check_targets()
        self._check_choices()
        self._check_numbers()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> ReportConfig:
        """Build from a ``report`` mapping (None -> defaults); unknown keys raise ValueError."""
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"ReportConfig: unknown field(s) {unknown}")
        return cls(**mapping)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def _check_metric(self) -> None:
        if not isinstance(self.metric, str) or not METRIC_PATTERN.match(self.metric):
            raise ValueError(f"ReportConfig.metric: expected e.g. 't2v/R@1' or 'v2t/MdR', got {self.metric!r}")

    def _check_targets(self) -> None:
        if not self.targets or not all(_is_number(f) and 0 < f <= 1 for f in self.targets):
            raise ValueError(f"ReportConfig.targets: need one or more fractions in (0, 1], got {self.targets}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"ReportConfig.targets: duplicate fractions in {self.targets}")
        absolute = self.absolute_targets
        if absolute is not None and (not absolute or not all(_is_number(v) for v in absolute)):
            raise ValueError(f"ReportConfig.absolute_targets: need one or more finite numbers, got {absolute}")
        if absolute is not None and len(set(absolute)) != len(absolute):
            raise ValueError(f"ReportConfig.absolute_targets: duplicate values in {absolute}")
        if absolute is None and not self.higher_is_better:
            raise ValueError(
                f"ReportConfig.absolute_targets: {self.metric} is lower-is-better; fractions of a reference are "
                "defined for recall metrics only, so give absolute targets"
            )

    def _check_choices(self) -> None:
        if self.reference not in get_args(Reference):
            raise ValueError(f"ReportConfig.reference: one of {get_args(Reference)}, got {self.reference!r}")
        if self.aggregate not in get_args(Aggregate):
            raise ValueError(f"ReportConfig.aggregate: one of {get_args(Aggregate)}, got {self.aggregate!r}")

    def _check_numbers(self) -> None:
        checks = {
            "confidence": _is_number(self.confidence) and 0 < self.confidence < 1,
            "bootstrap_reps": _is_int(self.bootstrap_reps) and self.bootstrap_reps >= 100,
            "band_reps": _is_int(self.band_reps) and self.band_reps >= 100,
            "bootstrap_seed": _is_int(self.bootstrap_seed) and self.bootstrap_seed >= 0,
            "profile_max_ratio": _is_number(self.profile_max_ratio) and self.profile_max_ratio > 1,
            "curve_points": _is_int(self.curve_points) and self.curve_points >= 2,
            "loss_window": _is_int(self.loss_window) and self.loss_window >= 0,
            "dpi": _is_int(self.dpi) and self.dpi >= 50,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ReportConfig.{name}: invalid value {getattr(self, name)!r}")
