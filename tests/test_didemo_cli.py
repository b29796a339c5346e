"""Real-DiDeMo runs through the real CLI, on tiny generated videos and a tiny random CLIP: feature extraction
into a store, a frozen-regime sweep reading it, and a partial-regime sweep fine-tuning the last CLIP blocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_didemo_fixtures import VAL_JSON, make_video_fixture, write_tiny_clip
from tvr_convbench.bench.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not VAL_JSON.is_file():
        pytest.skip(f"{VAL_JSON} (official DiDeMo val) not present")
    root = tmp_path_factory.mktemp("didemo-cli")
    fixture = make_video_fixture(root)
    for split in ("train", "test"):  # the fixture annotates one split; reuse it for the other two
        shutil.copy(fixture.annotations / "val_data.json", fixture.annotations / f"{split}_data.json")
        shutil.copy(fixture.annotations / "val_list.txt", fixture.annotations / f"{split}_list.txt")
    clip = write_tiny_clip(root / "clip")
    store = root / "store"
    argv = ["data", "features", "--dataset", "didemo", "--annotations", str(fixture.annotations)]
    argv += ["--videos", str(fixture.videos), "--clip", str(clip), "--out", str(store), "--splits", "train,val,test"]
    argv += ["--max-frames", "32", "--max-words", "16", "--batch-size", "4", "--workers", "0"]
    argv += ["--cache-dir", str(root / "cache")]
    assert main(argv) == 0
    return {"root": root, "fixture": fixture, "clip": clip, "store": store}


def run(world, name: str, *overrides: str) -> Path:
    """Run a shipped sweep with tiny sizes and the fixture's paths set on the command line."""
    runs = world["root"] / "runs"
    # post hoc targets: several method sets share one runs folder
    tiny = ["seeds=[0]", "trainer.num_threads=1", "trainer.batch_size=2", "trainer.eval_batch_size=4",
            "data.max_frames=32", "data.max_words=16", "wandb.mode=disabled",
            "targets={source: posthoc}"]  # fmt: skip
    argv = ["sweep", name, "--runs-dir", str(runs), "--reports-dir", str(world["root"] / "reports"), "--no-progress"]
    for item in [*tiny, *overrides]:
        argv += ["--set", item]
    assert main(argv) == 0
    return runs / name


def test_shipped_frozen_sweep_reads_the_store(world):
    sweep_dir = run(
        world, "didemo-frozen", f"data.store={world['store']}", "methods=[meanp, glscl]", "data.adapter=false",
        "trainer.max_steps=4", "trainer.val_every=2",
    )  # fmt: skip
    for label in ("meanp", "glscl"):
        assert (sweep_dir / f"{label}-s0" / "status").read_text().strip() == "done"
    facts = json.loads((sweep_dir / "glscl-s0" / "data.json").read_text())
    assert facts["regime"] == "frozen" and facts["counts"]["val"]["items"] == 6
    kinds = sorted(p["kind"] for p in facts["problems"] if p["split"] == "val")
    assert kinds == ["missing", "undecodable"]  # reported next to the run, never turned into zero clips
    rows = (sweep_dir / "glscl-s0" / "metrics.csv").read_text().splitlines()
    assert sum(",test,t2v/R@1," in r for r in rows) == 3  # eval_test: true in the shipped config
    report = (world["root"] / "reports" / "didemo-frozen" / "report.md").read_text()
    assert "DiDeMo" in report.splitlines()[0] and "synthetic" not in report.splitlines()[0]


def test_shipped_end_to_end_sweep_trains_the_backbone(world):
    fixture = world["fixture"]
    sweep_dir = run(
        world, "didemo-full", f"data.annotations={fixture.annotations}", f"data.videos={fixture.videos}",
        f"data.clip={world['clip']}", "data.regime=partial", "data.trainable_blocks=1", "data.workers=0",
        f"data.cache_dir={world['root'] / 'cache'}", "methods=[seqtransf]", "trainer.max_steps=2",
        "trainer.val_every=1", "trainer.precision=32-true",
    )  # fmt: skip
    rows = (sweep_dir / "seqtransf-s0" / "metrics.csv").read_text().splitlines()
    assert sum(",val,t2v/R@1," in r for r in rows) == 3 and sum(",train,loss," in r for r in rows) == 2
    facts = json.loads((sweep_dir / "seqtransf-s0" / "data.json").read_text())
    assert facts["regime"] == "partial" and facts["counts"]["train"]["items"] == 6


# --- the patch-token methods (TS2-Net, UCoFiA) ------------------------------------------------------------------
PATCH_METHODS = "methods=[{method: ts2net, args: {extended_positions: true}}, ucofia]"
"""32 frame slots x 4 tokens exceed TS2-Net's official 77-row position table: the DiDeMo shapes' switch"""


@pytest.fixture(scope="module")
def patch_store(world):
    store = world["root"] / "patch-store"
    fixture = world["fixture"]
    argv = ["data", "features", "--annotations", str(fixture.annotations), "--videos", str(fixture.videos)]
    argv += ["--clip", str(world["clip"]), "--out", str(store), "--splits", "train,val,test", "--patches"]
    argv += ["--max-frames", "32", "--max-words", "16", "--batch-size", "4", "--workers", "0"]
    argv += ["--cache-dir", str(world["root"] / "cache")]
    assert main(argv) == 0
    return store


def test_patch_methods_run_frozen_on_a_patch_store(world, patch_store):
    sweep_dir = run(
        world, "didemo-frozen", f"data.store={patch_store}", PATCH_METHODS, "trainer.max_steps=2",
        "trainer.val_every=1",
    )  # fmt: skip
    for label in ("ts2net", "ucofia"):
        assert (sweep_dir / f"{label}-s0" / "status").read_text().strip() == "done"
        rows = (sweep_dir / f"{label}-s0" / "metrics.csv").read_text().splitlines()
        assert sum(",val,t2v/R@1," in r for r in rows) == 3 and sum(",train,loss," in r for r in rows) == 2


def test_patch_methods_are_refused_a_store_without_patches(world, capsys):
    runs = world["root"] / "refused-runs"
    argv = ["sweep", "didemo-frozen", "--runs-dir", str(runs), "--no-report", "--no-progress"]
    for item in (f"data.store={world['store']}", "methods=[ucofia]", "seeds=[0]", "data.max_frames=32"):
        argv += ["--set", item]
    assert main(argv + ["--set", "data.max_words=16", "--set", "wandb.mode=disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "field 'arrays.video_patches': the store has no patch tokens" in err[0]
    assert not (runs / "didemo-frozen" / "ucofia-s0").exists()


def test_patch_methods_train_end_to_end(world):
    fixture = world["fixture"]
    sweep_dir = run(
        world, "didemo-full", f"data.annotations={fixture.annotations}", f"data.videos={fixture.videos}",
        f"data.clip={world['clip']}", "data.regime=full", "data.workers=0", f"data.cache_dir={world['root'] / 'cache'}",
        PATCH_METHODS, "trainer.max_steps=2", "trainer.val_every=1", "trainer.precision=32-true",
    )  # fmt: skip
    for label in ("ts2net", "ucofia"):
        rows = (sweep_dir / f"{label}-s0" / "metrics.csv").read_text().splitlines()
        assert sum(",val,t2v/R@1," in r for r in rows) == 3 and sum(",train,loss," in r for r in rows) == 2
        facts = json.loads((sweep_dir / f"{label}-s0" / "data.json").read_text())
        assert facts["regime"] == "full"
