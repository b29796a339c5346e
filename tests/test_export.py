"""``python -m bench sweep <sweep> --export {wandb,slurm}``: the exported files, and the exported command run for one
grid point (a subprocess, as an agent or a SLURM task would run it) on the shared run folders, where a run already
done is skipped by ``bench train`` too."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEP = """\
methods: [meanp, {{method: meanp, label: meanp-nowd}}]
seeds: [0, 1]
overrides: {{meanp-nowd: {{trainer: {{weight_decay: 0.0}}}}}}
data: {{name: proxy, train_videos: 32, val_videos: 12, test_videos: 8, width: 16, max_words: 10, max_frames: 4,
        frames_per_segment: 1, vocab_size: 200, cache_dir: {cache}}}
trainer: {{max_steps: 4, val_every: 2, batch_size: 8, num_threads: 1}}
wandb: {{mode: disabled}}
"""
RUNS = ["meanp-s0", "meanp-s1", "meanp-nowd-s0", "meanp-nowd-s1"]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sweep_path(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(SWEEP.format(cache=tmp_path / "cache"))
    return path


def export(sweep_path: Path, runs: Path, kind: str, capsys: pytest.CaptureFixture, *extra: str) -> Path:
    assert main(["sweep", str(sweep_path), "--export", kind, "--runs-dir", str(runs), *extra]) == 0
    path = Path(capsys.readouterr().out.strip().removeprefix("wrote "))
    assert path == runs.resolve() / "grid" / {"wandb": "wandb-sweep.yaml", "slurm": "slurm.sbatch"}[kind]
    return path


def test_wandb_export_is_a_grid_over_the_run_names(sweep_path: Path, tmp_path: Path, capsys) -> None:
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    path = export(sweep_path, tmp_path / "runs", "wandb", capsys)
    config = load_sweep_config(str(path))
    assert [cfg.run for cfg in load_sweep(str(sweep_path)).runs()] == RUNS
    assert config["method"] == "grid" and config["parameters"] == {"run": {"values": RUNS}}
    assert config["metric"] == {"name": "best/val/t2v/R@1", "goal": "maximize"}
    assert config["name"] == "grid" and config["project"] == "tvr-convbench"
    assert (REPO / config["program"]).is_file()
    runs, exported = str((tmp_path / "runs").resolve()), path.parent / "exported-sweep.yaml"
    assert config["command"] == [
        "${env}", f"--chdir={REPO}", "${interpreter}", "-m", "tvr_convbench", "train", str(exported),
        "--runs-dir", runs, "--no-progress", "${args}",
    ]  # fmt: skip
    assert load_sweep(str(exported)).to_dict() == load_sweep(str(sweep_path)).to_dict()
    assert sorted(p.name for p in path.parent.iterdir()) == ["exported-sweep.yaml", "wandb-sweep.yaml"]  # no run


def test_slurm_export_is_one_array_task_per_run(sweep_path: Path, tmp_path: Path, capsys) -> None:
    path = export(sweep_path, tmp_path / "runs", "slurm", capsys)
    text = path.read_text()
    directives = re.findall(r"^#SBATCH (\S+)$", text, flags=re.M)
    logs = path.parent / "slurm"
    assert directives == [
        "--job-name=tvr-grid", "--array=0-3", "--ntasks=1", "--cpus-per-task=1", f"--output={logs}/%A_%a.out",
    ]  # fmt: skip
    assert logs.is_dir()  # sbatch does not create it
    assert re.search(r"^RUNS=\((.*)\)$", text, flags=re.M).group(1).split() == RUNS
    command = shlex.split(text.strip().splitlines()[-1])
    assert command[:2] == ["exec", f"${{PYTHON:-{sys.executable}}}"]
    assert command[2:] == [
        "-m", "tvr_convbench", "train", str(path.parent / "exported-sweep.yaml"), "--runs-dir",
        str((tmp_path / "runs").resolve()), "--no-progress", "--run", "${RUNS[$SLURM_ARRAY_TASK_ID]}",
    ]  # fmt: skip
    assert f"cd {REPO}\n" in text
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_export_refuses_runs_made_with_another_config(sweep_path: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    old = runs / "grid" / "meanp-s0"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text(yaml.safe_dump({"sweep": "grid", "seed": 7}))
    (old / "status").write_text("done\n")
    assert main(["sweep", str(sweep_path), "--export", "slurm", "--runs-dir", str(runs)]) == 2
    assert "made with a different config" in capsys.readouterr().err
    assert not (runs / "grid" / "slurm.sbatch").exists()


@pytest.mark.slow
def test_exported_commands_train_one_grid_point_and_done_runs_are_skipped(
    sweep_path: Path, tmp_path: Path, capsys
) -> None:
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

    runs = tmp_path / "runs"
    sweep_dir, steps = runs / "grid", ("--set", "trainer.max_steps=3")  # an override travels with the export
    env = {**os.environ, "WANDB_MODE": "disabled"}
    # a wandb agent's command for grid point meanp-nowd-s0 (its macro expansion: wandb_agent.py), from any folder
    config = load_sweep_config(str(export(sweep_path, runs, "wandb", capsys, *steps)))
    macros = create_sweep_command_args({"args": {"run": {"value": "meanp-nowd-s0"}}})
    macros.update(env=["/usr/bin/env"], interpreter=[sys.executable])
    command = [arg for c in config["command"] for arg in (macros[c[2:-1]] if c.startswith("${") else [c])]
    assert command[-1] == "--run=meanp-nowd-s0"
    agent = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert agent.returncode == 0, agent.stderr[-2000:]
    # SLURM array task 1 = meanp-s1
    script = export(sweep_path, runs, "slurm", capsys, *steps)
    task = subprocess.run(
        ["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True, text=True, timeout=300
    )
    assert task.returncode == 0, task.stderr[-2000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["meanp-nowd-s0", "meanp-s1", "slurm"]
    for run, weight_decay in (("meanp-nowd-s0", 0.0), ("meanp-s1", 0.2)):
        assert (sweep_dir / run / "status").read_text() == "done\n"
        resolved = yaml.safe_load((sweep_dir / run / "config.yaml").read_text())
        assert resolved["run"] == run and resolved["trainer"]["weight_decay"] == weight_decay
        with open(sweep_dir / run / "metrics.csv") as f:
            assert max(int(line.split(",")[4]) for line in list(f)[1:]) == 3
    trained = {run: (sweep_dir / run / "metrics.csv").read_bytes() for run in ("meanp-nowd-s0", "meanp-s1")}
    # a second task for a done run, then the local runner on the exported sweep: done runs are skipped
    exported = str(sweep_dir / "exported-sweep.yaml")
    assert main(["train", exported, "--run", "meanp-s1", "--runs-dir", str(runs), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "meanp-s1: done, skipped"
    assert main(["sweep", exported, "--runs-dir", str(runs), "--no-report", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "meanp-nowd-s0: done, skipped" in out and "meanp-s1: done, skipped" in out
    assert "grid: 4/4 runs done, 0 failed" in out
    assert all((sweep_dir / run / "metrics.csv").read_bytes() == data for run, data in trained.items())
