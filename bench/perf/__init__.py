"""``tvr-convbench perf``: what the harness and every method cost on this machine, measured against its own limit.

Writes ``<out>/bench.json`` (every number) and ``<out>/bench.md`` (tables and the targets), atomically. The
measurements, one module each (their docstrings say how):

- ``probes``: the tools (timing repetitions, FLOP counting, the one peak-memory probe) and the machine's fp32 matmul
  peak, measured at the start and at the end of the run (the best is kept), which every rate is divided by;
- ``training``: per method, one optimizer step of the trainer's own ``StepFunction`` at DiDeMo and proxy shapes;
- ``harness``: the loop overhead and evaluation cost of a real ``Run`` of the sweep, driven through
  ``Run.advance``, and evaluation's share of a run (from ``runs/<sweep>`` when it has finished runs);
- ``retrieval``: scoring N x N pairs from cached encodings for growing N;
- ``throughput``: runs per hour of the sweep's runs, one at a time vs ``--jobs auto``;
- ``targets`` and ``render``: the pass/fail targets and bench.md. ``plan`` holds the sizes of a full and a
  ``--quick`` run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvr_convbench.bench.config import load_sweep
from tvr_convbench.bench.perf.harness import measure_all_harness
from tvr_convbench.bench.perf.plan import FULL, QUICK, Plan, plan_dict
from tvr_convbench.bench.perf.probes import measure_machine
from tvr_convbench.bench.perf.render import NOTES, render
from tvr_convbench.bench.perf.retrieval import measure_all_retrieval
from tvr_convbench.bench.perf.targets import encodes_once, targets
from tvr_convbench.bench.perf.throughput import measure_throughput
from tvr_convbench.bench.perf.training import measure_all_training
from tvr_convbench.core.files import atomic_write_json, atomic_write_text
from tvr_convbench.methods import list_methods

SCHEMA = 1


def main(quick: bool, out: Path, runs_dir: Path = Path("runs"), sweep: str = "default") -> int:
    """Run the benchmark (``quick``: tiny shapes, seconds) of ``sweep`` (its run log under ``runs_dir``) and write
    ``out/bench.json`` and ``out/bench.md``; 1 when some evaluation encodes an item more than once."""
    result = run_benchmark(QUICK if quick else FULL, runs_dir, sweep)
    write_outputs(result, out)
    report_targets(result["targets"])
    return 0 if all(encodes_once(r) for r in result["harness"]) else 1


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """bench.json and bench.md, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench.json", result)
    atomic_write_text(out / "bench.md", render(result))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")


def report_targets(rows: list[dict[str, Any]]) -> None:
    failed = [t["name"] for t in rows if not t["pass"]]
    print(f"targets: {len(rows) - len(failed)} pass, {len(failed)} fail")
    for name in failed:
        print(f"  FAIL {name}")


def run_benchmark(plan: Plan, runs_dir: Path = Path("runs"), sweep: str = "default") -> dict[str, Any]:
    """Every measurement of the plan, as one JSON-ready dict."""
    methods = list_methods()
    machine = measure_machine(plan)
    print(f"machine: {machine['peak_gflops']:.1f} GFLOP/s peak, {machine['threads']} threads", flush=True)
    training = measure_all_training(methods, plan, load_sweep(sweep).trainer)
    print("training steps measured", flush=True)
    harness = measure_all_harness(plan, runs_dir, sweep)
    print("harness measured", flush=True)
    retrieval = measure_all_retrieval(methods, plan)
    print("retrieval measured", flush=True)
    throughput = measure_throughput(plan, sweep)
    print(f"throughput measured: {throughput['speedup']:.2f}x the runs per hour with --jobs auto", flush=True)
    again = measure_machine(plan)["peak_gflops"]  # a shared machine can depress one measurement: keep the best
    machine["peak_gflops"] = max(machine["peak_gflops"], again)
    for row in training:
        row["fraction_of_peak"] = row["gflops"] / machine["peak_gflops"]
    result = {"schema": SCHEMA, "sweep": sweep, "plan": plan_dict(plan), "machine": machine, "training": training,
              "harness": harness, "retrieval": retrieval, "throughput": throughput, "notes": NOTES}  # fmt: skip
    result["targets"] = targets(result)
    return result
