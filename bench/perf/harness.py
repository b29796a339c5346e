"""Harness cost: a real ``bench.trainer.Run`` of the sweep, driven through the trainer's own loop iteration.

Per method of the sweep (its first seed): the ``Run`` is built as ``bench sweep`` builds it, then warm-up and
``plan.harness_steps`` measured iterations of ``Run.advance`` (fetch the next batch, ``Run.train_step`` = the
``StepFunction``, step counter, clock, pending rows), each followed by a progress-bar update as ``Run.train``
does on a terminal. Timers are wrapped around the batch iterator (data fetch) and around the step's compute
calls on the objects the ``StepFunction`` holds (model forward, ``training_forward``, backward, clip, optimizer
step and zero_grad, ``after_optimizer_step``); the rest of an iteration (lr schedule, ``.item()`` of the losses,
bookkeeping, progress bar) is the loop's own cost. Overhead = (iteration - compute) / iteration.

Evaluation: the run's own ``Run.evaluate`` on the splits the trainer evaluates (val, and test with ``eval_test``);
a first, untimed val evaluation counts the items each encoder sees (each must be encoded once). The evaluations of
a run are ``len(TrainerConfig.eval_steps())``. Eval share = evaluation seconds / (evaluation seconds + train
seconds): from the sweep's run log when it has finished runs (``bench.analysis.aggregate.run_costs``, the median
over the method's runs), else computed from the measured step and evaluation times with the same formula.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
from tqdm.auto import tqdm

from tvr_convbench.bench.config import TrainerConfig, load_sweep
from tvr_convbench.bench.perf.plan import Plan
from tvr_convbench.bench.perf.probes import Stopwatch, repeat_timed
from tvr_convbench.bench.trainer import Run
from tvr_convbench.core.schema import SweepPaths
from tvr_convbench.methods import list_methods
from tvr_convbench.methods.base import FeatureBatch, Rep, RetrievalMethod


class EncodeCounter:
    """Counts the items a method's encoders see (wraps ``encode_text`` / ``encode_video`` on the instance)."""

    def __init__(self, method: RetrievalMethod) -> None:
        self.text = 0
        self.video = 0
        encode_text = method.encode_text
        encode_video = method.encode_video

        def text(batch: FeatureBatch) -> Rep:
            self.text += batch["text_eot"].shape[0]
            return encode_text(batch)

        def video(batch: FeatureBatch) -> Rep:
            self.video += batch["video_frames"].shape[0]
            return encode_video(batch)

        method.encode_text = text
        method.encode_video = video


class TimedIterator:
    """An iterator whose ``next`` is timed by ``watch`` (the data fetch of ``Run.advance``)."""

    def __init__(self, inner: Iterator[FeatureBatch], watch: Stopwatch) -> None:
        self.fetch = watch.wrap(inner.__next__)

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> FeatureBatch:
        return self.fetch()


# --- the run -------------------------------------------------------------------------------------------------
def sweep_run(name: str, plan: Plan, root: Path, sweep: str = "default") -> Run:
    """A built ``Run`` of ``sweep`` for method ``name`` (its first seed), logging under ``root``."""
    overrides = [f"data.{key}={value}" for key, value in plan.proxy_data]
    if plan.quick:
        overrides.append(f"data.cache_dir={root / 'proxy-cache'}")
    cfg = next(c for c in load_sweep(sweep, overrides).runs() if c.method == name)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision=cfg.trainer.precision)
    run = Run(cfg, root / cfg.run, root / "wandb", fabric, progress=False)
    run.build()
    return run


def time_compute(run: Run) -> Stopwatch:
    """Wrap the compute calls of the run's ``StepFunction`` with one stopwatch (see the module docstring)."""
    watch = Stopwatch()
    for owner, attr in compute_calls(run):
        setattr(owner, attr, watch.wrap(getattr(owner, attr)))
    return watch


def compute_calls(run: Run) -> list[tuple[Any, str]]:
    """(object, attribute) of every compute call of one step, on the objects the ``StepFunction`` calls."""
    step_fn = run.step_fn
    calls = [(step_fn, "forward"), (step_fn.method, "training_forward"), (step_fn.method, "after_optimizer_step")]
    calls += [(step_fn.fabric, "backward"), (step_fn.fabric, "clip_gradients")]
    if step_fn.optimizer is not None:
        calls += [(step_fn.optimizer, "step"), (step_fn.optimizer, "zero_grad")]
    return calls


def measure_loop(run: Run, plan: Plan) -> dict[str, float]:
    """Warm-up, then ``plan.harness_steps`` timed iterations of ``Run.advance`` (+ a progress-bar update)."""
    compute = time_compute(run)
    fetch = Stopwatch()
    stream = TimedIterator(run.stream.iterate(run.step, run.step + plan.warmup + plan.harness_steps), fetch)
    bar = tqdm(total=plan.harness_steps, file=io.StringIO(), disable=False, mininterval=0.1)
    for _ in range(plan.warmup):
        run.advance(stream)
    compute.seconds = 0.0
    fetch.seconds = 0.0
    start = time.perf_counter()
    for _ in range(plan.harness_steps):
        run.advance(stream)
        bar.update(1)
    return overhead(time.perf_counter() - start, compute.seconds, fetch.seconds, plan.harness_steps)


def overhead(total: float, compute: float, fetch: float, steps: int) -> dict[str, float]:
    """Per-step times (ms) of the loop and its parts, and the overhead fraction."""
    return {
        "step_ms": 1e3 * total / steps,
        "compute_ms": 1e3 * compute / steps,
        "data_ms": 1e3 * fetch / steps,
        "other_ms": 1e3 * (total - compute - fetch) / steps,
        "overhead_fraction": (total - compute) / total,
    }


# --- evaluation ----------------------------------------------------------------------------------------------
def evaluations_per_run(tc: TrainerConfig) -> int:
    """How many times a run evaluates: the steps of ``TrainerConfig.eval_steps()`` (step 0 and the last included)."""
    return len(tc.eval_steps())


def measure_evaluation(run: Run, plan: Plan) -> dict[str, Any]:
    """Seconds of one evaluation (the trainer's splits), items encoded per val evaluation, evaluations per run."""
    counter = EncodeCounter(run.method)
    run.evaluate("val")  # warm-up, counted
    texts = counter.text
    videos = counter.video
    splits = ("val", "test") if run.tc.eval_test else ("val",)
    reps = replace(plan, min_reps=2, max_reps=3, seconds=0.0)
    seconds = repeat_timed(lambda: [run.evaluate(split) for split in splits], reps, warmup=0)
    return {
        "eval_seconds": statistics.median(seconds),
        "val_items": len(run.data.split("val")),
        "texts_encoded_per_eval": texts,
        "videos_encoded_per_eval": videos,
        "max_steps": run.tc.max_steps,
        "val_every": run.tc.val_every,
        "evaluations": evaluations_per_run(run.tc),
    }


def eval_share(eval_seconds: float, train_seconds: float) -> float:
    """Evaluation's share of a run: evaluation seconds / (evaluation seconds + train seconds)."""
    return eval_seconds / (eval_seconds + train_seconds)


def evaluation_share(row: dict[str, Any], logged: dict[str, float], source: str) -> dict[str, Any]:
    """A harness row's eval share: from the run log (``logged``, read from ``source``) when it has the method, else
    computed with ``eval_share`` for the row's evaluations and steps."""
    if row["method"] in logged:
        return {"eval_share": logged[row["method"]], "eval_share_source": f"run log ({source})"}
    evaluating = row["evaluations"] * row["eval_seconds"]
    training = row["max_steps"] * row["step_ms"] / 1e3
    return {"eval_share": eval_share(evaluating, training), "eval_share_source": "computed"}


def logged_eval_shares(sweep_dir: Path) -> dict[str, float]:
    """Per method label, the median over the finished runs of ``sweep_dir`` of the analysis's eval share
    (``bench.analysis.aggregate.run_costs`` on ``bench.analysis.load_sweep``); empty without a run log."""
    from tvr_convbench.bench import analysis  # pandas: imported only when a run log is read
    from tvr_convbench.bench.analysis.aggregate import run_costs

    if not SweepPaths(sweep_dir).sweep.is_file():
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analysis.SweepLogWarning)  # missing or running runs do not count here
        metrics = analysis.load_sweep(sweep_dir).metrics
    if metrics.empty:
        return {}
    costs = run_costs(metrics).dropna(subset=["eval_share"])
    return {str(k): float(v) for k, v in costs.groupby("method")["eval_share"].median().items()}


# --- per method ----------------------------------------------------------------------------------------------
def measure_harness(name: str, plan: Plan, root: Path, sweep: str = "default") -> dict[str, Any]:
    """Overhead share of a step, evaluation cost and the encode-once count, on a real ``Run`` of ``sweep``."""
    run = sweep_run(name, plan, root, sweep)
    return {"method": name, **measure_loop(run, plan), **measure_evaluation(run, plan)}


def measure_all_harness(plan: Plan, runs_dir: Path, sweep: str) -> list[dict[str, Any]]:
    """``measure_harness`` of every method of ``sweep`` with its eval share (the run log is not read in a quick
    run: a tiny proxy is not comparable with it)."""
    sweep_dir = runs_dir / sweep
    logged = {} if plan.quick else logged_eval_shares(sweep_dir)
    planned = {c.method for c in load_sweep(sweep).runs()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        for name in (m for m in list_methods() if m in planned):
            row = measure_harness(name, plan, Path(tmp), sweep)
            rows.append({**row, **evaluation_share(row, logged, str(sweep_dir))})
    return rows
