"""``python -m bench sweep <sweep> --export {wandb,slurm}``: the same sweep, run across machines.

Both exports run this harness's own ``python -m bench train <sweep> --run <run>`` once per run (methods x seeds x
overrides, the names ``SweepConfig.runs()`` gives) on the shared run folders under ``--runs-dir``, so they keep the
local runner's rules: a run already ``done`` is skipped, an unfinished one resumes from its checkpoint, a failed one
is retried, and ``python -m bench report <sweep>`` builds the report from the run log afterwards. ``<sweep>`` is a
frozen copy of the resolved sweep, ``<runs-dir>/<sweep>/exported-sweep.yaml`` (the file's settings with any ``--set``
applied; a resolved sweep loads back to itself), so every node runs the same config even if the source file
changes later, and the local runner can finish the same sweep from it.

- ``wandb``: ``<runs-dir>/<sweep>/wandb-sweep.yaml``, a grid sweep over one parameter, ``run``, whose values are the
  run names; its ``command`` is ``${env} --chdir=<repository> ${interpreter} -m bench train <exported sweep>
  --runs-dir <dir> --no-progress ${args}`` (the agent expands ``${env}`` to ``/usr/bin/env``, GNU's, which changes
  into the repository, and ``${args}`` to ``--run=<name>``). ``wandb sweep wandb-sweep.yaml`` registers it
  (network needed: wandb has no offline sweeps), then ``wandb agent <id>`` on each machine with the project's
  Python first on ``PATH`` (the agent runs ``python``).
- ``slurm``: ``<runs-dir>/<sweep>/slurm.sbatch``, an array job with one task per run (task i runs run i); logs go to
  ``<runs-dir>/<sweep>/slurm/``. ``sbatch slurm.sbatch``; resubmitting it after a failure or a timeout finishes
  the sweep. ``PYTHON`` overrides the interpreter recorded at export time.

Paths (the exported sweep, the runs folder, the repository) are written absolute: the nodes are assumed to share
the file system.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Literal

import yaml

from tvr_convbench.bench.config import SweepConfig
from tvr_convbench.bench.sweep import check_compatible
from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.files import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
EXPORTED_SWEEP = "exported-sweep.yaml"
SELECTION_METRIC = "best/val/t2v/R@1"
"""the summary value every run's wandb mirror sets (``bench.trainer.train_process``)"""


def export_sweep(sweep: SweepConfig, kind: Literal["wandb", "slurm"], runs_dir: Path, sweep_arg: str) -> Path:
    """Write the ``kind`` export of ``sweep`` under ``runs_dir/<sweep>/`` and return its path.

    Args:
        sweep: the loaded sweep.
        kind: ``wandb`` (a sweep config for ``wandb sweep``) or ``slurm`` (an sbatch array script).
        runs_dir: the run-log root the exported runs share.
        sweep_arg: the sweep as given on the command line (named in the exported sweep's header).

    Raises:
        ConfigError: an unknown ``kind``, or runs already under ``runs_dir`` made with another config.
    """
    writers = {"wandb": _wandb_config, "slurm": _slurm_script}
    if kind not in writers:
        raise ConfigError(f"--export: unknown kind {kind!r} (wandb or slurm)")
    sweep_dir = runs_dir.resolve() / sweep.name
    check_compatible(sweep_dir, sweep.runs())
    frozen = sweep_dir / EXPORTED_SWEEP
    header = f"# sweep {sweep.name!r} resolved from {sweep.source or sweep_arg} (python -m bench sweep ... --export)\n"
    atomic_write_text(frozen, header + yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    name, text = writers[kind](sweep, sweep_dir, train_command(frozen, sweep_dir.parent))
    path = sweep_dir / name
    atomic_write_text(path, text)
    return path


def train_command(sweep_file: Path, runs_dir: Path) -> list[str]:
    """The arguments after ``python`` that train one run (``--run`` is appended by the caller)."""
    return ["-m", "tvr_convbench", "train", str(sweep_file), "--runs-dir", str(runs_dir), "--no-progress"]


def _wandb_config(sweep: SweepConfig, sweep_dir: Path, command: list[str]) -> tuple[str, str]:
    config = {
        "name": sweep.name,
        "project": sweep.wandb.project,
        **({"entity": sweep.wandb.entity} if sweep.wandb.entity else {}),
        "description": f"tvr-convbench sweep {sweep.name}, one wandb run per harness run",
        "program": "tvr_convbench/__main__.py",
        "method": "grid",
        "metric": {"name": SELECTION_METRIC, "goal": "maximize"},
        "parameters": {"run": {"values": [cfg.run for cfg in sweep.runs()]}},
        "command": ["${env}", f"--chdir={REPO}", "${interpreter}", *command, "${args}"],
    }
    header = (
        f"# wandb sweep for tvr-convbench sweep {sweep.name!r} (python -m bench sweep ... --export wandb).\n"
        f"# Register: wandb sweep {sweep_dir / 'wandb-sweep.yaml'}\n"
        "# Then on each machine, with the project's Python first on PATH: wandb agent <entity/project/id>\n"
    )
    return "wandb-sweep.yaml", header + yaml.safe_dump(config, sort_keys=False)


def _slurm_script(sweep: SweepConfig, sweep_dir: Path, command: list[str]) -> tuple[str, str]:
    runs = [cfg.run for cfg in sweep.runs()]
    logs = sweep_dir / "slurm"
    logs.mkdir(parents=True, exist_ok=True)  # sbatch does not create the --output folder
    directives = [
        f"--job-name=tvr-{sweep.name}",
        f"--array=0-{len(runs) - 1}",
        "--ntasks=1",
        *_cpu_directive(sweep),
        f"--output={logs}/%A_%a.out",
    ]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        f"# tvr-convbench sweep {sweep.name!r} (python -m bench sweep ... --export slurm): array task i trains run i.",
        "# A done run is skipped and an unfinished one resumes, so resubmitting this script finishes the sweep.",
        f"# Report: python -m bench report {sweep.name} --runs-dir {shlex.quote(str(sweep_dir.parent))}",
        "set -euo pipefail",
        f"RUNS=({' '.join(shlex.quote(r) for r in runs)})",
        f"cd {shlex.quote(str(REPO))}",
        f'exec "${{PYTHON:-{sys.executable}}}" {shlex.join(command)} --run "${{RUNS[$SLURM_ARRAY_TASK_ID]}}"',
    ]
    return "slurm.sbatch", "\n".join(lines) + "\n"


def _cpu_directive(sweep: SweepConfig) -> list[str]:
    """``--cpus-per-task`` when the protocol fixes the threads (processes x threads); else the cluster default."""
    threads = {cfg.trainer.num_threads * cfg.trainer.devices for cfg in sweep.runs()}
    return [f"--cpus-per-task={max(threads)}"] if min(threads) > 0 else []
