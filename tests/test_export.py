"""``tvr-convbench sweep <sweep> --export {wandb,slurm}``: the exported files (portable shell: no GNU-only
``env --chdir``; checked with ``sh -n`` / ``bash -n`` and, where installed, shellcheck), the SLURM resources
(derived from the protocol, e.g. for ``didemo-full``, or given in a ``slurm`` section), and the exported command run
for one grid point (a subprocess, as an agent or a SLURM task would run it, from another folder) on the shared run
folders, where a run already done is skipped by ``tvr-convbench train`` too."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_sweep
from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import SWEEP_KEYS, load_sweep
from tvr_convbench.bench.export import SlurmConfig, export_sweep, slurm_resources
from tvr_convbench.bench.typed import from_mapping
from tvr_convbench.core.errors import ConfigError

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
ENTRY = str(Path(sys.executable).parent / "tvr-convbench")
SHELLCHECK = shutil.which("shellcheck")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the export is made from (exported commands change into it)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


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


def shell_ok(path: Path, shell: str) -> None:
    """Parses as ``shell`` (``-n``: read, never run)."""
    assert subprocess.run([shell, "-n", str(path)]).returncode == 0


def agent_script(wandb_sweep: Path, folder: Path) -> Path:
    """The agent's ``sh -c`` script of an exported wandb sweep, as a file in ``folder`` (for ``sh -n`` and
    shellcheck)."""
    script = yaml.safe_load(wandb_sweep.read_text())["command"][2]
    path = folder / f"{wandb_sweep.parent.name}-agent-command.sh"
    path.write_text(f"#!/bin/sh\n# the agent runs: /bin/sh -c SCRIPT tvr-convbench --run=NAME\n{script}\n")
    return path


def test_wandb_export_is_a_grid_over_the_run_names(sweep_path: Path, tmp_path: Path, work: Path, capsys) -> None:
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    path = export(sweep_path, tmp_path / "runs", "wandb", capsys)
    config = load_sweep_config(str(path))
    assert [cfg.run for cfg in load_sweep(str(sweep_path)).runs()] == RUNS
    assert config["method"] == "grid" and config["parameters"] == {"run": {"values": RUNS}}
    assert config["metric"] == {"name": "best/val/t2v/R@1", "goal": "maximize"}
    assert config["name"] == "grid" and config["project"] == "tvr-convbench"
    assert config["program"] == ENTRY and Path(ENTRY).is_file()
    runs, exported = str((tmp_path / "runs").resolve()), path.parent / "exported-sweep.yaml"
    sh, dash_c, script, name, args = config["command"]
    assert (sh, dash_c, name, args) == ("/bin/sh", "-c", "tvr-convbench", "${args}")  # no ${env}: no GNU env
    assert shlex.split(script) == [
        "cd", str(work), "&&", "exec", ENTRY, "train", str(exported), "--runs-dir", runs, "--no-progress", "$@",
    ]  # fmt: skip
    assert "--chdir" not in path.read_text()
    shell_ok(agent_script(path, tmp_path), "/bin/sh")
    assert load_sweep(str(exported)).to_dict() == load_sweep(str(sweep_path)).to_dict()
    assert sorted(p.name for p in path.parent.iterdir()) == ["exported-sweep.yaml", "wandb-sweep.yaml"]  # no run


def test_slurm_export_is_one_array_task_per_run(sweep_path: Path, tmp_path: Path, work: Path, capsys) -> None:
    path = export(sweep_path, tmp_path / "runs", "slurm", capsys)
    text = path.read_text()
    directives = re.findall(r"^#SBATCH (\S+)$", text, flags=re.M)
    logs = path.parent / "slurm"
    assert directives == [
        "--job-name=tvr-grid", "--array=0-3", "--ntasks=1", "--cpus-per-task=1", f"--output={logs}/%A_%a.out",
    ]  # fmt: skip
    assert "# --cpus-per-task=1: derived from 1 process(es) x (1 torch thread(s) + 0 data.workers)" in text
    assert "# cluster defaults for --partition, --time" in text
    assert logs.is_dir()  # sbatch does not create it
    assert re.search(r"^RUNS=\((.*)\)$", text, flags=re.M).group(1).split() == RUNS
    command = shlex.split(text.strip().splitlines()[-1])
    assert command[:2] == ["exec", f"${{TVR_CONVBENCH:-{ENTRY}}}"]
    assert command[2:] == [
        "train", str(path.parent / "exported-sweep.yaml"), "--runs-dir",
        str((tmp_path / "runs").resolve()), "--no-progress", "--run", "${RUNS[$SLURM_ARRAY_TASK_ID]}",
    ]  # fmt: skip
    assert f"\ncd {work}\n" in text and "--chdir" not in text
    shell_ok(path, "/bin/bash")


def test_slurm_resources_for_didemo_full_are_derived_from_the_protocol(tmp_path: Path, work: Path) -> None:
    """didemo-full: accelerator auto with 16-mixed (a GPU run), one device, data.workers 8."""
    sweep = load_sweep("didemo-full")
    path, _submit = export_sweep(sweep, "slurm", tmp_path / "runs", "didemo-full")
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert header == [
        "#SBATCH --job-name=tvr-didemo-full",
        f"#SBATCH --array=0-{len(sweep.runs()) - 1}",
        "#SBATCH --ntasks=1",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --cpus-per-task=9",
        "#SBATCH --mem=24G",
        f"#SBATCH --output={path.parent / 'slurm'}/%A_%a.out",
    ]
    assert "# --gres=gpu:1: derived from trainer.accelerator auto, precision 16-mixed, 1 device(s)" in text
    assert "# --cpus-per-task=9: derived from 1 process(es) x (1 torch thread(s) + 8 data.workers)" in text
    shell_ok(path, "/bin/bash")
    # the same protocol on CPU (e.g. --set trainer.accelerator=cpu) asks for no GPU and no memory
    cpu = load_sweep("didemo-full", ["trainer.accelerator=cpu"])
    resources, _ = slurm_resources(cpu)
    assert (resources.gres, resources.cpus_per_task, resources.mem) == ("", 9, None)


def test_a_slurm_section_sets_every_resource(tmp_path: Path, work: Path) -> None:
    sweep = load_sweep("didemo-full")
    sweep.slurm = SlurmConfig(
        partition="gpu",
        gres="gpu:a100:1",
        time="1-00:00:00",
        mem="64G",
        cpus_per_task=12,
        array_parallel=8,
        extra=["--account=proj", "#SBATCH --qos=high"],
    )
    text = export_sweep(sweep, "slurm", tmp_path / "runs", "didemo-full")[0].read_text()
    header = [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH")]
    assert header[1:-1] == [
        f"--array=0-{len(sweep.runs()) - 1}%8", "--ntasks=1", "--partition=gpu", "--gres=gpu:a100:1",
        "--cpus-per-task=12", "--mem=64G", "--time=1-00:00:00", "--account=proj", "--qos=high",
    ]  # fmt: skip
    assert "derived from" not in text and "cluster defaults" not in text
    sweep.slurm = SlurmConfig(gres="")  # no GPU asked for
    assert "--gres" not in export_sweep(sweep, "slurm", tmp_path / "runs", "didemo-full")[0].read_text()


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed")
def test_exported_scripts_pass_shellcheck(sweep_path: Path, tmp_path: Path, work: Path) -> None:
    for sweep in (load_sweep(str(sweep_path)), load_sweep("didemo-full")):
        sbatch, *submit = export_sweep(sweep, "slurm", tmp_path / "runs", sweep.name)
        command = agent_script(export_sweep(sweep, "wandb", tmp_path / "runs", sweep.name)[0], tmp_path)
        for path, shell in ((sbatch, "bash"), (command, "sh"), *((p, "sh") for p in submit)):
            check = subprocess.run([SHELLCHECK, "--shell", shell, str(path)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("time", "4 hours", "slurm.time: expected [D-]HH[:MM[:SS]]"),
        ("mem", "lots", "slurm.mem: expected a size"),
        ("gres", "gpu 1", "slurm.gres: expected a gres spec"),
        ("cpus_per_task", 0, "slurm.cpus_per_task must be positive"),
        ("extra", ["account=x"], "slurm.extra: expected an sbatch option"),
        ("extra", ["--a=1\n--b=2"], "slurm.extra: expected an sbatch option"),
    ],
)
def test_a_bad_slurm_value_is_a_config_error_naming_the_key(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        from_mapping(SlurmConfig, {key: value}, "sweep.yaml: slurm")


@pytest.mark.skipif("slurm" not in SWEEP_KEYS, reason="the slurm section is not wired into SweepConfig yet")
def test_the_slurm_section_comes_from_the_sweep_file(sweep_path: Path, tmp_path: Path, work: Path, capsys) -> None:
    extra = ("--set", "slurm.time=04:00:00", "--set", "slurm.partition=short")
    text = export(sweep_path, tmp_path / "runs", "slurm", capsys, *extra).read_text()
    assert "#SBATCH --partition=short\n" in text and "#SBATCH --time=04:00:00\n" in text


def test_export_refuses_runs_made_with_another_config(sweep_path: Path, tmp_path: Path, work: Path, capsys) -> None:
    runs = tmp_path / "runs"
    old = runs / "grid" / "meanp-s0"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text(yaml.safe_dump({"sweep": "grid", "seed": 7}))
    (old / "status").write_text("done\n")
    assert main(["sweep", str(sweep_path), "--export", "slurm", "--runs-dir", str(runs)]) == 2
    assert "made with a different config" in capsys.readouterr().err
    assert not (runs / "grid" / "slurm.sbatch").exists()


@pytest.mark.slow
def test_exported_commands_train_one_grid_point_and_done_runs_are_skipped(tmp_path: Path, work: Path, capsys) -> None:
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

    sweep_path = tmp_path / "grid.yaml"
    sweep_path.write_text(SWEEP.format(cache="cache"))  # relative: resolved in the export's folder
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    sweep_dir, steps = runs / "grid", ("--set", "trainer.max_steps=3")  # an override travels with the export
    env = {**os.environ, "WANDB_MODE": "disabled"}
    # a wandb agent's command for grid point meanp-nowd-s0 (its macro expansion: wandb_agent.py), run elsewhere
    config = load_sweep_config(str(export(sweep_path, runs, "wandb", capsys, *steps)))
    macros = create_sweep_command_args({"args": {"run": {"value": "meanp-nowd-s0"}}})
    command = [arg for c in config["command"] for arg in (macros[c[2:-1]] if c.startswith("${") else [c])]
    assert command[-1] == "--run=meanp-nowd-s0"
    agent = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert agent.returncode == 0, agent.stderr[-2000:]
    assert (work / "cache").is_dir() and not (elsewhere / "cache").exists()  # ran in the export's folder
    # SLURM array task 1 = meanp-s1, submitted from elsewhere too
    script = export(sweep_path, runs, "slurm", capsys, *steps)
    task = subprocess.run(
        ["bash", str(script)],
        cwd=elsewhere,
        env={**env, "SLURM_ARRAY_TASK_ID": "1"},
        capture_output=True,
        text=True,
        timeout=300,
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


FAKE_SBATCH = """\
#!/bin/sh
# A stand-in for SLURM's sbatch: logs its arguments, then runs the job at once (array tasks one after another,
# with SLURM_ARRAY_TASK_ID set; --wrap through sh) and prints a job id as --parsable does ("<id>;<cluster>").
echo "$*" >> "$SBATCH_LOG"
id=$(( $(wc -l < "$SBATCH_LOG") + 100 ))
array="" wrap="" script=""
for arg in "$@"; do
  case "$arg" in
    --array=*) array=${arg#--array=} ;;
    --wrap=*) wrap=${arg#--wrap=} ;;
    -*) ;;
    *) script=$arg ;;
  esac
done
if [ -n "$wrap" ]; then sh -c "$wrap" >&2 || exit 1; fi
if [ -n "$array" ]; then
  range=${array%%%*}
  i=${range%-*}
  while [ "$i" -le "${range#*-}" ]; do SLURM_ARRAY_TASK_ID=$i bash "$script" >&2 || exit 1; i=$((i + 1)); done
fi
echo "$id;cluster"
"""


def phased_sweep(folder: Path, cache: Path) -> Path:
    """Two tuning trials of meanp on one tuning seed, then two scored seeds: a sweep in two phases."""
    tuning = {"space": {"lr": [1.0e-4, 1.0e-3]}, "tied": {"backbone_lr": "lr"}, "seeds": [100]}
    return tiny_sweep(folder, cache, name="phased", seeds=[0, 1], tuning=tuning, targets={"source": "tuning"})


def test_a_phased_sweep_exports_its_phases_in_order(tmp_path: Path, work: Path, capsys) -> None:
    path, runs = phased_sweep(tmp_path, tmp_path / "cache"), tmp_path / "runs"
    assert main(["sweep", str(path), "--export", "wandb", "--runs-dir", str(runs)]) == 0
    written = [Path(line.removeprefix("wrote ")) for line in capsys.readouterr().out.split()[1::2]]
    assert [p.name for p in written] == ["wandb-sweep-tuning.yaml", "wandb-sweep-scored.yaml"]
    values = [yaml.safe_load(p.read_text())["parameters"]["run"]["values"] for p in written]
    assert values == [["meanp-t0-s100", "meanp-t1-s100"], ["meanp-s0", "meanp-s1"]]  # scored names before selection
    assert "tvr-convbench targets" in written[0].read_text().split("Register")[0].replace(ENTRY, "tvr-convbench")
    assert main(["sweep", str(path), "--export", "slurm", "--runs-dir", str(runs)]) == 0
    sbatch, submit = (Path(w) for w in capsys.readouterr().out.split()[1::2])
    assert re.search(r"^RUNS=\((.*)\)$", sbatch.read_text(), flags=re.M).group(1).split() == [
        "meanp-t0-s100", "meanp-t1-s100", "meanp-s0", "meanp-s1",
    ]  # fmt: skip
    lines = [line for line in submit.read_text().splitlines() if "sbatch" in line and not line.startswith("#")]
    assert "--array=0-1" in lines[0] and "--dependency=afterany" in lines[1] and " targets " in lines[1]
    assert "--array=2-3" in lines[2] and '--dependency=afterok:"${fix%%;*}"' in lines[2]
    shell_ok(submit, "/bin/sh")
    if SHELLCHECK:
        check = subprocess.run([SHELLCHECK, "--shell", "sh", str(submit)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout


@pytest.mark.slow
def test_the_submit_script_runs_the_phases_to_a_finished_sweep(tmp_path: Path, work: Path, capsys) -> None:
    """slurm-submit.sh under a stand-in sbatch that runs each job at once: tuning tasks, targets, scored tasks."""
    path, runs = phased_sweep(tmp_path, tmp_path / "cache"), tmp_path / "runs"
    assert main(["sweep", str(path), "--export", "slurm", "--runs-dir", str(runs)]) == 0
    submit = Path(capsys.readouterr().out.split()[-1])
    bin_dir, log = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_LOG": str(log), "WANDB_MODE": "disabled"}
    done = subprocess.run(["sh", str(submit)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted: tuning array 101, targets 102, scored array 103" in done.stdout
    sweep_dir = runs / "phased"
    assert (sweep_dir / "targets.json").is_file() and (sweep_dir / "selection.json").is_file()
    statuses = {p.parent.name: p.read_text().strip() for p in sweep_dir.glob("*/status")}
    assert statuses == dict.fromkeys(["meanp-t0-s100", "meanp-t1-s100", "meanp-s0", "meanp-s1"], "done")
    assert main(["sweep", str(path), "--runs-dir", str(runs), "--no-report", "--no-progress"]) == 0
    out = capsys.readouterr().out  # the local runner on the same folders: nothing left to do
    assert out.count("done, skipped") == 4 and "sweep phased: 4/4 runs done, 0 failed" in out
