"""``tvr-convbench sweep <sweep> --export {wandb,slurm}``: the same sweep, run across machines.

Both exports run this harness's console entry point, ``<bin>/tvr-convbench train <sweep> --run <run>`` (the
``tvr-convbench`` beside ``sys.executable``, absolute), once per run (the names ``SweepConfig.runs()`` gives) on the
shared run folders under ``--runs-dir``, so they keep the local runner's rules: a run already ``done`` is skipped,
an unfinished one resumes from its checkpoint, a failed one is retried, and ``tvr-convbench report <sweep>`` builds
the report from the run log afterwards. ``<sweep>`` is a frozen copy of the resolved sweep,
``<runs-dir>/<sweep>/exported-sweep.yaml`` (the file's settings with any ``--set`` applied; a resolved sweep loads
back to itself), so every node runs the same config even if the source file changes later, and the local runner
can finish the same sweep from it.

The working directory: the runs folder and the exported sweep are absolute, but a sweep's data paths may be
relative (``data/didemo``, and the caches ``.cache/proxy`` / ``.cache/didemo`` are relative by default), resolved
against the current directory as the local runner does. So every exported command first changes into the folder
the export was made from (``cd`` in POSIX ``sh``: no GNU-only ``env --chdir``).

- ``wandb``: ``<runs-dir>/<sweep>/wandb-sweep.yaml``, a grid sweep over one parameter, ``run``, whose values are the
  run names; its ``command`` is ``/bin/sh -c 'cd <workdir> && exec <bin>/tvr-convbench train <exported sweep>
  --runs-dir <dir> --no-progress "$@"' tvr-convbench ${args}`` (the agent runs it without a shell and expands
  ``${args}`` to ``--run=<name>``). ``wandb sweep wandb-sweep.yaml`` registers it (network needed: wandb has no
  offline sweeps), then ``wandb agent <id>`` on each machine.
- ``slurm``: ``<runs-dir>/<sweep>/slurm.sbatch``, an array job with one task per run (task i runs run i); logs go
  to ``<runs-dir>/<sweep>/slurm/``. Resources come from the sweep's ``slurm`` section (``SlurmConfig``); what it
  leaves unset is derived from the protocol (GPUs from the accelerator and devices, CPUs from the threads and the
  DataLoader workers, memory from the workers) or left to the cluster's defaults (time, partition), which the
  script's header names. ``sbatch slurm.sbatch``; resubmitting it after a failure or a timeout finishes the sweep.
  ``TVR_CONVBENCH`` overrides the entry point recorded at export time.

A sweep whose targets are fixed in advance (``targets: {source: tuning}`` or ``reference``) runs in phases
(``SweepConfig.phases``): the tuning or reference runs, then ``tvr-convbench targets <sweep>`` (targets.json, and
with tuning selection.json), then the scored runs, which refuse to start before the targets exist. Its wandb export
is one wandb sweep per phase (``wandb-sweep-<phase>.yaml``, the order and the targets command in their headers);
its SLURM export adds ``slurm-submit.sh``, which submits ``slurm.sbatch``'s first-phase tasks, a targets job with
``--dependency=afterany`` on them and the scored tasks with ``--dependency=afterok`` on that job (``sbatch
--array`` on the command line overrides the script's own range).

Paths are written absolute: the nodes are assumed to share the file system.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml

from tvr_convbench.core.errors import ConfigError
from tvr_convbench.core.files import atomic_write_text

if TYPE_CHECKING:  # bench.config imports SlurmConfig from here: no module-level import of it (or of bench.sweep)
    from tvr_convbench.bench.config import RunConfig, SweepConfig

EXPORTED_SWEEP = "exported-sweep.yaml"
SELECTION_METRIC = "best/val/t2v/R@1"
"""the summary value every run's wandb mirror sets (``bench.trainer.train_process``)"""
ENTRY_POINT = "tvr-convbench"

TIME = re.compile(r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")
MEM = re.compile(r"^\d+[KMGT]?$")
NAME = re.compile(r"^[A-Za-z0-9_.,:=+%/-]+$")


@dataclass
class SlurmConfig:
    """Resources of the SLURM array export (``--export slurm``), one array task per run. A field left unset (None)
    is derived from the protocol, or left to the cluster's default."""

    partition: str | None = None
    """``--partition`` (None: the cluster's default partition)"""
    gres: str | None = None
    """``--gres``, e.g. ``gpu:1`` or ``gpu:a100:2`` (None: ``gpu:<devices>`` when the runs train on GPUs, i.e.
    ``accelerator: gpu``, or ``auto`` with mixed precision or a trainable CLIP (DiDeMo ``partial``/``full``); ``""``:
    none)"""
    time: str | None = None
    """``--time`` limit per task, e.g. ``04:00:00`` or ``1-00:00:00`` (None: the partition's default; a task cut
    off resumes from its last checkpoint when the script is submitted again)"""
    mem: str | None = None
    """``--mem`` per task, e.g. ``32G`` (None: on GPUs, devices x (8 + 2 x data.workers) GB; on CPU the default)"""
    cpus_per_task: int | None = None
    """``--cpus-per-task`` (None: devices x (trainer.num_threads or 1 + data.workers), or the cluster default
    when neither threads nor workers are set)"""
    array_parallel: int | None = None
    """at most this many array tasks at once (``--array=0-N%K``; None: no limit)"""
    extra: list[str] = field(default_factory=list)
    """more ``#SBATCH`` options, one per item, e.g. ``--account=proj`` or ``--qos=high`` (the ``#SBATCH``
    prefix is optional)"""

    def __post_init__(self) -> None:
        self.extra = [_directive(line) for line in self.extra]
        checks = {
            "time": (self.time, TIME, "[D-]HH[:MM[:SS]] or minutes, e.g. 04:00:00"),
            "mem": (self.mem, MEM, "a size such as 32G or 4000M"),
            "partition": (self.partition, NAME, "a partition name"),
            "gres": (self.gres or None, NAME, "a gres spec such as gpu:1"),
        }
        for key, (value, pattern, what) in checks.items():
            if value is not None and not pattern.match(value):
                raise ValueError(f"slurm.{key}: expected {what}, got {value!r}")
        for key in ("cpus_per_task", "array_parallel"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"slurm.{key} must be positive, got {value}")


def _directive(line: str) -> str:
    text = line.strip().removeprefix("#SBATCH").strip()
    if not text.startswith("-") or "\n" in text or not text:
        raise ValueError(f"slurm.extra: expected an sbatch option such as --account=proj, got {line!r}")
    return text


def export_sweep(sweep: SweepConfig, kind: Literal["wandb", "slurm"], runs_dir: Path, sweep_arg: str) -> list[Path]:
    """Write the ``kind`` export of ``sweep`` under ``runs_dir/<sweep>/`` and return the files written, the one to
    start from first.

    A sweep whose targets are fixed in advance runs in phases (``SweepConfig.phases``: the tuning or reference runs,
    then ``tvr-convbench targets``, then the scored runs): the wandb export is one wandb sweep per phase, the SLURM
    export one array script over every run plus ``slurm-submit.sh``, which submits the phases chained by job
    dependencies.

    Args:
        sweep: the loaded sweep.
        kind: ``wandb`` (a sweep config for ``wandb sweep``) or ``slurm`` (an sbatch array script).
        runs_dir: the run-log root the exported runs share.
        sweep_arg: the sweep as given on the command line (named in the exported sweep's header).

    Raises:
        ConfigError: an unknown ``kind``, or runs already under ``runs_dir`` made with another config.
    """
    from tvr_convbench.bench.sweep import check_compatible

    writers = {"wandb": _wandb_configs, "slurm": _slurm_scripts}
    if kind not in writers:
        raise ConfigError(f"--export: unknown kind {kind!r} (wandb or slurm)")
    sweep_dir = runs_dir.resolve() / sweep.name
    check_compatible(sweep_dir, sweep.runs())
    frozen = sweep_dir / EXPORTED_SWEEP
    header = f"# sweep {sweep.name!r} resolved from {sweep.source or sweep_arg} (tvr-convbench sweep ... --export)\n"
    atomic_write_text(frozen, header + yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    written = []
    for name, text in writers[kind](sweep, sweep_dir, frozen):
        written.append(sweep_dir / name)
        atomic_write_text(written[-1], text)
    return written


def entry_point() -> str:
    """The absolute path of the ``tvr-convbench`` console script of this interpreter's environment."""
    return str(Path(sys.executable).parent / ENTRY_POINT)


def workdir() -> Path:
    """The folder exported commands run in: the one the export is made from (relative data paths resolve there)."""
    return Path.cwd().resolve()


def train_command(sweep_file: Path, runs_dir: Path) -> list[str]:
    """The arguments after the entry point that train one run (``--run`` is appended by the caller)."""
    return ["train", str(sweep_file), "--runs-dir", str(runs_dir), "--no-progress"]


def targets_command(sweep_file: Path, runs_dir: Path) -> list[str]:
    """The whole command that fixes ``targets.json`` (and ``selection.json``) between the phases."""
    return [entry_point(), "targets", str(sweep_file), "--runs-dir", str(runs_dir)]


def _wandb_configs(sweep: SweepConfig, sweep_dir: Path, frozen: Path) -> list[tuple[str, str]]:
    phases = sweep.phases()
    if len(phases) == 1:
        return [("wandb-sweep.yaml", _wandb_config(sweep, sweep_dir, frozen, phases[0][1], ""))]
    (first, first_runs), (_, scored) = phases
    fix = shlex.join(targets_command(frozen, sweep_dir.parent))
    order = (
        f"# Phases, in this order: 1. wandb-sweep-{first}.yaml ({len(first_runs)} {first} runs); 2. when its\n"
        f"#   agents are done, on one machine: {fix}\n"
        f"#   (fixes targets.json from them{' and selects each method' if first == 'tuning' else ''});\n"
        f"#   3. wandb-sweep-scored.yaml ({len(scored)} scored runs; a scored run refuses to start before step 2).\n"
    )
    return [
        (f"wandb-sweep-{first}.yaml", _wandb_config(sweep, sweep_dir, frozen, first_runs, order, first)),
        ("wandb-sweep-scored.yaml", _wandb_config(sweep, sweep_dir, frozen, scored, order, "scored")),
    ]


def _wandb_config(
    sweep: SweepConfig, sweep_dir: Path, frozen: Path, runs: list[str], order: str, phase: str = ""
) -> str:
    command = train_command(frozen, sweep_dir.parent)
    script = f'cd {shlex.quote(str(workdir()))} && exec {shlex.join([entry_point(), *command])} "$@"'
    name = f"{sweep.name}-{phase}" if phase else sweep.name
    file = f"wandb-sweep-{phase}.yaml" if phase else "wandb-sweep.yaml"
    config = {
        "name": name,
        "project": sweep.wandb.project,
        **({"entity": sweep.wandb.entity} if sweep.wandb.entity else {}),
        "description": f"tvr-convbench sweep {sweep.name}{f' ({phase} runs)' if phase else ''}, one wandb run per "
        "harness run",
        "program": entry_point(),
        "method": "grid",
        "metric": {"name": SELECTION_METRIC, "goal": "maximize"},
        "parameters": {"run": {"values": runs}},
        "command": ["/bin/sh", "-c", script, ENTRY_POINT, "${args}"],
    }
    header = (
        f"# wandb sweep for tvr-convbench sweep {sweep.name!r} (tvr-convbench sweep ... --export wandb).\n"
        f"{order}"
        f"# Register: wandb sweep {sweep_dir / file}\n"
        "# Then on each machine: wandb agent <entity/project/id> (the command runs in the export's folder).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, width=1000)


def _slurm_scripts(sweep: SweepConfig, sweep_dir: Path, frozen: Path) -> list[tuple[str, str]]:
    phases = sweep.phases()
    runs = [run for _, names in phases for run in names]
    logs = sweep_dir / "slurm"
    logs.mkdir(parents=True, exist_ok=True)  # sbatch does not create the --output folder
    resources, notes = slurm_resources(sweep)
    if len(phases) > 1:
        (first, first_runs), _ = phases
        notes.append(
            f"phases: tasks 0-{len(first_runs) - 1} are the {first} runs, {len(first_runs)}-{len(runs) - 1} the "
            "scored runs, which start only once targets.json is fixed from them: submit with slurm-submit.sh"
        )
    script = _slurm_script(sweep, sweep_dir, frozen, runs, resources, notes)
    if len(phases) == 1:
        return [("slurm.sbatch", script)]
    return [("slurm.sbatch", script), ("slurm-submit.sh", _slurm_submit(sweep, sweep_dir, frozen, phases, resources))]


def _slurm_script(
    sweep: SweepConfig, sweep_dir: Path, frozen: Path, runs: list[str], resources: SlurmConfig, notes: list[str]
) -> str:
    logs = sweep_dir / "slurm"
    command = train_command(frozen, sweep_dir.parent)
    directives = [
        f"--job-name=tvr-{sweep.name}",
        f"--array=0-{len(runs) - 1}{_limit(resources)}",
        "--ntasks=1",
        *(f"--partition={resources.partition}" for _ in [0] if resources.partition),
        *(f"--gres={resources.gres}" for _ in [0] if resources.gres),
        *(f"--cpus-per-task={resources.cpus_per_task}" for _ in [0] if resources.cpus_per_task),
        *(f"--mem={resources.mem}" for _ in [0] if resources.mem),
        *(f"--time={resources.time}" for _ in [0] if resources.time),
        *resources.extra,
        f"--output={logs}/%A_%a.out",
    ]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        f"# tvr-convbench sweep {sweep.name!r} (tvr-convbench sweep ... --export slurm): array task i trains run i.",
        *(f"# {note}" for note in notes),
        "# A done run is skipped and an unfinished one resumes, so resubmitting this script finishes the sweep.",
        f"# Report: {shlex.join([entry_point(), 'report', sweep.name, '--runs-dir', str(sweep_dir.parent)])}",
        "set -euo pipefail",
        f"RUNS=({' '.join(shlex.quote(r) for r in runs)})",
        f"cd {shlex.quote(str(workdir()))}",
        f'exec "${{TVR_CONVBENCH:-{entry_point()}}}" {shlex.join(command)} --run "${{RUNS[$SLURM_ARRAY_TASK_ID]}}"',
    ]
    return "\n".join(lines) + "\n"


def _slurm_submit(
    sweep: SweepConfig, sweep_dir: Path, frozen: Path, phases: list[tuple[str, list[str]]], resources: SlurmConfig
) -> str:
    """POSIX ``sh``: the first phase's array, then one job fixing the targets once every task of it ended (in any
    state: a failed run counts as the worst), then the scored array once that job succeeded."""
    (first, first_runs), (_, scored) = phases
    n, total = len(first_runs), len(first_runs) + len(scored)
    script = shlex.quote(str(sweep_dir / "slurm.sbatch"))
    fix = f"cd {shlex.quote(str(workdir()))} && exec {shlex.join(targets_command(frozen, sweep_dir.parent))}"
    partition = [f"--partition={resources.partition}"] if resources.partition else []
    options = " ".join(shlex.quote(o) for o in [*partition, *resources.extra])  # the account etc. apply here too
    lines = [
        "#!/bin/sh",
        f"# tvr-convbench sweep {sweep.name!r} on SLURM, phase by phase: the {n} {first} runs (array tasks 0-{n - 1}",
        "# of slurm.sbatch), then one job that fixes targets.json (and with tuning selection.json) from them, then",
        f"# the {len(scored)} scored runs (tasks {n}-{total - 1}), each after the one before. Run it again after a",
        "# failure or a timeout: done runs are skipped, unfinished ones resume, fixed targets are kept.",
        "set -eu",
        f"first=$(sbatch --parsable --array=0-{n - 1}{_limit(resources)} {script})",
        f'fix=$(sbatch --parsable --dependency=afterany:"${{first%%;*}}" --job-name=tvr-{sweep.name}-targets '
        f"--ntasks=1 {options}{' ' if options else ''}--output={shlex.quote(str(sweep_dir / 'slurm'))}/%j-targets.out "
        f"--wrap={shlex.quote(fix)})",
        f'scored=$(sbatch --parsable --dependency=afterok:"${{fix%%;*}}" --array={n}-{total - 1}{_limit(resources)} '
        f"{script})",
        'echo "submitted: ' + first + ' array ${first%%;*}, targets ${fix%%;*}, scored array ${scored%%;*}"',
    ]
    return "\n".join(lines) + "\n"


def _limit(resources: SlurmConfig) -> str:
    return f"%{resources.array_parallel}" if resources.array_parallel else ""


def slurm_resources(sweep: SweepConfig) -> tuple[SlurmConfig, list[str]]:
    """The sweep's ``slurm`` section with every unset field derived from its runs (the largest need of any run),
    and comment lines saying where each value comes from."""
    given = getattr(sweep, "slurm", None) or SlurmConfig()
    runs = sweep.runs()
    gpus = max((cfg.trainer.devices if on_gpu(cfg) else 0) for cfg in runs)
    workers = max(int(cfg.data.get("workers", 0) or 0) for cfg in runs)
    threads = max(cfg.trainer.num_threads for cfg in runs)
    devices = max(cfg.trainer.devices for cfg in runs)
    derived, notes = {}, []
    if given.gres is None:
        derived["gres"] = f"gpu:{gpus}" if gpus else ""
    if given.cpus_per_task is None:
        derived["cpus_per_task"] = devices * (max(threads, 1) + workers) if (threads or workers) else None
    if given.mem is None:
        derived["mem"] = f"{devices * (8 + 2 * workers)}G" if gpus else None
    out = SlurmConfig(**{**given.__dict__, **derived})
    tc = runs[0].trainer
    why = {
        "gres": f"trainer.accelerator {tc.accelerator}, precision {tc.precision}, {devices} device(s)",
        "cpus_per_task": f"{devices} process(es) x ({max(threads, 1)} torch thread(s) + {workers} data.workers)",
        "mem": f"{devices} device(s) x (8 + 2 x {workers} data.workers) GB",
    }
    for key in derived:
        value = getattr(out, key)
        if value:
            notes.append(f"--{key.replace('_', '-')}={value}: derived from {why[key]} (set slurm.{key} to change)")
    unset = [k for k in ("partition", "time") if getattr(out, k) is None]
    if unset:
        keys = ", ".join(f"slurm.{k}" for k in unset)
        notes.append(
            f"cluster defaults for {', '.join('--' + k for k in unset)}: set {keys} (e.g. --set slurm.time=04:00:00)"
        )
    return out, notes


def on_gpu(cfg: RunConfig) -> bool:
    """Whether a run trains on GPUs: ``accelerator: gpu``, or ``auto`` with mixed precision or a trainable CLIP."""
    tc = cfg.trainer
    if tc.accelerator == "gpu":
        return True
    if tc.accelerator == "cpu":
        return False
    return tc.precision != "32-true" or cfg.data.get("regime") in ("partial", "full")
