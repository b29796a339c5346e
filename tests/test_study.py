"""A study: a sweep over several proxy worlds runs one sweep per world (each with its own tuning and targets),
and its report gives the cross-world verdict: the AlgoPerf profile over (world, target) workloads and whether the
ordering holds in every world."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tvr_convbench.bench.analysis.study import flips, pair_orders
from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import load_sweep, load_sweeps

STUDY = {
    "name": "tiny",
    "methods": ["meanp", "xpool"],
    "seeds": [0, 1],
    "worlds": ["default", "distractors"],
    "data": {"name": "proxy", "train_videos": 128, "val_videos": 48, "test_videos": 16, "width": 16,
             "max_words": 16, "vocab_size": 300},
    "trainer": {"max_steps": 12, "val_every": 4, "batch_size": 16, "backbone_lr": 1.0e-4},
    "targets": {"source": "tuning", "fractions": [0.5, 0.9]},
    "tuning": {"space": {"lr": [1.0e-4, 1.0e-3]}, "tied": {"backbone_lr": "lr"}, "seeds": [50]},
    "report": {"bootstrap_reps": 100, "band_reps": 100, "dpi": 50},
    "wandb": {"mode": "disabled"},
}  # fmt: skip


def test_a_flip_is_a_pair_two_worlds_order_opposite_ways_and_a_miss_comes_last():
    inf = (math.inf, math.inf)
    timed = {
        "w1": {"a": (10.0, 9.0), "b": (20.0, 18.0), "c": inf, "d": inf},
        "w2": {"a": inf, "b": (30.0, 25.0), "c": (30.0, 25.0), "d": inf},
        "w3": {"a": (10.0, 8.0), "b": (10.0, 9.0), "c": inf, "d": inf},
    }
    orders = pair_orders(timed)
    assert orders[("a", "b")] == {"w1": -1, "w2": 1, "w3": -1}  # a reached first; in w2 a missed: after b
    assert orders[("b", "c")] == {"w1": -1, "w2": 0, "w3": -1}  # equal medians: no order
    assert orders[("c", "d")] == {"w1": 0, "w2": -1, "w3": 0}  # both missed: no order
    assert set(flips(orders)) == {("a", "b"), ("a", "c")}


def test_worlds_expand_into_one_sweep_each(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    sweeps = load_sweeps(str(path))
    assert [s.name for s in sweeps] == ["tiny-default", "tiny-distractors"]
    assert [s.data["world"] for s in sweeps] == ["default", "distractors"] and {s.study for s in sweeps} == {"tiny"}
    assert sweeps[1].data["distractors"] == 8 and sweeps[0].data["distractors"] == 3
    assert load_sweep(str(path), world="distractors").name == "tiny-distractors"
    with pytest.raises(ValueError, match="name one with --world"):
        load_sweep(str(path))


@pytest.mark.slow
def test_a_study_runs_every_world_and_reports_the_verdict(tmp_path: Path):
    path, runs, reports = tmp_path / "tiny.yaml", tmp_path / "runs", tmp_path / "reports"
    path.write_text(yaml.safe_dump(STUDY))
    assert main(["sweep", str(path), "--runs-dir", str(runs), "--reports-dir", str(reports), "--no-progress"]) == 0
    for world in STUDY["worlds"]:
        assert (runs / f"tiny-{world}" / "targets.json").is_file() and (
            runs / f"tiny-{world}" / "selection.json"
        ).is_file()
        assert (reports / f"tiny-{world}" / "report.md").is_file()
    text = (reports / "tiny" / "report.md").read_text()
    assert text.startswith("# Study report: tiny (synthetic DiDeMo proxy, 2 worlds)")
    assert "**Ordering in optimizer steps" in text and "workloads" in text
    assert "default/50% (steps)" in text and "distractors/90% (steps)" in text  # workloads = world x target
    assert main(["report", "tiny", "--runs-dir", str(runs), "--reports-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "tiny" / "report.md").read_text() == text  # the report is rebuilt from the log
