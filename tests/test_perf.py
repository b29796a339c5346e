"""The performance benchmark (``bench/perf/``, ``tvr-convbench perf``) and the exactness of the fast scoring paths
it measures (fixed-shape GEMM tiles of GLSCL, the folded AOSM of GLCCL, tiled AOSM evaluation, axis pooling)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

import tvr_convbench.methods.parts.aosm as aosm
from tests.helpers import PeakMemory as HelpersPeakMemory
from tests.helpers import feature_batch, perturb_head
from tvr_convbench.bench.cli import main as cli_main
from tvr_convbench.bench.config import SweepConfig, TrainerConfig, load_sweep
from tvr_convbench.bench.evaluate import blockwise_similarity, cat_reps
from tvr_convbench.bench.perf.harness import (
    EncodeCounter,
    evaluation_share,
    evaluations_per_run,
    logged_eval_shares,
    sweep_run,
)
from tvr_convbench.bench.perf.plan import QUICK, Shapes
from tvr_convbench.bench.perf.probes import PeakMemory, count_flops
from tvr_convbench.bench.perf.retrieval import similarity_flops
from tvr_convbench.bench.perf.training import full_lr_step, measure_training
from tvr_convbench.bench.trainer import Run, StepFunction
from tvr_convbench.methods import build_method, list_methods
from tvr_convbench.methods.glccl import guided_frame_scores, guided_frame_weights, guided_video
from tvr_convbench.methods.glscl import pairwise_dots, quadratic_forms

TRAINING_KEYS = {"ms_median", "ms_iqr", "samples_per_s", "flops_per_step", "gflops", "fraction_of_peak", "peak_bytes"}
HARNESS_KEYS = {"step_ms", "compute_ms", "data_ms", "overhead_fraction", "eval_seconds", "eval_share"}
HARNESS_KEYS |= {"texts_encoded_per_eval", "videos_encoded_per_eval", "val_items", "evaluations"}
RETRIEVAL_KEYS = {"points", "exponent", "flops_per_pair", "max_eval_block"}


def numbers(obj, path: str = ""):
    """Every (path, number) leaf of a JSON value (bools excluded)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from numbers(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from numbers(value, f"{path}[{i}]")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield path, obj


def counting(calls: Counter, key: str, fn):
    """``fn`` (an unbound method), counting its calls under ``key``."""

    def counted(self, *args, **kwargs):
        calls[key] += 1
        return fn(self, *args, **kwargs)

    return counted


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory) -> tuple[dict, str, Counter]:
    """The quick benchmark through the CLI, counting the trainer's ``StepFunction`` and ``Run.advance`` calls."""
    out = tmp_path_factory.mktemp("bench")
    calls: Counter = Counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StepFunction, "__call__", counting(calls, "step", StepFunction.__call__))
        patch.setattr(Run, "advance", counting(calls, "advance", Run.advance))
        assert cli_main(["perf", "--quick", "--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text(), calls


def test_quick_bench_writes_every_field(quick_bench):
    result, _, _ = quick_bench
    methods = set(list_methods())
    assert {"machine", "training", "harness", "retrieval", "targets", "plan"} <= result.keys()
    assert result["machine"]["peak_gflops"] > 0 and result["machine"]["threads"] >= 1
    assert {(r["method"], r["shapes"]) for r in result["training"]} == {
        (m, s) for m in methods for s in (QUICK.didemo.name, QUICK.proxy.name)
    }
    assert all(r.keys() >= TRAINING_KEYS for r in result["training"])
    assert {r["method"] for r in result["harness"]} == methods - {"random"}  # the default sweep's methods
    assert all(r.keys() >= HARNESS_KEYS for r in result["harness"])
    assert {r["evaluations"] for r in result["harness"]} == {len(load_sweep("default").trainer.eval_steps())}
    for table, sizes in (("didemo", QUICK.sizes), ("proxy", (QUICK.proxy_n,))):
        rows = result["retrieval"][table]
        assert {r["method"] for r in rows} == methods
        assert all(r.keys() >= RETRIEVAL_KEYS and [p["n"] for p in r["points"]] == list(sizes) for r in rows)
    assert {"time_ratio_to_glscl", "flop_ratio_to_glscl"} <= result["retrieval"]["didemo"][0].keys()
    throughput = result["throughput"]
    assert throughput["runs"] == 2 and set(throughput["passes"]) == {"before", "after"}  # meanp, xpool: one seed
    assert throughput["passes"]["after"]["jobs"] == max(1, os.cpu_count() or 1)  # one thread per process
    assert throughput["speedup"] == pytest.approx(
        throughput["passes"]["after"]["runs_per_hour"] / throughput["passes"]["before"]["runs_per_hour"]
    )


def test_quick_bench_numbers_are_finite_and_positive(quick_bench):
    result, _, _ = quick_bench
    leaves = list(numbers({k: v for k, v in result.items() if k != "plan"}))  # the plan holds settings
    assert leaves and all(math.isfinite(value) for _, value in leaves)
    zero_allowed = ("flops", "gflops", "fraction_of_peak", "flop_ratio", "peak_bytes")  # `random` has no GEMM
    zero_allowed += ("exponent",)  # a log-log slope: at the quick sizes fixed per-call costs can make it ~0
    zero_allowed += ("max_val_diff",)  # one thread or two can give the same curves
    for path, value in leaves:
        if not any(key in path for key in zero_allowed):
            assert value > 0, path
    assert all(r["flops_per_step"] > 0 for r in result["training"])  # the adapter backbone runs for every method
    for row in result["retrieval"]["didemo"]:
        assert (row["flops_per_pair"] > 0) == (row["method"] != "random"), row["method"]
    assert all(r["peak_bytes"] > 0 for r in result["training"] if r["method"] not in ("random", "meanp"))
    assert all(0 < r["compute_ms"] < r["step_ms"] for r in result["harness"])


def test_quick_bench_times_the_trainers_step_function_and_loop(quick_bench):
    result, _, calls = quick_bench
    per_training_row = QUICK.warmup + QUICK.max_reps + 2  # warm-up, timed repetitions, one FLOP count, one probe
    in_process = result["throughput"]["passes"]["before"]["runs"] * QUICK.harness_steps  # --jobs 1: this process
    assert calls["advance"] == len(result["harness"]) * (QUICK.warmup + QUICK.harness_steps) + in_process
    assert calls["step"] == len(result["training"]) * per_training_row + calls["advance"]


def test_quick_bench_markdown_has_the_targets_and_every_method(quick_bench):
    result, markdown, _ = quick_bench
    assert "GFLOP/s" in markdown and "## Targets" in markdown and "## Sweep throughput" in markdown
    for row in result["targets"]:
        assert row["name"] in markdown
    for method in list_methods():
        assert f"| {method} |" in markdown
    names = [t["name"] for t in result["targets"]]
    assert any("X-CLIP / GLSCL" in n for n in names) and any("encodes per item" in n for n in names)


def test_evaluation_encodes_each_item_once(tmp_path):
    run = sweep_run("xclip", QUICK, tmp_path)
    run.tc = dataclasses.replace(run.tc, eval_batch_size=10, eval_block=16)  # several batches and blocks
    counter = EncodeCounter(run.method)
    metrics = run.evaluate("val")
    items = len(run.data.split("val"))
    assert items > 2 * 16 and metrics["t2v/R@1"] >= 0
    assert counter.text == counter.video == items


def test_meanp_similarity_flops_are_2_d_per_pair():
    shapes = Shapes("tiny", width=24, frames=3, words=5)
    method = build_method("meanp", **shapes.dims()).eval()
    text, video = method.encode_text(feature_batch(5, 5, 3, 24)), method.encode_video(feature_batch(7, 5, 3, 24))
    with torch.no_grad():
        assert count_flops(lambda: method.similarity(text, video)) == 2 * 5 * 7 * 24
    assert similarity_flops(method, *(_first(r) for r in (text, video))) == 2 * 24


def test_xpool_similarity_flops_match_its_per_pair_terms():
    width, frames = 16, 5
    method = build_method("xpool", width=width, max_frames=frames, max_words=4).eval()
    text = method.encode_text(feature_batch(3, 4, frames, width))
    video = method.encode_video(feature_batch(6, 4, frames, width))
    # attention logits 2FD, pooling 2FD, W_p on the pooled vector 2D^2, cosine numerator 2D (norms: not GEMMs)
    per_pair = 2 * frames * width + 2 * frames * width + 2 * width**2 + 2 * width
    with torch.no_grad():
        assert count_flops(lambda: method.similarity(text, video)) == 3 * 6 * per_pair


def _first(rep: dict) -> dict:
    return {k: v[:1] for k, v in rep.items()}


def write_logged_run(sweep_dir: Path, cfg, train_seconds: float) -> None:
    """A finished run folder of the sweep runner's format: evaluations at steps 0 and 50 (2 s and 3 s), the last
    training step at ``train_seconds``."""
    run_dir = sweep_dir / cfg.run
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run_dir / "status").write_text("done\n")
    rows = [(0, 0.0, "val", "t2v/R@1", 5.0), (0, 0.0, "time", "eval_seconds", 2.0)]
    rows += [(0, 0.0, "time", "wall_seconds", 2.0), (50, train_seconds, "train", "loss", 1.0)]
    rows += [(50, train_seconds, "val", "t2v/R@1", 9.0), (50, train_seconds, "time", "eval_seconds", 3.0)]
    rows += [(50, train_seconds, "time", "wall_seconds", train_seconds + 5.0)]
    key = f"{cfg.sweep},{cfg.run},{cfg.label},{cfg.seed}"
    body = "".join(f"{key},{step},{seconds},{split},{metric},{value}\n" for step, seconds, split, metric, value in rows)
    (run_dir / "metrics.csv").write_text("sweep,run,method,seed,step,train_seconds,split,metric,value\n" + body)


def test_logged_eval_share_reads_the_run_log(tmp_path):
    """Per method, the median over its finished runs of eval / (eval + train) (the analysis's ``run_costs``)."""
    untuned = ["tuning={}", "targets={source: posthoc}"]  # scored runs without a selection to wait for
    spec = load_sweep("default", ["trainer.max_steps=50", "trainer.val_every=50", *untuned]).to_dict()
    spec["methods"] = [m for m in spec["methods"] if m["method"] == "xclip"]
    sweep = SweepConfig.from_dict(spec)
    sweep_dir = tmp_path / sweep.name
    sweep_dir.mkdir()
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(spec))
    for cfg, train_seconds in zip(sweep.runs(), (15.0, 45.0, 20.0)):  # shares 5/20, 5/50, 5/25
        write_logged_run(sweep_dir, cfg, train_seconds)
    assert logged_eval_shares(sweep_dir) == {"xclip": pytest.approx(5.0 / 25.0)}
    assert logged_eval_shares(Path(tmp_path / "missing")) == {}


def test_evaluations_per_run_come_from_the_trainer_config():
    tc = TrainerConfig(max_steps=1310, val_every=150)
    assert evaluations_per_run(tc) == 10  # steps 0, 150, ..., 1200 and the last step, 1310
    assert evaluations_per_run(load_sweep("didemo-frozen").trainer) == 10
    row = {"method": "xclip", "evaluations": 10, "eval_seconds": 2.0, "max_steps": 1310, "step_ms": 100.0}
    computed = evaluation_share(row, {}, "runs/default")
    assert computed == {"eval_share": pytest.approx(20.0 / (20.0 + 131.0)), "eval_share_source": "computed"}
    logged = evaluation_share(row, {"xclip": 0.25}, "runs/default")
    assert logged == {"eval_share": 0.25, "eval_share_source": "run log (runs/default)"}


def test_training_measurement_times_the_trainers_step_function(monkeypatch):
    steps: list[int] = []
    original = StepFunction.__call__

    def counted(self, batch, step):
        steps.append(step)
        return original(self, batch, step)

    monkeypatch.setattr(StepFunction, "__call__", counted)
    tc = load_sweep("default").trainer
    row = measure_training("meanp", QUICK.proxy, QUICK, tc)
    assert len(steps) == QUICK.warmup + row["reps"] + 2  # warm-up, timed repetitions, one FLOP count, one probe
    assert set(steps) == {full_lr_step(tc)} and 0 < full_lr_step(tc) < tc.max_steps


# --- the memory probe ----------------------------------------------------------------------------------------
def test_peak_memory_matches_a_hand_computed_peak():
    outside = torch.ones(256)  # 1 KiB, created before the block: never counted
    with PeakMemory() as probe:
        a = outside * 2  # 1 KiB alive
        b = a + 1  # 2 KiB
        del a  # 1 KiB
        view = outside.view(16, 16)  # a view of a tensor from before the block: no new memory
        outside.add_(1)  # in place on a tensor from before the block: no new memory
        b_rows = b.view(16, 16)  # a view of an intermediate: already counted
        c = torch.empty(512)  # 1 KiB + 2 KiB = 3 KiB alive: the peak
        del b, b_rows, c  # 0
        total = view.sum()  # 4 bytes
    assert probe.peak == 3 * 1024
    assert probe.current == total.nbytes == 4


def test_peak_memory_skips_parameters_and_counts_saved_activations():
    layer = torch.nn.Linear(64, 64)  # 16 KiB weight: exists before the block (its transposed view is no new memory)
    x = torch.randn(8, 64)
    with PeakMemory() as probe:
        y = layer(x).exp()  # linear output [8, 64] (2 KiB, freed after exp) and exp output [8, 64] (2 KiB)
        loss = y.sum()  # 4 bytes
        del y  # still alive: autograd saved exp's output for the backward
        held = probe.current
    assert probe.peak == 2 * 2048
    assert held == 2048 + 4
    del loss


def test_tests_and_bench_share_one_memory_probe():
    assert HelpersPeakMemory is PeakMemory


# --- exactness of the fast paths -----------------------------------------------------------------------------
@pytest.mark.parametrize("width", [512, 8])
def test_fixed_tile_gemms_are_bit_exact_for_any_block(width):
    g = torch.Generator().manual_seed(width)
    x, y = torch.randn(150, width, generator=g), torch.randn(260, width, generator=g)
    weights, gram = torch.rand(150, 20, 16, generator=g), torch.randn(20, 16, 16, generator=g)
    with torch.no_grad():
        dots, forms = pairwise_dots(x, y), quadratic_forms(weights, gram)
        for block in (1, 5, 37, 64, 100):
            for start in (0, 1, 63, 149 - block + 1):
                rows = slice(start, start + block)
                cols = slice(start, start + 2 * block)
                assert torch.equal(pairwise_dots(x[rows], y[cols]), dots[rows, cols])
                assert torch.equal(quadratic_forms(weights[rows, 3:17], gram[3:17]), forms[rows, 3:17])
    torch.testing.assert_close(dots, x @ y.T, rtol=1e-5, atol=1e-5 * width)
    torch.testing.assert_close(forms, torch.einsum("abf,bfg,abg->ab", weights, gram, weights), rtol=1e-5, atol=1e-4)


def test_glscl_blockwise_is_exact_at_didemo_width():
    torch.manual_seed(0)
    method = build_method("glscl", width=512, max_frames=16, max_words=12, temporal_layers=1, decoder_layers=1).eval()
    with torch.no_grad():
        batches = [feature_batch(n, 12, 16, 512, seed=s, offset=o) for n, s, o in ((70, 1, 0), (61, 2, 70))]
        text = cat_reps([method.encode_text(b) for b in batches])
        video = cat_reps([method.encode_video(b) for b in batches])
        full = method.similarity(text, video)
    for block in (13, 64, 100):  # blocks of 1, 4, 5: tests/test_glscl.py
        assert torch.equal(blockwise_similarity(method, text, video, block), full), block


@pytest.mark.parametrize("mask_padding", [False, True])
def test_glccl_folded_aosm_equals_the_unfused_head(mask_padding):
    # 2F < L: M is folded into the factors of the logits; the reference pools the materialised frame-word matrix
    torch.manual_seed(0)
    method = build_method("glccl", width=16, max_frames=3, max_words=9, mask_padding=mask_padding).eval()
    perturb_head(method)
    with torch.no_grad():
        text = method.encode_text(feature_batch(5, 9, 3, 16, seed=1))
        video = method.encode_video(feature_batch(4, 9, 3, 16, seed=2))
        frame_mask = video["frame_mask"] if mask_padding else None
        weights = guided_frame_weights(text["words_raw"], video, 5.0, frame_mask)
        pooled = guided_video(text["sentence_raw"], video["frames"], 5.0, frame_mask)
        word_mask = text["word_mask"][:, None] if mask_padding else None
        reference = method.head(
            torch.einsum("ad,abd->ab", text["sentence_g"], pooled),
            torch.einsum("atd,abd->abt", text["words"], pooled),
            guided_frame_scores(text["sentence"][:, None], video["frames"], weights)[:, :, 0],
            guided_frame_scores(text["words_loc"], video["frames"], weights),
            word_mask,
            word_mask,
        )
        torch.testing.assert_close(method.score_parts(text, video), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["xclip", "glccl"])
def test_tiled_evaluation_equals_one_tile(name, monkeypatch):
    torch.manual_seed(0)
    method = build_method(name, width=16, max_frames=4, max_words=6).eval()
    perturb_head(method)
    with torch.no_grad():
        text, video = (
            method.encode_text(feature_batch(9, 6, 4, 16, seed=1)),
            method.encode_video(feature_batch(7, 6, 4, 16)),
        )
        one_tile = method.score_parts(text, video)
        monkeypatch.setattr(aosm, "TILE_ELEMENTS", 1)
        monkeypatch.setattr(aosm, "MIN_GEMM_COLUMNS", 1)  # one text per tile
        torch.testing.assert_close(method.score_parts(text, video), one_tile, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_attn_sum_pools_any_axis_in_place(dim):
    g = torch.Generator().manual_seed(dim % 4)
    pool = aosm.AttnSum(5)
    with torch.no_grad():
        pool.weight.add_(0.3 * torch.randn(5, 5, generator=g))
    shape = [3, 4, 2, 6]
    shape[dim] = 5
    scores, mask = 0.02 * torch.randn(shape, generator=g), torch.rand(shape, generator=g) > 0.3
    with torch.no_grad():
        expected = pool(scores.movedim(dim, -1), mask.movedim(dim, -1))
        torch.testing.assert_close(pool.pool_logits(scores / pool.temperature, mask, dim=dim), expected)
