"""``tvr-convbench wandb-workspace SWEEP`` (``bench.wandb_workspace``), built offline: the plain definition and
wandb-workspaces' view of it in ``reports/<sweep>/wandb-workspace.json``, saved only with an account (mocked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tvr_convbench.bench import wandb_mirror, wandb_workspace
from tvr_convbench.bench.config import load_sweep
from tvr_convbench.core.errors import ConfigError

SWEEP = """\
methods: [meanp, seqtransf]
seeds: [0, 1]
data: {name: proxy, train_videos: 32, val_videos: 12, test_videos: 8, width: 16, max_words: 10, max_frames: 4,
       frames_per_segment: 1, vocab_size: 200}
trainer: {max_steps: 4, val_every: 2, batch_size: 8}
"""


@pytest.fixture(autouse=True)
def _no_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for key in ("WANDB_API_KEY", wandb_mirror.FALLBACK_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(wandb_mirror, "_decisions", {})


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A sweep's run log folder (its sweep.yaml) and its report folder (targets.csv and two figures)."""
    path = tmp_path / "smoke.yaml"
    path.write_text(SWEEP)
    sweep_dir, report_dir = tmp_path / "runs" / "smoke", tmp_path / "reports" / "smoke"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(load_sweep(str(path)).to_dict()))
    (report_dir / "figures").mkdir(parents=True)
    (report_dir / "targets.csv").write_text("target,fraction,value\n50%,0.5,10\n90%,0.9,18\n")
    for name in ("val_t2v_R1_vs_step", "time_to_target"):
        (report_dir / "figures" / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return sweep_dir, report_dir


def panels(definition: dict) -> dict[str, list[dict]]:
    return {s["name"]: s["panels"] for s in definition["sections"]}


def test_the_definition_has_the_convergence_panels_of_one_sweep(dirs: tuple[Path, Path]) -> None:
    sweep_dir, report_dir = dirs
    definition = wandb_workspace.workspace_definition(sweep_dir, report_dir)
    assert definition["runset"] == {
        "filter": {"tag": "sweep:smoke", "job_types": ["scored", "results"]},  # no tuning or reference runs
        "group_by": "Group",
        "x_axis": "step",
    }
    assert definition["project"] == "tvr-convbench" and definition["targets"] == ["50%", "90%"]
    by = panels(definition)
    assert list(by) == [
        "Validation retrieval",
        "Training loss",
        "Training recall (in-batch)",
        "Time to target",
        "Results",
    ]
    curves = [(p["y"][0], p["x"]) for p in by["Validation retrieval"]]
    assert curves == [(f"val/{m}", x) for m in ("t2v/R@1", "v2t/R@1") for x in ("step", "train_seconds")]
    assert [(p["y"][0], p["x"]) for p in by["Training loss"]] == [
        ("train/loss", "step"),
        ("train/loss", "train_seconds"),
    ]
    assert [p["y"][0] for p in by["Training recall (in-batch)"]] == [
        "train/t2v/R@1", "train/t2v/R@5", "train/v2t/R@1", "train/v2t/R@5",
    ]  # fmt: skip
    lines = [p for name in ("Validation retrieval", "Training loss", "Training recall (in-batch)") for p in by[name]]
    assert all((p["group_by"], p["aggregate"], p["band"]) == ("Group", "mean", "minmax") for p in lines)
    bars = by["Time to target"]
    assert [p["metrics"] for p in bars] == [
        ["target/50%/steps", "target/90%/steps"], ["target/50%/seconds", "target/90%/seconds"],
    ]  # fmt: skip
    tables, media = by["Results"][:2], by["Results"][2]
    assert [p["key"] for p in tables] == ["results/summary", "results/time_to_target"]
    assert media["keys"] == ["figures/time_to_target", "figures/val_t2v_R1_vs_step"]


def test_targets_fixed_in_advance_name_the_bars(dirs: tuple[Path, Path]) -> None:
    sweep_dir, report_dir = dirs
    (sweep_dir / "targets.json").write_text(
        json.dumps({"metric": "t2v/R@1", "labels": ["60%", "80%"], "values": [1, 2]})
    )
    assert wandb_workspace.target_labels(sweep_dir, report_dir) == ["60%", "80%"]
    (sweep_dir / "targets.json").unlink()
    (report_dir / "targets.csv").unlink()
    assert wandb_workspace.target_labels(sweep_dir, None) == ["50%", "80%", "90%", "95%"]  # the configured fractions


def test_without_an_account_the_command_writes_the_json_and_says_how_to_save(dirs, capsys, monkeypatch) -> None:
    pytest.importorskip("wandb_workspaces")
    sweep_dir, report_dir = dirs
    saved = []
    monkeypatch.setattr("wandb_workspaces.workspaces.Workspace.save", lambda self: saved.append(self) or self)
    assert wandb_workspace.run_command("smoke", sweep_dir.parent, report_dir.parent) == 0
    out = capsys.readouterr().out
    path = report_dir / "wandb-workspace.json"
    assert out.startswith(f"wandb workspace: {path} (") and "to save it: wandb login" in out
    assert saved == []  # nothing left the machine
    written = json.loads(path.read_text())
    assert written["format"] == wandb_workspace.FORMAT and written["saved"] is None
    spec = written["view"]["spec"]["section"]
    sections = spec["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == [s["name"] for s in written["sections"]]
    plots = [p["config"] for s in sections for p in s["panels"] if p["viewType"] == "Run History Line Plot"]
    assert {(c["metrics"][0], c["xAxis"]) for c in plots} >= {("val/t2v/R@1", "train_seconds"), ("train/loss", "step")}
    assert all((c["groupBy"], c["groupAgg"], c["groupArea"]) == ("group", "mean", "minmax") for c in plots)
    bars = [p["config"] for s in sections for p in s["panels"] if p["viewType"] == "Bar Chart"]
    assert bars[0]["metrics"] == ["target/50%/steps", "target/90%/steps"]
    (runset,) = spec["runSets"]
    assert runset["grouping"] == [{"section": "run", "name": "group"}]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "tags"}, "op": "IN", "value": ["sweep:smoke"], "disabled": False},
        {"key": {"section": "run", "name": "jobType"}, "op": "IN", "value": ["scored", "results"], "disabled": False,
         "connector": "AND"},
    ]  # fmt: skip


def test_with_an_account_the_workspace_is_saved(dirs, capsys, monkeypatch) -> None:
    pytest.importorskip("wandb_workspaces")
    sweep_dir, report_dir = dirs
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # an account (fake); the server is mocked away below
    monkeypatch.setattr(wandb_mirror, "probe_server", lambda: None)
    saved = []

    def save(self):  # noqa: ANN001, ANN202
        saved.append((self.entity, self.project, self.name))
        return type("Saved", (), {"url": "https://wandb.example/me/tvr-convbench?nw=abc"})()

    monkeypatch.setattr("wandb_workspaces.workspaces.Workspace.save", save)
    path, url, note = wandb_workspace.build_workspace(sweep_dir, report_dir, entity="me")
    assert saved == [("me", "tvr-convbench", "tvr-convbench smoke")]
    assert url == "https://wandb.example/me/tvr-convbench?nw=abc" and note == f"saved: {url}"
    assert json.loads(path.read_text())["saved"] == url


def test_without_wandb_workspaces_the_plain_definition_is_written(dirs, monkeypatch) -> None:
    sweep_dir, report_dir = dirs
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # import fails
    monkeypatch.setitem(sys.modules, "wandb_workspaces.workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    path, url, note = wandb_workspace.build_workspace(sweep_dir, report_dir)
    written = json.loads(path.read_text())
    assert url is None and written["view"] is None and "pip install 'tvr-convbench[wandb]'" in note
    assert panels(written)["Training recall (in-batch)"][0]["y"] == ["train/t2v/R@1"]


def test_an_unknown_sweep_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run log for sweep 'nope'"):
        wandb_workspace.run_command("nope", tmp_path / "runs", tmp_path / "reports")
