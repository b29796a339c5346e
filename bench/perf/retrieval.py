"""Retrieval cost: scoring N x N pairs from cached encodings, as the trainer's evaluation does, for growing N.

Per method and shapes: the eval-mode method encodes ``plan.distinct`` synthetic items once; their reps are
repeated up to N (the cost of scoring does not depend on the values) and scored with
``bench.evaluate.blockwise_similarity`` in the method's ``max_eval_block`` blocks. A point is timed once, then its
memory is taken from a second call under ``PeakMemory`` (the probe's per-op Python hook would inflate the time):
peak = the intermediates and the float32 N x N output + the bytes of the cached reps. Smaller pilot sizes come
first and only feed the fit; a point predicted to take longer than the plan's budget is extrapolated from the
measured ones with the fitted log-log slope (marked as such, never as a measurement). GEMM FLOPs per pair come
from ``count_flops`` over one block.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from tvr_convbench.bench.evaluate import blockwise_similarity
from tvr_convbench.bench.perf.plan import Plan, Shapes, build_at, feature_batch
from tvr_convbench.bench.perf.probes import PeakMemory, count_flops
from tvr_convbench.methods.base import Rep, RetrievalMethod


def encoded(name: str, shapes: Shapes, items: int) -> tuple[RetrievalMethod, Rep, Rep]:
    """The eval-mode method and its text and video reps of ``items`` synthetic items."""
    torch.manual_seed(0)
    method = build_at(name, shapes).eval()
    batch = feature_batch(shapes, items, seed=1, patches=method.needs_patches)
    with torch.no_grad():
        return method, method.encode_text(batch), method.encode_video(batch)


def grown(rep: Rep, n: int) -> Rep:
    """``rep``'s items repeated (and cut) to ``n`` items: the cached reps of an n-item split."""
    copies = -(-n // next(iter(rep.values())).shape[0])
    return {key: value.repeat(copies, *([1] * (value.ndim - 1)))[:n] for key, value in rep.items()}  # [n, ...]


def rep_bytes(*reps: Rep) -> int:
    return sum(t.nbytes for rep in reps for t in rep.values())


def score_point(method: RetrievalMethod, text: Rep, video: Rep, n: int) -> dict[str, Any]:
    """Measured seconds and peak bytes of scoring n x n pairs from cached reps (the reps' own bytes added)."""
    text = grown(text, n)
    video = grown(video, n)
    t0 = time.perf_counter()
    blockwise_similarity(method, text, video, method.max_eval_block)  # [n, n]
    seconds = time.perf_counter() - t0
    with PeakMemory() as probe:
        blockwise_similarity(method, text, video, method.max_eval_block)
    return {"n": n, "seconds": seconds, "peak_bytes": probe.peak + rep_bytes(text, video), "measured": True}


def fit_exponent(points: list[dict[str, Any]]) -> float:
    """Least-squares slope of log(seconds) against log(N) over the measured points (2 when fewer than two)."""
    xs = [math.log(p["n"]) for p in points if p["measured"]]
    ys = [math.log(p["seconds"]) for p in points if p["measured"]]
    if len(xs) < 2:
        return 2.0
    mx = statistics.fmean(xs)
    my = statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def extrapolate(points: list[dict[str, Any]], n: int, exponent: float, block_peak: int, reps_per_item: int) -> dict:
    """An extrapolated point: seconds from the largest measured point with the fitted exponent; peak memory from
    the largest measured block peak + the float32 output + the reps."""
    last = max((p for p in points if p["measured"]), key=lambda p: p["n"])
    seconds = last["seconds"] * (n / last["n"]) ** exponent
    return {"n": n, "seconds": seconds, "peak_bytes": block_peak + 4 * n * n + reps_per_item * n, "measured": False}


def measured_points(method: RetrievalMethod, text: Rep, video: Rep, sizes: tuple[int, ...], plan: Plan) -> list:
    """The pilot sizes below ``sizes``, then ``sizes``, measured until one is predicted over the plan's budget."""
    with torch.no_grad():  # warm-up: one block
        method.similarity(grown(text, method.max_eval_block), grown(video, method.max_eval_block))
    points: list[dict[str, Any]] = []
    for n in (*(p for p in plan.pilots if p < min(sizes)), *sizes):
        if predicted_seconds(points, n) > plan.point_seconds:
            break
        points.append(score_point(method, text, video, n))
    return points


def measure_retrieval(name: str, shapes: Shapes, sizes: tuple[int, ...], plan: Plan) -> dict[str, Any]:
    """Scoring cost of N x N pairs for each N in ``sizes``, measured while affordable, then extrapolated."""
    method, text, video = encoded(name, shapes, plan.distinct)
    points = measured_points(method, text, video, sizes, plan)
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


def predicted_seconds(points: list[dict[str, Any]], n: int) -> float:
    """Seconds of an N = n point predicted from the last measured one (growing at least linearly)."""
    if not points:
        return 0.0
    last = points[-1]
    return last["seconds"] * (n / last["n"]) ** max(fit_exponent(points), 1.0)


def similarity_flops(method: RetrievalMethod, text: Rep, video: Rep) -> float:
    """FlopCounterMode FLOPs per pair of one ``min(64, max_eval_block)``-square block of the given reps' items."""
    n = min(64, method.max_eval_block)
    with torch.no_grad():
        flops = count_flops(lambda: method.similarity(grown(text, n), grown(video, n)))  # [n, n]
    return flops / n**2


def measure_all_retrieval(methods: list[str], plan: Plan) -> dict[str, Any]:
    """The DiDeMo-shapes table (the plan's sizes), the proxy table (its val split, always measured) and the
    ratios of every method to GLSCL at the targets' N."""
    unbounded = replace(plan, point_seconds=math.inf)
    retrieval: dict[str, Any] = {
        "didemo": [measure_retrieval(m, plan.didemo, plan.sizes, plan) for m in methods],
        "proxy": [measure_retrieval(m, plan.proxy, (plan.proxy_n,), unbounded) for m in methods],
    }
    retrieval["glscl_reference"] = add_ratios(retrieval["didemo"], target_size(plan.sizes))
    return retrieval


def target_size(sizes: tuple[int, ...] | list[int]) -> int:
    """The N of the retrieval targets: the middle size of the plan (1004, DiDeMo's test split, in the full run)."""
    return sizes[len(sizes) // 2]


def add_ratios(rows: list[dict[str, Any]], n: int) -> dict[str, float]:
    """Time (at N = n) and FLOP ratios of every method to GLSCL (the paper's ~220x FLOP claim is X-CLIP's)."""
    glscl = next((r for r in rows if r["method"] == "glscl"), None)
    if glscl is None:
        return {}
    base = point_at(glscl, n)
    for r in rows:
        r["time_ratio_to_glscl"] = point_at(r, n)["seconds"] / base["seconds"]
        r["flop_ratio_to_glscl"] = r["flops_per_pair"] / glscl["flops_per_pair"] if glscl["flops_per_pair"] else 0.0
    return {"n": n, "seconds": base["seconds"], "flops_per_pair": glscl["flops_per_pair"]}


def point_at(row: dict[str, Any], n: int) -> dict[str, Any]:
    """The point of a retrieval row at N = n."""
    return next(p for p in row["points"] if p["n"] == n)
