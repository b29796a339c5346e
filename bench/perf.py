"""``python -m bench perf``: what the harness and every method cost on this machine, measured against its own limit.

Writes ``<out>/bench.json`` (every number) and ``<out>/bench.md`` (tables and the targets), atomically.

- Machine: the best of several large fp32 matmuls (GFLOP/s), measured at the start and at the end of the run, is
  the peak every other rate is divided by, so the figures compare across machines; thread count and torch version
  next to it.
- Training: one optimizer step per registered method in the frozen regime, driven as the trainer drives it
  (``RunModel`` = identity-initialised adapter backbone + method, the method's ``param_groups``,
  ``build_optimizer``, ``training_forward``, backward, global-norm clip, step), at DiDeMo shapes and at the
  default proxy's shapes. Median and IQR of the wall time over repetitions after warm-up steps; FLOPs from
  ``FlopCounterMode`` (matmul-family ops only: elementwise work is not counted); peak memory = the most bytes of
  tensors created inside one step alive at once (a ``TorchDispatchMode`` tracker: activations, gradients and
  temporaries; parameters and optimizer state, which exist before the step, are not counted).
- Harness: a real ``bench.trainer.Run`` of the default sweep, its compute calls (model forward,
  ``training_forward``, backward, clip, optimizer step and zero_grad, logit-scale clamp) wrapped with timers; the
  rest of a step (data fetch, lr schedule, ``.item()`` of the losses, bookkeeping, progress bar) is the overhead.
  Evaluation time is the run's own ``evaluate("val")``; its share of a sweep run's wall time is read from
  ``runs/default`` when a run log exists there, else computed as ``E x eval / (steps x step + E x eval)`` with
  ``E = max_steps / val_every + 1`` evaluations. The same evaluation counts the items each encoder sees.
- Retrieval: ``blockwise_similarity`` over cached encodings (``max_eval_block`` blocks) for growing N; a point
  predicted to take longer than the plan's budget is extrapolated from the measured ones with the fitted log-log
  slope (marked as such, never as a measurement). Encodings of a few distinct items are repeated up to N (the
  cost of scoring does not depend on the values).
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from tvr_convbench.bench.config import load_sweep
from tvr_convbench.bench.evaluate import blockwise_similarity
from tvr_convbench.core.files import atomic_write_json, atomic_write_text
from tvr_convbench.datasets.base import FeatureBackbone
from tvr_convbench.methods import build_method, list_methods
from tvr_convbench.methods.base import FeatureBatch, Rep, RetrievalMethod
from tvr_convbench.methods.parts.optim import build_optimizer

GIB = 2**30
SCHEMA = 1


@dataclass(frozen=True)
class Shapes:
    """Feature shapes of one benchmark setting."""

    name: str
    width: int
    frames: int
    words: int
    batch: int = 32

    def dims(self) -> dict[str, int]:
        return {"width": self.width, "max_frames": self.frames, "max_words": self.words}


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run (minutes) or ``--quick`` (seconds, tiny shapes)."""

    quick: bool
    matmul_n: int
    didemo: Shapes
    proxy: Shapes
    warmup: int
    min_reps: int
    max_reps: int
    seconds: float
    """time budget of one repeated measurement (repetitions stop after it, once ``min_reps`` are done)"""
    sizes: tuple[int, ...]
    """N of the retrieval table (N x N pairs)"""
    point_seconds: float
    """a retrieval point predicted to take longer is extrapolated"""
    distinct: int
    """distinct items encoded for the retrieval table (repeated up to N)"""
    proxy_n: int
    pilots: tuple[int, ...]
    """smaller retrieval sizes measured first, only to fit the growth exponent"""
    harness_steps: int
    proxy_data: tuple[tuple[str, Any], ...] = ()
    """data overrides of the default sweep for the harness measurement (none in the full run)"""


FULL = Plan(
    quick=False,
    matmul_n=2048,
    didemo=Shapes("didemo", 512, 64, 64),
    proxy=Shapes("proxy", 64, 8, 40),
    warmup=2,
    min_reps=5,
    max_reps=40,
    seconds=3.0,
    sizes=(256, 1004, 4096),
    point_seconds=20.0,
    distinct=64,
    proxy_n=500,
    pilots=(64, 128),
    harness_steps=30,
)
QUICK = Plan(
    quick=True,
    matmul_n=256,
    didemo=Shapes("didemo (tiny)", 32, 6, 8, batch=8),
    proxy=Shapes("proxy (tiny)", 16, 4, 6, batch=8),
    warmup=1,
    min_reps=3,
    max_reps=3,
    seconds=0.0,
    sizes=(32, 64),
    point_seconds=1.0,
    distinct=16,
    proxy_n=48,
    pilots=(16,),
    harness_steps=4,
    proxy_data=(("train_videos", 64), ("val_videos", 48), ("test_videos", 16)),
)


# --- measuring tools -----------------------------------------------------------------------------------------
class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created inside the ``with`` block and alive at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = storage.data_ptr()
        if key == 0 or key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def repeat_timed(fn: Callable[[], Any], plan: Plan, warmup: int | None = None) -> list[float]:
    """Wall seconds of ``fn`` per call, after ``warmup`` untimed calls, until the plan's budget is spent."""
    for _ in range(plan.warmup if warmup is None else warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < plan.max_reps and (len(times) < plan.min_reps or time.perf_counter() - start < plan.seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def spread(seconds: list[float]) -> dict[str, float]:
    """Median and interquartile range of a list of durations, in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0],) * 3
    return {"ms_median": statistics.median(ms), "ms_iqr": q3 - q1, "reps": len(ms)}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmul-family ops, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_bytes(fn: Callable[[], Any]) -> int:
    with LiveBytes() as tracker:
        fn()
    return tracker.peak


# --- machine -------------------------------------------------------------------------------------------------
def measure_machine(plan: Plan) -> dict[str, Any]:
    """The machine's fp32 matmul peak (best of several n x n products) and its description."""
    n = plan.matmul_n
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(repeat_timed(lambda: a @ b, replace(plan, min_reps=5, max_reps=10, seconds=1.0), warmup=1))
    return {
        "peak_gflops": 2 * n**3 / best / 1e9,
        "matmul_n": n,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cores": os.cpu_count() or 1,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- training step -------------------------------------------------------------------------------------------
def feature_batch(shapes: Shapes, batch: int, seed: int = 0) -> FeatureBatch:
    """Synthetic frozen-regime features with DiDeMo's structure: variable text and video lengths, padded slots
    holding one constant feature (CLIP's pad token / blank frame)."""
    g = torch.Generator().manual_seed(seed)
    words, frames, width = shapes.words, shapes.frames, shapes.width
    text_len = torch.randint(max(2, words // 3), words + 1, (batch,), generator=g)
    text_mask = torch.arange(words)[None] < text_len[:, None]  # [B, L]
    tokens = torch.where(text_mask[..., None], torch.randn(batch, words, width, generator=g), torch.randn(width))
    frame_len = torch.randint(max(1, frames // 3), frames + 1, (batch,), generator=g)
    video_mask = torch.arange(frames)[None] < frame_len[:, None]  # [B, F]
    video = torch.where(video_mask[..., None], torch.randn(batch, frames, width, generator=g), torch.randn(width))
    return {
        "text_tokens": tokens,
        "text_mask": text_mask,
        "text_eot": tokens[torch.arange(batch), text_len - 1],
        "video_frames": video,
        "video_mask": video_mask,
        "index": torch.arange(batch),
    }


def training_step(name: str, shapes: Shapes) -> Callable[[], float]:
    """One optimizer step of ``name`` on a fixed batch, built and driven as ``bench.trainer`` does (frozen regime,
    identity-initialised adapter, the default sweep's optimizer settings)."""
    from tvr_convbench.bench.trainer import RunModel

    tc = load_sweep("default").trainer
    torch.manual_seed(0)
    method = build_method(name, **shapes.dims()).train()
    backbone = FeatureBackbone(shapes.width, adapter=True)
    model = RunModel(backbone, method)
    groups = method.param_groups(tc.weight_decay) + backbone.param_groups(tc.weight_decay)
    params = [p for g in groups for p in g["params"]]
    optimizer = build_optimizer(groups, tc.optimizer, tc.lr, tc.backbone_lr, tc.grad_clip)
    batch = feature_batch(shapes, shapes.batch)

    def step() -> float:
        losses = method.training_forward(*model(batch))
        if losses["loss"].requires_grad:
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_optimizer_step()
        return losses["loss"].item()

    return step


def measure_training(name: str, shapes: Shapes, plan: Plan) -> dict[str, Any]:
    step = training_step(name, shapes)
    timing = spread(repeat_timed(step, plan))
    flops = count_flops(step)
    seconds = timing["ms_median"] / 1e3
    return {
        "method": name,
        "shapes": shapes.name,
        **shapes.dims(),
        "batch": shapes.batch,
        **timing,
        "samples_per_s": shapes.batch / seconds,
        "flops_per_step": flops,
        "gflops": flops / seconds / 1e9,
        "peak_bytes": peak_bytes(step),
    }


# --- harness: the real Run -----------------------------------------------------------------------------------
class Stopwatch:
    """Accumulates the time spent inside the callables it wraps."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):  # noqa: ANN202 - transparent wrapper
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


class EncodeCounter:
    """Counts the items a method's encoders see (wraps ``encode_text`` / ``encode_video`` on the instance)."""

    def __init__(self, method: RetrievalMethod) -> None:
        self.text = self.video = 0
        encode_text, encode_video = method.encode_text, method.encode_video

        def text(batch: FeatureBatch) -> Rep:
            self.text += batch["text_eot"].shape[0]
            return encode_text(batch)

        def video(batch: FeatureBatch) -> Rep:
            self.video += batch["video_frames"].shape[0]
            return encode_video(batch)

        method.encode_text, method.encode_video = text, video


def default_run(name: str, plan: Plan, root: Path):  # noqa: ANN201 - bench.trainer.Run (imported lazily)
    """A built ``Run`` of the default sweep for method ``name`` (its first seed), logging under ``root``."""
    import lightning as L

    from tvr_convbench.bench.trainer import Run

    overrides = [f"data.{key}={value}" for key, value in plan.proxy_data]
    if plan.quick:
        overrides.append(f"data.cache_dir={root / 'proxy-cache'}")
    sweep = load_sweep("default", overrides)
    cfg = next(c for c in sweep.runs() if c.method == name)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision=cfg.trainer.precision)
    run = Run(cfg, root / cfg.run, root / "wandb", fabric, progress=False)
    run.build()
    return run


def measure_harness(name: str, plan: Plan, root: Path) -> dict[str, Any]:
    """Overhead share of a default-sweep step, evaluation cost and the encode-once count, on a real ``Run``."""
    from tqdm.auto import tqdm

    run = default_run(name, plan, root)
    compute = Stopwatch()
    for owner, attr in _compute_calls(run):
        setattr(owner, attr, compute.wrap(getattr(owner, attr)))
    stream = run.stream.iterate(0, plan.harness_steps + plan.warmup)
    bar = tqdm(total=plan.harness_steps, file=io.StringIO(), disable=False, mininterval=0.1)
    for _ in range(plan.warmup):
        run.train_step(next(stream))
    compute.seconds, fetch, start = 0.0, Stopwatch(), time.perf_counter()
    for _ in range(plan.harness_steps):  # the body of Run.train's loop
        t0 = time.perf_counter()
        losses = run.train_step(fetch.wrap(next)(stream))
        run.step += 1
        run.clock["train_seconds"] += time.perf_counter() - t0
        run.pending_train.append((run.step, run.clock["train_seconds"], losses))
        bar.update(1)
    total = time.perf_counter() - start
    return {"method": name, **_overhead(total, compute.seconds, fetch.seconds, plan), **_evaluation(run, plan)}


def _compute_calls(run) -> list[tuple[Any, str]]:  # noqa: ANN001 - bench.trainer.Run
    inner = getattr(run.model, "module", run.model)  # the RunModel inside Fabric's wrapper
    calls = [(inner, "forward"), (run.method, "training_forward"), (run.method, "after_optimizer_step")]
    calls += [(run.fabric, "backward"), (run.fabric, "clip_gradients")]
    if run.optimizer is not None:
        calls += [(run.optimizer, "step"), (run.optimizer, "zero_grad")]
    return calls


def _overhead(total: float, compute: float, fetch: float, plan: Plan) -> dict[str, float]:
    steps = plan.harness_steps
    return {
        "step_ms": 1e3 * total / steps,
        "compute_ms": 1e3 * compute / steps,
        "data_ms": 1e3 * fetch / steps,
        "other_ms": 1e3 * (total - compute - fetch) / steps,
        "overhead_fraction": (total - compute) / total,
    }


def _evaluation(run, plan: Plan) -> dict[str, Any]:  # noqa: ANN001 - bench.trainer.Run
    counter = EncodeCounter(run.method)
    seconds = repeat_timed(lambda: run.evaluate("val"), replace(plan, min_reps=2, max_reps=3, seconds=0.0), 1)
    evaluations = 1 + len(seconds)  # the untimed warm-up evaluation counts too
    items = len(run.data.split("val"))
    return {
        "eval_seconds": statistics.median(seconds),
        "val_items": items,
        "texts_encoded_per_eval": counter.text / evaluations,
        "videos_encoded_per_eval": counter.video / evaluations,
        "max_steps": run.tc.max_steps,
        "val_every": run.tc.val_every,
    }


def evaluation_share(row: dict[str, Any], logged: dict[str, float]) -> dict[str, Any]:
    """Evaluation's share of a sweep run's wall time: from the run log when there is one, else computed."""
    if row["method"] in logged:
        return {"eval_share": logged[row["method"]], "eval_share_source": "run log (runs/default)"}
    evaluations = row["max_steps"] // row["val_every"] + 1
    evaluating = evaluations * row["eval_seconds"]
    training = row["max_steps"] * row["step_ms"] / 1e3
    return {"eval_share": evaluating / (evaluating + training), "eval_share_source": "computed"}


def logged_eval_shares(sweep_dir: Path) -> dict[str, float]:
    """Median over runs of sum(eval_seconds) / final wall_seconds, per method, from ``<sweep_dir>/*/metrics.csv``."""
    shares: dict[str, list[float]] = {}
    for path in sorted(sweep_dir.glob("*/metrics.csv")):
        evals, wall, method = 0.0, 0.0, None
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["split"] == "time":
                    method = row["method"]
                    if row["metric"] == "eval_seconds":
                        evals += float(row["value"])
                    elif row["metric"] == "wall_seconds":
                        wall = max(wall, float(row["value"]))
        if method is not None and wall > 0:
            shares.setdefault(method, []).append(evals / wall)
    return {method: statistics.median(values) for method, values in shares.items()}


# --- retrieval -----------------------------------------------------------------------------------------------
def encoded(name: str, shapes: Shapes, items: int) -> tuple[RetrievalMethod, Rep, Rep]:
    """The eval-mode method and its text and video reps of ``items`` synthetic items."""
    torch.manual_seed(0)
    method = build_method(name, **shapes.dims()).eval()
    batch = feature_batch(shapes, items, seed=1)
    with torch.no_grad():
        return method, method.encode_text(batch), method.encode_video(batch)


def grown(rep: Rep, n: int) -> Rep:
    """``rep``'s items repeated (and cut) to ``n`` items: the cached reps of an n-item split."""
    copies = -(-n // next(iter(rep.values())).shape[0])
    return {key: value.repeat(copies, *([1] * (value.ndim - 1)))[:n] for key, value in rep.items()}


def rep_bytes(*reps: Rep) -> int:
    return sum(t.nbytes for rep in reps for t in rep.values())


def score_point(method: RetrievalMethod, text: Rep, video: Rep, n: int) -> dict[str, Any]:
    """Measured seconds and peak bytes of scoring n x n pairs from cached reps (the reps' own bytes added); the
    memory comes from a second, tracked call (the tracker's per-op Python hook would inflate the time)."""
    text, video = grown(text, n), grown(video, n)
    t0 = time.perf_counter()
    blockwise_similarity(method, text, video, method.max_eval_block)
    seconds = time.perf_counter() - t0
    with LiveBytes() as tracker:
        blockwise_similarity(method, text, video, method.max_eval_block)
    return {"n": n, "seconds": seconds, "peak_bytes": tracker.peak + rep_bytes(text, video), "measured": True}


def fit_exponent(points: list[dict[str, Any]]) -> float:
    """Least-squares slope of log(seconds) against log(N) over the measured points (2 when fewer than two)."""
    xs = [math.log(p["n"]) for p in points if p["measured"]]
    ys = [math.log(p["seconds"]) for p in points if p["measured"]]
    if len(xs) < 2:
        return 2.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def extrapolate(points: list[dict[str, Any]], n: int, exponent: float, block_peak: int, reps_per_item: int) -> dict:
    """An extrapolated point: seconds from the largest measured point with the fitted exponent; peak memory from
    the largest measured block peak + the float32 output + the reps."""
    last = max((p for p in points if p["measured"]), key=lambda p: p["n"])
    seconds = last["seconds"] * (n / last["n"]) ** exponent
    return {"n": n, "seconds": seconds, "peak_bytes": block_peak + 4 * n * n + reps_per_item * n, "measured": False}


def measure_retrieval(name: str, shapes: Shapes, sizes: tuple[int, ...], plan: Plan) -> dict[str, Any]:
    """Scoring cost of N x N pairs for each N in ``sizes`` (after the plan's smaller pilot sizes, which only feed
    the fit), measured while affordable, then extrapolated."""
    method, text, video = encoded(name, shapes, plan.distinct)
    with torch.no_grad():  # warm-up: one block
        method.similarity(grown(text, method.max_eval_block), grown(video, method.max_eval_block))
    points: list[dict[str, Any]] = []
    for n in (*(p for p in plan.pilots if p < min(sizes)), *sizes):
        if _predicted(points, n) > plan.point_seconds:
            break
        points.append(score_point(method, text, video, n))
    exponent = fit_exponent(points)
    per_item = rep_bytes(grown(text, 1), grown(video, 1))
    block_peak = max(p["peak_bytes"] - 4 * p["n"] ** 2 - per_item * p["n"] for p in points)
    measured = {p["n"] for p in points}
    points += [extrapolate(points, n, exponent, block_peak, per_item) for n in sizes if n not in measured]
    return {
        "method": name,
        "shapes": shapes.name,
        **shapes.dims(),
        "max_eval_block": method.max_eval_block,
        "points": [p for p in points if p["n"] in sizes],
        "measured_sizes": sorted(measured),
        "exponent": exponent,
        "flops_per_pair": similarity_flops(method, grown(text, 1), grown(video, 1)),
    }


def _predicted(points: list[dict[str, Any]], n: int) -> float:
    if not points:
        return 0.0
    last = points[-1]
    return last["seconds"] * (n / last["n"]) ** max(fit_exponent(points), 1.0)


def similarity_flops(method: RetrievalMethod, text: Rep, video: Rep) -> float:
    """FlopCounterMode FLOPs per pair of one ``min(64, max_eval_block)``-square block of the given reps' items."""
    n = min(64, method.max_eval_block)
    with torch.no_grad():
        flops = count_flops(lambda: method.similarity(grown(text, n), grown(video, n)))
    return flops / n**2


# --- targets and report --------------------------------------------------------------------------------------
def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the brief next to the measurement, pass or not."""
    out = []
    for r in result["harness"]:
        method, overhead, share = r["method"], r["overhead_fraction"], r["eval_share"]
        out.append(
            _target_row(f"harness overhead, {method}", "<= 5% of step (default proxy)", overhead, overhead <= 0.05)
        )
        out.append(
            _target_row(f"evaluation share of run wall time, {method}", "<= 15% (make sweep)", share, share <= 0.15)
        )
        encoded = r["texts_encoded_per_eval"] / r["val_items"]
        out.append(_target_row(f"encodes per item per evaluation, {method}", "1 (texts and videos)", encoded,
                               _encodes_once(r), unit="x"))  # fmt: skip
    didemo = result["plan"]["didemo"]["name"]
    for r in result["training"]:
        if r["shapes"] == didemo and r["method"] in ("glscl", "xclip"):
            fraction = r["fraction_of_peak"]
            out.append(_target_row(f"training step, {r['method']}", ">= 30% of matmul peak (DiDeMo shapes)", fraction,
                                   fraction >= 0.30))  # fmt: skip
    return out + _retrieval_targets(result)


def _encodes_once(row: dict[str, Any]) -> bool:
    return row["texts_encoded_per_eval"] == row["videos_encoded_per_eval"] == row["val_items"]


def _retrieval_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {r["method"]: r for r in result["retrieval"]["didemo"]}
    n = target_size(result["plan"]["sizes"])
    at = {m: next(p for p in r["points"] if p["n"] == n) for m, r in rows.items()}
    out = [_target_row(f"scoring {n} x {n} peak memory, {m}", "<= 4 GiB (DiDeMo shapes)", p["peak_bytes"] / GIB,
                       p["peak_bytes"] <= 4 * GIB, "GiB", p["measured"]) for m, p in at.items()]  # fmt: skip
    if "glscl" in at and "xclip" in at:
        ratio = at["xclip"]["seconds"] / at["glscl"]["seconds"]
        measured = at["xclip"]["measured"] and at["glscl"]["measured"]
        out.append(_target_row(f"scoring {n} x {n} wall time, X-CLIP / GLSCL", ">= 20x", ratio, ratio >= 20, "x",
                               measured))  # fmt: skip
    return out


def target_size(sizes: tuple[int, ...] | list[int]) -> int:
    """The N of the retrieval targets: the middle size of the plan (1004, DiDeMo's test split, in the full run)."""
    return sizes[len(sizes) // 2]


def _target_row(name: str, target: str, value: float, passed: bool, unit: str = "%", measured: bool = True) -> dict:
    return {"name": name, "target": target, "value": value, "unit": unit, "pass": bool(passed), "measured": measured}


def render(result: dict[str, Any]) -> str:
    """bench.md: the machine line, the targets table and the measurement tables."""
    m = result["machine"]
    lines = [
        f"# Performance benchmark{' (quick)' if result['plan']['quick'] else ''}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['threads']} threads; fp32 matmul "
        f"peak **{m['peak_gflops']:.1f} GFLOP/s** (best {m['matmul_n']}^3 product, at the start and the end of the "
        "run). Ratios below are to this peak.",
        "",
        *_targets_table(result["targets"]),
        *_training_table(result["training"]),
        *_harness_table(result["harness"]),
        *_retrieval_table(result["retrieval"]["didemo"], "DiDeMo shapes", result["retrieval"]["glscl_reference"]),
        *_retrieval_table(result["retrieval"]["proxy"], "default proxy shapes (the val split)", None),
        *analysis(result),
        *result["notes"],
    ]
    return "\n".join(lines) + "\n"


def _targets_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Targets", "", "| target | required | measured | result |", "|---|---|---|---|"]
    for r in rows:
        value = f"{100 * r['value']:.1f}%" if r["unit"] == "%" else f"{r['value']:.2f} {r['unit']}"
        value += "" if r["measured"] else " (extrapolated)"
        out.append(f"| {r['name']} | {r['target']} | {value} | {'pass' if r['pass'] else '**FAIL**'} |")
    return [*out, ""]


def _training_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Training step (frozen regime, one optimizer step)", "",
           "| method | shapes (D, F, L, batch) | ms median | IQR ms | samples/s | GFLOP/step | GFLOP/s | of peak "
           "| peak memory MiB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(
            f"| {r['method']} | {r['shapes']} ({r['width']}, {r['max_frames']}, {r['max_words']}, {r['batch']}) "
            f"| {r['ms_median']:.1f} | {r['ms_iqr']:.1f} | {r['samples_per_s']:.0f} | {r['flops_per_step'] / 1e9:.2f} "
            f"| {r['gflops']:.1f} | {100 * r['fraction_of_peak']:.1f}% | {r['peak_bytes'] / 2**20:.0f} |"
        )
    return [*out, ""]


def _harness_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Harness (default sweep, real `Run`)", "",
           "| method | step ms | compute ms | data fetch ms | other ms | overhead | eval s | eval share | source |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(
            f"| {r['method']} | {r['step_ms']:.1f} | {r['compute_ms']:.1f} | {r['data_ms']:.2f} | {r['other_ms']:.2f} "
            f"| {100 * r['overhead_fraction']:.1f}% | {r['eval_seconds']:.2f} | {100 * r['eval_share']:.1f}% "
            f"| {r['eval_share_source']} |"
        )
    return [*out, ""]


def _retrieval_table(rows: list[dict[str, Any]], title: str, reference: dict[str, float] | None) -> list[str]:
    sizes = [p["n"] for p in rows[0]["points"]] if rows else []
    head = " | ".join(f"N={n} s | N={n} peak MiB" for n in sizes)
    extra = f" | time / GLSCL at N={reference['n']} | GEMM FLOPs / GLSCL" if reference else ""
    out = [f"## Retrieval cost, {title}", "", f"| method | block | {head} | slope | GEMM FLOPs/pair{extra} |",
           "|---|---|" + "---|---|" * len(sizes) + "---|---|" + ("---|---|" if reference else "")]  # fmt: skip
    for r in rows:
        cells = " | ".join(_point_cells(p) for p in r["points"])
        line = f"| {r['method']} | {r['max_eval_block']} | {cells} | {r['exponent']:.2f} | {r['flops_per_pair']:.3g}"
        if reference:
            mark = "" if ratio_measured(r, reference["n"]) else "*"
            line += f" | {r['time_ratio_to_glscl']:.1f}x{mark} | {r['flop_ratio_to_glscl']:.1f}x"
        out.append(line + " |")
    return [*out, "", "Cells marked * are extrapolated from the measured points with the fitted slope.", ""]


def _point_cells(p: dict[str, Any]) -> str:
    mark = "" if p["measured"] else "*"
    return f"{p['seconds']:.3g}{mark} | {p['peak_bytes'] / 2**20:.0f}{mark}"


def add_ratios(rows: list[dict[str, Any]], n: int) -> dict[str, float]:
    """Time (at N = n) and FLOP ratios of every method to GLSCL (the paper's ~220x FLOP claim is X-CLIP's)."""
    glscl = next((r for r in rows if r["method"] == "glscl"), None)
    if glscl is None:
        return {}
    base = next(p for p in glscl["points"] if p["n"] == n)
    for r in rows:
        point = next(p for p in r["points"] if p["n"] == n)
        r["time_ratio_to_glscl"] = point["seconds"] / base["seconds"]
        r["flop_ratio_to_glscl"] = r["flops_per_pair"] / glscl["flops_per_pair"] if glscl["flops_per_pair"] else 0.0
    return {"n": n, "seconds": base["seconds"], "flops_per_pair": glscl["flops_per_pair"]}


def ratio_measured(row: dict[str, Any], n: int) -> bool:
    return next(p for p in row["points"] if p["n"] == n)["measured"]


# --- entry point ---------------------------------------------------------------------------------------------
def main(quick: bool, out: Path) -> int:
    """Run the benchmark (``quick``: tiny shapes, seconds) and write ``out/bench.json`` and ``out/bench.md``."""
    plan = QUICK if quick else FULL
    result = run_benchmark(plan)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench.json", result)
    atomic_write_text(out / "bench.md", render(result))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    failed = [t["name"] for t in result["targets"] if not t["pass"]]
    print(f"targets: {len(result['targets']) - len(failed)} pass, {len(failed)} fail")
    for name in failed:
        print(f"  FAIL {name}")
    return 0 if all(_encodes_once(r) for r in result["harness"]) else 1


def run_benchmark(plan: Plan) -> dict[str, Any]:
    """Every measurement of the plan, as one JSON-ready dict."""
    methods = list_methods()
    machine = measure_machine(plan)
    print(f"machine: {machine['peak_gflops']:.1f} GFLOP/s peak, {machine['threads']} threads", flush=True)
    training = [measure_training(m, s, plan) for s in (plan.didemo, plan.proxy) for m in methods]
    print("training steps measured", flush=True)
    harness = measure_all_harness(plan)
    unbounded = replace(plan, point_seconds=math.inf)  # the proxy's val split is always measured
    retrieval = {
        "didemo": [measure_retrieval(m, plan.didemo, plan.sizes, plan) for m in methods],
        "proxy": [measure_retrieval(m, plan.proxy, (plan.proxy_n,), unbounded) for m in methods],
    }
    retrieval["glscl_reference"] = add_ratios(retrieval["didemo"], target_size(plan.sizes))
    again = measure_machine(plan)["peak_gflops"]  # a shared machine can depress one measurement: keep the best
    machine["peak_gflops"] = max(machine["peak_gflops"], again)
    for row in training:
        row["fraction_of_peak"] = row["gflops"] / machine["peak_gflops"]
    result = {"schema": SCHEMA, "plan": _plan_dict(plan), "machine": machine, "training": training,
              "harness": harness, "retrieval": retrieval, "notes": NOTES}  # fmt: skip
    result["targets"] = targets(result)
    return result


def measure_all_harness(plan: Plan) -> list[dict[str, Any]]:
    sweep_methods = {c.method for c in load_sweep("default").runs()}
    logged = {} if plan.quick else logged_eval_shares(Path("runs/default"))  # quick: a tiny proxy, not comparable
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        for name in (m for m in list_methods() if m in sweep_methods):
            row = measure_harness(name, plan, Path(tmp))
            rows.append({**row, **evaluation_share(row, logged)})
    print("harness measured", flush=True)
    return rows


def _plan_dict(plan: Plan) -> dict[str, Any]:
    out = asdict(plan)
    out["proxy_data"] = dict(plan.proxy_data)
    return out


def analysis(result: dict[str, Any]) -> list[str]:
    """What bounds each failing target, from the measured numbers, and what bounds the training steps."""
    out = ["## What bounds the results", ""]
    for r in result["harness"]:
        fixed = r["step_ms"] - r["compute_ms"]
        if r["overhead_fraction"] > 0.05:
            out.append(
                f"- Harness overhead, {r['method']}: the loop's fixed cost per step ({fixed:.2f} ms: data fetch "
                f"{r['data_ms']:.2f} ms, lr schedule, loss `.item()`, Fabric wrappers and bookkeeping "
                f"{r['other_ms']:.2f} ms) against {r['compute_ms']:.1f} ms of compute; steps above "
                f"{fixed / 0.05:.0f} ms stay under 5%."
            )
        if r["eval_share"] > 0.15:
            steps = r["eval_seconds"] / (r["step_ms"] / 1e3)
            out.append(
                f"- Evaluation share, {r['method']}: one evaluation ({r['eval_seconds']:.2f} s: encoding the "
                f"{r['val_items']} val items once, then {r['val_items']}^2 pairwise scores) costs as much as "
                f"{steps:.0f} training steps, and the sweep evaluates {r['max_steps'] // r['val_every'] + 1} times in "
                f"{r['max_steps']} steps; the pairwise head is the cost (retrieval table, proxy shapes)."
            )
    return [*out, *BOUNDS, ""]


BOUNDS = [
    "- Training at DiDeMo shapes is GEMM-bound: the seqTransf (4 blocks over 32 x 64 frame tokens) dominates every "
    "step that has one, so those steps reach a large fraction of the matmul peak. At the proxy's D = 64 the GEMMs are "
    "small (a few hundred rows, K = 64), and per-op dispatch, elementwise work and, for GLSCL, the decoder's dropout "
    "masks (CPU Bernoulli sampling) bound the step instead.",
    "- Pairwise scoring: X-CLIP and GLCCL need two softmaxes per pair over an L x F (X-CLIP) or L x L (GLCCL) "
    "matrix and re-weightings by L x L / F x F matrices; DRL a D-deep GEMM per token-frame pair; X-Pool a D x D "
    "product per pair; GLSCL F D + Nq D multiply-adds per pair in fixed-shape GEMM tiles.",
]

NOTES = [
    "## How these numbers are measured",
    "",
    "- FLOPs: `torch.utils.flop_counter.FlopCounterMode`, matmul-family ops only (softmax, exp and other "
    "elementwise work are not counted), so achieved GFLOP/s understate memory-bound heads.",
    "- Peak memory (training): most bytes of tensors created inside one step and alive at once, tracked by a "
    "`TorchDispatchMode` (parameters and optimizer state excluded). Retrieval: the same tracker over the blockwise "
    "scoring (intermediates + the float32 N x N output) plus the bytes of the cached reps.",
    "- Wall times are medians over repetitions after warm-up; the machine may be shared, see the IQR.",
]
