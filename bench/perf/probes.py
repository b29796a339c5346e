"""The measuring tools of ``bench perf`` (and of the tests' memory bounds): wall-time repetitions, FLOP counts, the
one peak-memory probe, and the machine's matmul peak every rate is divided by.

- Time: ``repeat_timed`` calls a function after warm-up calls until the plan's repetitions and time budget are
  spent; ``spread`` reduces the durations to median and interquartile range; ``Stopwatch`` accumulates the time
  spent inside the callables it wraps.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmul-family ops only: elementwise work is not counted).
- Memory: ``PeakMemory``, a ``TorchDispatchMode`` that tracks every tensor storage an op creates inside the block
  from its creation until it is freed, and keeps the most bytes alive at once (see its docstring for what counts).
- Machine: the best of several large fp32 matmuls (GFLOP/s), with thread count, torch version and CPU name.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from tvr_convbench.bench.perf.plan import Plan

GIB = 2**30


# --- memory --------------------------------------------------------------------------------------------------
class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created inside the ``with`` block and alive at the same time.

    Every storage an op creates counts from that op until the storage is freed (a ``weakref.finalize`` on the
    storage itself, so an activation autograd saved keeps counting after its last Python tensor is gone). An op
    output that shares the storage of one of the op's inputs is no new memory: a view of an intermediate is already
    counted, and a view or in-place update of a tensor that existed before the block (a parameter, optimizer state,
    a cached rep) is not counted at all. Storages of ``exclude`` are never counted.
    """

    def __init__(self, exclude: tuple[Tensor, ...] = ()) -> None:
        super().__init__()
        self.external = {t.untyped_storage().data_ptr() for t in exclude}
        self.live: dict[int, int] = {}  # data_ptr -> nbytes of each counted storage still alive
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                self._track(tensor.untyped_storage(), inputs)
        return out

    def _track(self, storage: torch.UntypedStorage, inputs: set[int]) -> None:
        key = storage.data_ptr()
        if key == 0 or key in inputs or key in self.live or key in self.external:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def peak_bytes(fn: Callable[[], Any]) -> int:
    """``PeakMemory`` of one call of ``fn``."""
    with PeakMemory() as probe:
        fn()
    return probe.peak


# --- time and FLOPs ------------------------------------------------------------------------------------------
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


# --- machine -------------------------------------------------------------------------------------------------
def measure_machine(plan: Plan) -> dict[str, Any]:
    """The machine's fp32 matmul peak (best of several n x n products) and its description."""
    n = plan.matmul_n
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    best = min(repeat_timed(lambda: a @ b, replace(plan, min_reps=5, max_reps=10, seconds=1.0), warmup=1))  # [n, n]
    return {
        "peak_gflops": 2 * n**3 / best / 1e9,
        "matmul_n": n,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 1,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
