"""``tvr-convbench {sweep,train,report,perf,data,config,list}`` (or ``python -m tvr_convbench ...``): thin entry points
over the library.

Exit codes: 0 success; 1 some run failed (the others finished, see the summary); 2 bad input (unknown
method/sweep/key, wrong type, bad value): a one-line error naming the source and key, and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvr_convbench.bench.config import load_sweep, load_sweeps
from tvr_convbench.core.errors import USER_ERRORS, ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvr-convbench", description="tvr-convbench: convergence benchmarks for text-video retrieval"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run a sweep (methods x seeds), then write its report")
    sweep.add_argument("sweep", help="a shipped sweep name (bench/configs/sweeps/) or a path to a sweep YAML")
    _dirs(sweep)
    sweep.add_argument(
        "--jobs", default="1",
        help="runs in parallel processes: a number, or 'auto' (cores / trainer.num_threads; default 1)",
    )  # fmt: skip
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    sweep.add_argument("--no-report", action="store_true", help="skip the report at the end")
    sweep.add_argument("--export", choices=("wandb", "slurm"), help="write a wandb sweep / SLURM array and exit")
    _restart(sweep)
    _overrides(sweep)
    train = sub.add_parser("train", help="train (or resume) one run of a sweep")
    train.add_argument("sweep")
    train.add_argument("--run", required=True, help="run name, e.g. glscl-s0")
    _world(train)
    _dirs(train)
    _restart(train)
    _overrides(train)
    targets = sub.add_parser("targets", help="fix runs/<sweep>/targets.json from its finished reference runs")
    targets.add_argument("sweep")
    _world(targets)
    _dirs(targets)
    _overrides(targets)
    train.add_argument("--no-progress", action="store_true")
    report = sub.add_parser("report", help="rebuild reports/<sweep>/ from the run log alone")
    report.add_argument("sweep", help="sweep name (its run log is runs/<sweep>/)")
    _dirs(report)
    perf = sub.add_parser("perf", help="performance benchmark -> reports/bench/bench.{json,md}")
    perf.add_argument("--quick", action="store_true", help="tiny shapes and few repetitions (seconds)")
    perf.add_argument("--out", type=Path, default=Path("reports/bench"))
    perf.add_argument("--runs-dir", type=Path, default=Path("runs"), help="run log root to read eval shares from")
    perf.add_argument("--sweep", default="default", help="the sweep whose protocol and run log are measured")
    workspace = sub.add_parser(
        "wandb-workspace",
        help="the sweep's wandb workspace (saved with an account, else reports/<sweep>/wandb-workspace.json)",
    )
    workspace.add_argument("sweep", help="sweep name (its run log is runs/<sweep>/)")
    _dirs(workspace)
    workspace.add_argument("--entity", help="wandb entity to save to (default: the sweep's wandb.entity)")
    workspace.add_argument("--no-save", action="store_true", help="only write the JSON definition")
    config = sub.add_parser("config", help="print the fully resolved sweep: every field, its default and its doc")
    config.add_argument("sweep", help="a shipped sweep name or a path to a sweep YAML")
    _world(config)
    _overrides(config)
    sub.add_parser("list", help="registered methods, datasets and shipped sweeps")
    _add_data_parser(sub)
    return parser


def _world(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", help="of a sweep over several proxy worlds, the world to use")


def _dirs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="run log root (default runs/)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"), help="report root (default reports/)")


def _restart(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--restart-changed", action="store_true",
        help="wipe and rerun from scratch a run whose folder was made with a different config (default: refuse)",
    )  # fmt: skip


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a sweep setting, e.g. --set trainer.max_steps=200 --set data.store=/data/store (repeatable)",
    )  # fmt: skip


def _add_data_parser(sub) -> None:  # noqa: ANN001 - argparse's private subparser type
    from tvr_convbench.bench import data_cmd

    data_cmd.add_parser(sub)


def cmd_sweep(args: argparse.Namespace) -> int:
    from tvr_convbench.bench.sweep import run_sweep

    sweeps = load_sweeps(args.sweep, args.overrides)  # a study: one sweep per world, all checked first
    if args.export:
        from tvr_convbench.bench.export import export_sweep

        for sweep in sweeps:
            for path in export_sweep(sweep, args.export, args.runs_dir, args.sweep):
                print(f"wrote {path}")
        return 0
    from tvr_convbench.bench.targets import TargetsError

    codes = []
    jobs = parse_jobs(args.jobs, sweeps[0])
    for sweep in sweeps:
        reports = None if args.no_report else args.reports_dir / sweep.name
        try:
            outcomes = run_sweep(sweep, args.runs_dir, jobs, not args.no_progress, reports, args.restart_changed)
        except TargetsError as err:
            print(f"error: {sweep.name}: the targets cannot be fixed: {err}; no scored run started", file=sys.stderr)
            codes.append(1)
            continue
        if not args.no_report:
            _report(sweep.name, args.runs_dir, args.reports_dir)
        codes.append(_sweep_summary(sweep.name, outcomes))
    if sweeps[0].study and not args.no_report:
        _study_report(sweeps[0].study, args.runs_dir, args.reports_dir)
    return max(codes)


def parse_jobs(value: str, sweep) -> int:  # noqa: ANN001 - a SweepConfig
    """``--jobs``: a positive number, or ``auto``: as many processes as the cores hold at the protocol's
    ``trainer.num_threads`` threads each (one process when it is 0, torch's all-cores default). The protocol fixes
    the threads, so a run's numbers are the same however many run beside it."""
    from tvr_convbench.bench.sweep import auto_jobs

    if value == "auto":
        return auto_jobs(sweep.trainer.num_threads)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--jobs must be a positive number or 'auto', got {value!r}")
    return int(value)


def _sweep_summary(name: str, outcomes: list) -> int:
    """The closing line; exit code 1 only when a run failed. A diverged run is a result (a censored miss, which a
    rerun skips), not a failure: the sweep went on and the exit code stays 0, the line says how many."""
    failed = [o for o in outcomes if o.result == "failed"]
    diverged = [o for o in outcomes if o.result == "diverged"]
    done = sum(o.result == "done" for o in outcomes)
    counted = f", {len(diverged)} diverged (censored misses)" if diverged else ""
    print(f"sweep {name}: {done}/{len(outcomes)} runs done, {len(failed)} failed{counted}")
    for outcome in failed + diverged:
        print(f"  {outcome.line}", file=sys.stderr)
    return 1 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    """One run: every check first (writing nothing), then, holding the run folder's lock, the run."""
    from tvr_convbench.bench.selection import check_selection_file, read_selection
    from tvr_convbench.bench.sweep import changed_runs, check_compatible, preflight, run_one
    from tvr_convbench.bench.targets import check_targets_file
    from tvr_convbench.core.files import atomic_write_yaml, check_unlocked, folder_lock
    from tvr_convbench.core.schema import RunPaths, SweepPaths

    sweep = load_sweep(args.sweep, args.overrides, args.world)
    sweep_dir = args.runs_dir / sweep.name
    check_selection_file(sweep, sweep_dir)
    runs = {cfg.run: cfg for cfg in sweep.runs(read_selection(sweep, sweep_dir))}
    if args.run not in runs:
        _unknown_run(sweep, args, runs)
    cfg = runs[args.run]
    lock = RunPaths(sweep_dir / cfg.run).lock
    check_unlocked(lock, "training process")
    changed = [c.run for c, _ in changed_runs(sweep_dir, [cfg])]
    if changed and not args.restart_changed:
        check_compatible(sweep_dir, [cfg])  # raises the one-line mismatch error
    check_targets_file(sweep, sweep_dir)
    if (
        cfg.phase == "scored"
        and sweep.targets.source in ("reference", "tuning")
        and not SweepPaths(sweep_dir).targets.exists()
    ):
        raise ConfigError(
            f"{args.run}: a scored run starts only after the targets are fixed ({SweepPaths(sweep_dir).targets} "
            f"is missing): train the reference runs, then `tvr-convbench targets {args.sweep}`"
        )
    preflight(sweep, sweep_dir, rerun=changed, planned=[cfg])
    with folder_lock(lock, "training process"):
        for run in check_compatible(sweep_dir, [cfg], args.restart_changed):
            print(f"{run}: made with another config; wiped, rerun from scratch (--restart-changed)", flush=True)
        atomic_write_yaml(SweepPaths(sweep_dir).sweep, sweep.to_dict())
        outcome = run_one(cfg, sweep_dir, progress=not args.no_progress)
    print(outcome.line)
    return 1 if outcome.status == "failed" else 0


def _unknown_run(sweep, args: argparse.Namespace, runs: dict) -> None:  # noqa: ANN001 - a SweepConfig
    from tvr_convbench.core.registry import suggest

    scored = {f"{spec.label}-s{seed}" for spec in sweep.methods for seed in sweep.seeds}
    if sweep.tuning.enabled and args.run in scored:
        raise ConfigError(
            f"{args.run}: a scored run of a tuned sweep starts only after the selection (selection.json is missing):"
            f" train the tuning runs, then `tvr-convbench targets {args.sweep}` (it also selects)"
        )
    raise ConfigError(f"sweep {sweep.name!r} has no run {args.run!r}{suggest(args.run, runs)} ({', '.join(runs)})")


def cmd_targets(args: argparse.Namespace) -> int:
    """Fix ``targets.json`` from the finished reference (or tuning) runs, and with a tuning section
    ``selection.json`` (exit 1 when they cannot be fixed yet)."""
    from tvr_convbench.bench.selection import check_selection_file
    from tvr_convbench.bench.sweep import fix_sweep_selection, fix_sweep_targets
    from tvr_convbench.bench.targets import TargetsError, check_targets_file
    from tvr_convbench.core.schema import SweepPaths

    sweep = load_sweep(args.sweep, args.overrides, args.world)
    sweep_dir = args.runs_dir / sweep.name
    path = SweepPaths(sweep_dir).targets
    if sweep.targets.source == "posthoc":
        print(f"sweep {sweep.name}: no targets section, the targets are post hoc (nothing to fix)")
        return 0
    check_targets_file(sweep, sweep_dir)
    check_selection_file(sweep, sweep_dir)
    if path.exists():
        print(f"targets already fixed: {path}")
    try:
        fix_sweep_selection(sweep, sweep_dir, fix_sweep_targets(sweep, sweep_dir))
    except TargetsError as err:
        print(f"error: the targets cannot be fixed: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tvr_convbench.bench.analysis.study import is_study, study_dirs

    sweep_dir = args.runs_dir / args.sweep
    if "/" not in args.sweep and is_study(args.sweep, args.runs_dir):
        for world_dir in study_dirs(args.sweep, args.runs_dir).values():
            _report(world_dir.name, args.runs_dir, args.reports_dir)
        _study_report(args.sweep, args.runs_dir, args.reports_dir)
        return 0
    if "/" in args.sweep or not (sweep_dir / "sweep.yaml").is_file():
        raise ConfigError(f"no run log for sweep {args.sweep!r}: {sweep_dir / 'sweep.yaml'} does not exist")
    _report(args.sweep, args.runs_dir, args.reports_dir)
    return 0


def _study_report(name: str, runs_dir: Path, reports_dir: Path) -> None:
    from tvr_convbench.bench.analysis.study import write_study_report

    print(f"study report: {write_study_report(name, runs_dir, reports_dir / name)}")


def _report(name: str, runs_dir: Path, reports_dir: Path) -> None:
    from tvr_convbench.bench.analysis import write_report
    from tvr_convbench.bench.runlog import collect_results

    collect_results(runs_dir / name)
    path = write_report(runs_dir / name, reports_dir / name)
    print(f"report: {path}")
    from tvr_convbench.bench.mirror_report import mirror_targets

    mirror_targets(runs_dir / name, reports_dir / name)


def cmd_perf(args: argparse.Namespace) -> int:
    from tvr_convbench.bench.perf import main as perf_main

    return perf_main(quick=args.quick, out=args.out, runs_dir=args.runs_dir, sweep=args.sweep)


def cmd_wandb_workspace(args: argparse.Namespace) -> int:
    from tvr_convbench.bench.wandb_workspace import run_command

    return run_command(args.sweep, args.runs_dir, args.reports_dir, entity=args.entity, save=not args.no_save)


def cmd_config(args: argparse.Namespace) -> int:
    from tvr_convbench.bench.print_config import render_config

    sweeps = (
        [load_sweep(args.sweep, args.overrides, args.world)] if args.world else load_sweeps(args.sweep, args.overrides)
    )
    print("---\n".join(render_config(sweep) for sweep in sweeps), end="")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tvr_convbench.bench.config import shipped_sweeps
    from tvr_convbench.datasets import list_datasets
    from tvr_convbench.methods import METHODS, list_methods

    for name in list_methods():
        print(f"method   {name:12s} {METHODS.get(name).cls.cost_class.value}")
    for name in list_datasets():
        print(f"dataset  {name}")
    for name in shipped_sweeps():
        print(f"sweep    {name}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from tvr_convbench.bench import data_cmd

    return data_cmd.run(args)


COMMANDS = {
    "sweep": cmd_sweep,
    "train": cmd_train,
    "targets": cmd_targets,
    "report": cmd_report,
    "perf": cmd_perf,
    "config": cmd_config,
    "wandb-workspace": cmd_wandb_workspace,
    "list": cmd_list,
    "data": cmd_data,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
