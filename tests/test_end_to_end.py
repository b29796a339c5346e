"""The real entry points end to end: `python -m bench sweep smoke` with wandb offline, and the same-seed promise."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvr_convbench.bench.cli import main
from tvr_convbench.bench.runlog import COLUMNS

TINY_SWEEP = """
methods: [seqtransf]
seeds: [{seed}]
data: {{name: proxy, train_videos: 96, val_videos: 24, test_videos: 8, width: 16, max_words: 12, vocab_size: 200,
        cache_dir: {cache}}}
trainer: {{max_steps: 12, val_every: 4, batch_size: 8, backbone_lr: 1.0e-4, num_threads: 1}}
wandb: {{mode: disabled}}
"""


@pytest.mark.slow
def test_smoke_sweep_through_the_cli(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "tvr_convbench", "sweep", "smoke", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = ["meanp-s0", "meanp-s1", "seqtransf-s0", "seqtransf-s1"]
    for run in runs:
        assert f"{run}: best val t2v R@1" in result.stdout  # the one-line summary per finished run
        assert (tmp_path / "runs" / "smoke" / run / "status").read_text().strip() == "done"
    with open(tmp_path / "runs" / "smoke" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    val = [r for r in rows if r["split"] == "val" and r["metric"] == "t2v/R@1"]
    assert len(val) == len(runs) * 5  # steps 0, 5, 10, 15, 20
    assert {r["step"] for r in val} == {"0", "5", "10", "15", "20"}
    train = [r for r in rows if r["split"] == "train" and r["metric"] == "loss"]
    assert len(train) == len(runs) * 20
    offline = list((tmp_path / "runs" / "smoke" / "wandb").glob("offline-run-*"))
    assert len(offline) >= len(runs)  # one per run (+ the results mirror)
    assert all(list(path.glob("run-*.wandb")) for path in offline)
    report = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    assert report.startswith("# Convergence report: smoke (synthetic DiDeMo proxy)")
    figures = sorted(p.name for p in (tmp_path / "reports" / "smoke" / "figures").glob("*.png"))
    assert {"val_t2v_R1_vs_step.png", "val_t2v_R1_vs_seconds.png", "train_loss.png"} <= set(figures)
    for name in figures:
        assert f"figures/{name}" in report


def metric_values(sweep_dir: Path) -> dict[tuple, float]:
    with open(next(sweep_dir.glob("*/metrics.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    return {(r["step"], r["split"], r["metric"]): float(r["value"]) for r in rows if r["split"] != "time"}


def test_same_seed_same_curve(tmp_path):
    """Same seed, same config: the same curve, value for value (losses and every metric at every step)."""
    curves = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY_SWEEP.format(seed=seed, cache=tmp_path / "cache"))
        assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--no-report"]) == 0
        curves.append(metric_values(tmp_path / "runs" / name))
    assert len(curves[0]) == 12 * 5 + 4 * 10  # per step the loss and 4 in-batch recalls; 10 metrics at 0, 4, 8, 12
    assert curves[0] == curves[1]
    assert curves[0] != curves[2]


SHRUNK = {"study": ["methods=[meanp, xpool]", "tuning.seeds=[100]"]}
"""a study also runs fewer methods and one tuning seed (its 4 worlds x 10 trials each are kept)"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "glscl-ablation", "study"])
def test_shipped_proxy_sweeps_run(tmp_path, name):
    """Every shipped proxy sweep runs as shipped, shrunk only in size (the DiDeMo ones: tests/test_didemo_cli.py)."""
    tiny = [
        "seeds=[0]", "trainer.max_steps=2", "trainer.val_every=1", "trainer.batch_size=8", "trainer.num_threads=1",
        "data.train_videos=32", "data.val_videos=12", "data.test_videos=4", "data.width=16", "data.max_words=12",
        "data.vocab_size=200", f"data.cache_dir={tmp_path / 'cache'}", "wandb.mode=disabled", *SHRUNK.get(name, []),
    ]  # fmt: skip
    argv = ["sweep", name, "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports")]
    assert main([*argv, "--no-progress", *[a for item in tiny for a in ("--set", item)]]) == 0
    sweeps = [p for p in (tmp_path / "runs").iterdir() if p.name == name or p.name.startswith(f"{name}-")]
    assert len(sweeps) == (4 if name == "study" else 1)  # a study: one sweep per world
    for sweep_dir in sweeps:
        statuses = {p.parent.name: p.read_text().strip() for p in sweep_dir.glob("*/status")}
        assert statuses and set(statuses.values()) == {"done"}, sweep_dir
        assert (tmp_path / "reports" / sweep_dir.name / "report.md").is_file()
    assert (tmp_path / "reports" / name / "report.md").is_file()
