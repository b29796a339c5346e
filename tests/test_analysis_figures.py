"""The figure functions return Figures (never show or save) and cope with one seed, one method, all misses and
no training loss; line styles and markers tell the methods apart without colour."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tvr_convbench.bench.analysis import figures

INF = math.inf
TARGETS = pd.DataFrame({"target": ["50%", "90%"], "value": [20.0, 36.0]})


def render(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    return buffer.getvalue()


def test_styles_differ_without_colour():
    styles = figures.method_styles([f"m{i}" for i in range(8)])
    pairs = {(s["linestyle"], s["marker"]) for s in styles.values()}
    assert len({str(ls) for ls, _ in pairs}) == 8 and len({m for _, m in pairs}) == 8


def test_curve_figure_with_one_seed_has_no_band():
    bands = pd.DataFrame({"method": "a", "x": [0.0, 10, 20], "center": [0.0, 20, 40]})
    bands = bands.assign(lower=np.nan, upper=np.nan)
    fig = figures.curve_figure(
        bands, TARGETS, "val t2v/R@1", "optimizer step", figures.method_styles(["a"]), "one seed"
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 1 + len(TARGETS) and not ax.collections  # the line, the target levels, no band
    assert render(fig)[:4] == b"\x89PNG"


def test_time_to_target_figure_draws_misses_at_the_edge():
    rows = [
        ("a", t, "median", p, lo, hi, 3, axis, c)
        for axis in ("steps", "seconds")
        for t, p, lo, hi, c in (("50%", 20.0, 10.0, 30.0, 0), ("90%", INF, INF, INF, 3))
    ]
    ttt = pd.DataFrame(
        rows, columns=["method", "target", "statistic", "point", "lower", "upper", "runs", "axis", "censored"]
    )
    fig = figures.time_to_target_figure(ttt, {"steps": 100.0, "seconds": 2.0}, figures.method_styles(["a"]), "")
    steps_axis = fig.axes[0]
    infinity_labels = [t for t in steps_axis.texts if t.get_text() == "∞"]
    assert len(infinity_labels) == 1 and infinity_labels[0].xy[0] == figures.CENSORED_AT * 100
    render(fig)


def test_loss_and_profile_figures_edge_cases():
    empty = pd.DataFrame(columns=["method", "metric", "step", "value"])
    fig = figures.loss_figure(empty, figures.method_styles(["a"]), "")
    assert "no training loss logged" in [t.get_text() for t in fig.axes[0].texts]
    profile = pd.DataFrame({"axis": ["steps", "steps", "seconds", "seconds"], "tau": [1.0, 4.0] * 2})
    profile = profile.assign(method="a", fraction=[0.5, 1.0, 0.0, 0.25])
    fig = figures.profile_figure(profile, figures.method_styles(["a"]), "")
    assert [len(ax.lines) for ax in fig.axes] == [1, 1]
    render(fig)
