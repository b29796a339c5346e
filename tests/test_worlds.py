"""The proxy's named worlds: each is a documented preset inside the calibration band (zero-shot meanP 15-30% R@1 at
about 1,000 val videos; a trained method well below 100%), applied through the config with explicit knobs winning,
and an unknown name is one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tvr_convbench.bench.calibration import zero_shot_figures
from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import load_sweep
from tvr_convbench.datasets.proxy import ProxyDataModule
from tvr_convbench.datasets.proxy.worlds import WORLDS, world_knobs

BAND_SIZES = {"train_videos": 600, "val_videos": 1000, "test_videos": 16}


def test_every_world_is_documented_and_changes_knobs_of_the_proxy():
    knobs = set(ProxyDataModule.config_parameters())
    for name, world in WORLDS.items():
        assert len(world.doc) > 40, name
        assert set(world.knobs) <= knobs, name
        assert (name == "default") == (not world.knobs)


def test_a_world_applies_through_the_config_and_explicit_knobs_win(tmp_path: Path):
    sweep = load_sweep("default", ["data.world=didemo-frames"])
    assert sweep.data["world"] == "didemo-frames" and sweep.data["frames_per_segment"] == 5
    assert sweep.data["max_frames"] == 32
    smoke = load_sweep("smoke", ["data.world=didemo-frames"])  # smoke sets both knobs itself: its values win
    assert (smoke.data["frames_per_segment"], smoke.data["max_frames"]) == (1, 8)
    distractors = load_sweep("default", ["data.world=distractors"]).data["distractors"]
    assert distractors == world_knobs("distractors")["distractors"]


def test_an_unknown_world_is_one_line(capsys: pytest.CaptureFixture[str]):
    assert main(["config", "default", "--set", "data.world=didemo-frame"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.world" in err and "did you mean 'didemo-frames'" in err


@pytest.mark.slow
@pytest.mark.parametrize("world", list(WORLDS))
def test_every_world_is_in_the_calibration_band(world: str, tmp_path: Path):
    module = ProxyDataModule(**BAND_SIZES, world=world, cache_dir=str(tmp_path))
    module.setup()
    zero_shot = zero_shot_figures(module)["zero_shot_meanP_t2v_R@1"]
    assert 15.0 <= zero_shot <= 30.0, f"{world}: zero-shot meanP {zero_shot:.1f}% is outside 15-30%"
    assert trained_r1(world, tmp_path) < 90.0  # a trained method stays well below 100%


def trained_r1(world: str, tmp_path: Path) -> float:
    """Best val R@1 of X-Pool after a short training on the world (the strongest cheap method of the proxy)."""
    data = {"name": "proxy", "world": world, **BAND_SIZES, "cache_dir": str(tmp_path / "cache")}
    sweep = {"methods": ["xpool"], "seeds": [0], "data": data, "wandb": {"mode": "disabled"},
             "trainer": {"max_steps": 150, "val_every": 150, "lr": 1.0e-3, "backbone_lr": 1.0e-3}}  # fmt: skip
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(sweep))
    runs = tmp_path / "runs"
    assert main(["sweep", str(path), "--runs-dir", str(runs), "--no-report", "--no-progress"]) == 0
    rows = (runs / "world" / "xpool-s0" / "metrics.csv").read_text().splitlines()
    return max(float(r.rsplit(",", 1)[1]) for r in rows if ",val,t2v/R@1," in r)
