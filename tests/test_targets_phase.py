"""Targets fixed before the scored runs (issue 14): the reference runs (every method on ``targets.seeds``, never
scored) run first, then ``runs/<sweep>/targets.json`` is written, then the scored runs; ``tvr-convbench targets``
fixes them from finished reference runs and ``tvr-convbench train --run <scored>`` refuses to start before.

Before: the targets came from the scored runs themselves, after the fact (``targets`` was an unknown key).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.helpers import folder_state, metric_rows, one_line_error, sweep_cli, tiny_sweep
from tvr_convbench.bench import trainer
from tvr_convbench.bench.cli import main

REFERENCE = {"source": "reference", "seeds": [100, 101], "fractions": [0.5, 0.9]}
REFERENCE_RUNS = ["meanp-s100", "meanp-s101", "seqtransf-s100", "seqtransf-s101"]
SCORED_RUNS = ["meanp-s0", "seqtransf-s0"]


def record_starts(monkeypatch: pytest.MonkeyPatch, targets: Path) -> list[tuple[str, str, bool]]:
    """(run, phase, whether targets.json existed) each time a run starts training."""
    starts, original = [], trainer.train

    def train(cfg, run_dir, wandb_root, progress=True):  # noqa: ANN001, ANN202
        starts.append((cfg.run, cfg.phase, targets.exists()))
        return original(cfg, run_dir, wandb_root, progress)

    monkeypatch.setattr(trainer, "train", train)
    return starts


def best_val(run_dir: Path) -> float:
    return max(
        float(v)
        for _, split, metric, v in metric_rows(run_dir / "metrics.csv")
        if (split, metric) == ("val", "t2v/R@1")
    )


def test_reference_runs_fix_the_targets_before_any_scored_run(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = tiny_sweep(tmp_path, cache, methods=["meanp", "seqtransf"], targets=REFERENCE)
    runs = tmp_path / "runs"
    sweep_dir = runs / "s"
    targets_file = sweep_dir / "targets.json"
    starts = record_starts(monkeypatch, targets_file)
    assert sweep_cli(path, runs) == 0

    # the phases: every reference run (no targets yet), then every scored run (targets already written)
    assert [(run, phase) for run, phase, _ in starts] == [(r, "reference") for r in REFERENCE_RUNS] + [
        (r, "scored") for r in SCORED_RUNS
    ]
    assert [existed for _, _, existed in starts] == [False] * 4 + [True] * 2
    out = capsys.readouterr().out
    assert out.index("targets (") < out.index("meanp-s0: best val")

    # the content: from the reference runs only, by the gain rule, the floor being zero-shot meanP on the same data
    saved = json.loads(targets_file.read_text())
    bests = {run: best_val(sweep_dir / run) for run in REFERENCE_RUNS}
    assert saved["reference_runs"] == bests and set(saved["reference_runs"]).isdisjoint(SCORED_RUNS)
    reference = max(statistics.median([bests[f"{m}-s100"], bests[f"{m}-s101"]]) for m in ("meanp", "seqtransf"))
    assert saved["reference_value"] == reference
    zero_shot = json.loads((sweep_dir / "meanp-s0" / "data.json").read_text())["calibration"]
    floor = zero_shot["zero_shot_meanP_t2v_R@1"]
    step0 = {
        v
        for s, split, m, v in metric_rows(sweep_dir / "meanp-s100" / "metrics.csv")
        if (s, split, m) == (0, "val", "t2v/R@1")
    }
    assert saved["floor"] == floor and step0 == {repr(floor)}  # meanP's untrained val R@1
    assert saved["values"] == pytest.approx([floor + f * (reference - floor) for f in (0.5, 0.9)], rel=0, abs=1e-12)
    assert (saved["source"], saved["rule"], saved["reference"], saved["seeds"]) == (
        "reference", "gain", "median_best", [100, 101]
    )  # fmt: skip
    assert saved["fractions"] == [0.5, 0.9] and saved["labels"] == ["50%", "90%"]
    assert saved["methods"] == ["meanp", "seqtransf"]

    # scored runs never change it: a rerun skips everything; a scored run trained again leaves the same bytes
    before = folder_state(sweep_dir)
    assert sweep_cli(path, runs) == 0
    assert targets_file.read_bytes() == before["targets.json"]
    for run in (sweep_dir / "seqtransf-s0").iterdir():
        run.unlink()
    (sweep_dir / "seqtransf-s0").rmdir()
    assert sweep_cli(path, runs) == 0
    assert targets_file.read_bytes() == before["targets.json"]
    assert [run for run, _, _ in starts[6:]] == ["seqtransf-s0"]
    capsys.readouterr()

    # a rerun with another targets configuration: one line, exit 2, nothing run or written
    before = folder_state(sweep_dir)
    for override, key in [
        ("targets.rule=fraction", "rule"),
        ("targets.fractions=[0.5, 0.8]", "fractions"),
        ("targets.seeds=[100, 102]", "seeds"),
        ("targets.reference=best", "reference"),
    ]:
        assert sweep_cli(path, runs, "--set", override) == 2, override
        one_line_error(
            capsys, str(targets_file), "the targets were fixed with another configuration", f"changed: {key}"
        )
        assert folder_state(sweep_dir) == before and len(starts) == 7


def test_reference_seeds_must_not_be_scored_seeds(tmp_path: Path, cache: Path, capsys) -> None:
    path = tiny_sweep(tmp_path, cache, seeds=[0, 1], targets={"source": "reference", "seeds": [1, 7]})
    assert sweep_cli(path, tmp_path / "runs") == 2
    one_line_error(capsys, str(path), "targets.seeds [1] are also scored seeds")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "targets,fragment",
    [
        ({"source": "reference"}, "targets: seeds: source 'reference' needs reference seeds"),
        ({"source": "reference", "seeds": [5, 5]}, "need distinct seeds"),
        ({"source": "absolute"}, "source 'absolute' needs distinct target values"),
        ({"source": "reference", "seeds": [5], "fractions": [0.0, 0.5]}, "need distinct fractions in (0, 1]"),
        ({"source": "reference", "seeds": [5], "rule": "ratio"}, "targets.rule: 'ratio' is not one of"),
    ],
)
def test_bad_targets_sections(tmp_path: Path, cache: Path, capsys, targets: dict, fragment: str) -> None:
    path = tiny_sweep(tmp_path, cache, targets=targets)
    assert sweep_cli(path, tmp_path / "runs") == 2
    one_line_error(capsys, str(path), fragment)
    assert not (tmp_path / "runs").exists()


def test_absolute_targets_are_written_before_any_run(tmp_path: Path, cache: Path, monkeypatch) -> None:
    path = tiny_sweep(tmp_path, cache, targets={"source": "absolute", "values": [20, 40]})
    targets_file = tmp_path / "runs" / "s" / "targets.json"
    starts = record_starts(monkeypatch, targets_file)
    assert sweep_cli(path, tmp_path / "runs") == 0
    assert starts == [("meanp-s0", "scored", True)]
    saved = json.loads(targets_file.read_text())
    assert (saved["source"], saved["values"], saved["labels"]) == ("absolute", [20.0, 40.0], ["≥20", "≥40"])
    assert saved["reference_runs"] == {} and saved["seeds"] == []


def test_train_and_targets_commands_follow_the_phases(tmp_path: Path, cache: Path, capsys) -> None:
    path = tiny_sweep(tmp_path, cache, targets={"source": "reference", "seeds": [100]})
    runs = tmp_path / "runs"
    sweep_dir = runs / "s"

    def cli(*argv: str) -> int:
        return main([*argv, "--runs-dir", str(runs)])

    # a scored run before the targets: refused, nothing written
    assert cli("train", str(path), "--run", "meanp-s0", "--no-progress") == 2
    one_line_error(capsys, "a scored run starts only after the targets are fixed", "tvr-convbench targets")
    assert not runs.exists()
    # the targets before the reference runs finished: they cannot be fixed (exit 1), nothing written
    assert cli("targets", str(path)) == 1
    assert "reference run meanp-s100 is missing" in capsys.readouterr().err
    assert not (sweep_dir / "targets.json").exists()
    # the reference run, then the targets, then the scored run
    assert cli("train", str(path), "--run", "meanp-s100", "--no-progress") == 0
    assert (sweep_dir / "meanp-s100" / "status").read_text() == "done\n" and not (sweep_dir / "meanp-s0").exists()
    assert cli("targets", str(path)) == 0
    saved = json.loads((sweep_dir / "targets.json").read_text())
    assert saved["reference_runs"] == {"meanp-s100": best_val(sweep_dir / "meanp-s100")}
    assert cli("targets", str(path)) == 0  # again: already fixed, kept
    assert "targets already fixed" in capsys.readouterr().out
    assert cli("train", str(path), "--run", "meanp-s0", "--no-progress") == 0
    assert (sweep_dir / "meanp-s0" / "status").read_text() == "done\n"
    assert json.loads((sweep_dir / "targets.json").read_text()) == saved
