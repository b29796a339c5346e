"""The performance benchmark (``bench/perf.py``, ``python -m bench perf``) and the exactness of the fast scoring paths
it measures (fixed-shape GEMM tiles of GLSCL, the folded AOSM of GLCCL, tiled AOSM evaluation, axis pooling)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import tvr_convbench.methods.parts.aosm as aosm
from tests.helpers import feature_batch, perturb_head
from tvr_convbench.bench.cli import main as cli_main
from tvr_convbench.bench.evaluate import blockwise_similarity, cat_reps
from tvr_convbench.bench.perf import (
    QUICK,
    EncodeCounter,
    Shapes,
    count_flops,
    default_run,
    logged_eval_shares,
    similarity_flops,
)
from tvr_convbench.methods import build_method, list_methods
from tvr_convbench.methods.glccl import guided_frame_scores, guided_frame_weights, guided_video
from tvr_convbench.methods.glscl import pairwise_dots, quadratic_forms

TRAINING_KEYS = {"ms_median", "ms_iqr", "samples_per_s", "flops_per_step", "gflops", "fraction_of_peak", "peak_bytes"}
HARNESS_KEYS = {"step_ms", "compute_ms", "data_ms", "overhead_fraction", "eval_seconds", "eval_share"}
HARNESS_KEYS |= {"texts_encoded_per_eval", "videos_encoded_per_eval", "val_items"}
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


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    assert cli_main(["perf", "--quick", "--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_quick_bench_writes_every_field(quick_bench):
    result, _ = quick_bench
    methods = set(list_methods())
    assert {"machine", "training", "harness", "retrieval", "targets", "plan"} <= result.keys()
    assert result["machine"]["peak_gflops"] > 0 and result["machine"]["threads"] >= 1
    assert {(r["method"], r["shapes"]) for r in result["training"]} == {
        (m, s) for m in methods for s in (QUICK.didemo.name, QUICK.proxy.name)
    }
    assert all(r.keys() >= TRAINING_KEYS for r in result["training"])
    assert {r["method"] for r in result["harness"]} == methods - {"random"}  # the default sweep's methods
    assert all(r.keys() >= HARNESS_KEYS for r in result["harness"])
    for table, sizes in (("didemo", QUICK.sizes), ("proxy", (QUICK.proxy_n,))):
        rows = result["retrieval"][table]
        assert {r["method"] for r in rows} == methods
        assert all(r.keys() >= RETRIEVAL_KEYS and [p["n"] for p in r["points"]] == list(sizes) for r in rows)
    assert {"time_ratio_to_glscl", "flop_ratio_to_glscl"} <= result["retrieval"]["didemo"][0].keys()


def test_quick_bench_numbers_are_finite_and_positive(quick_bench):
    result, _ = quick_bench
    leaves = list(numbers({k: v for k, v in result.items() if k != "plan"}))  # the plan holds settings
    assert leaves and all(math.isfinite(value) for _, value in leaves)
    zero_allowed = ("flops", "gflops", "fraction_of_peak", "flop_ratio", "peak_bytes")  # `random` has no GEMM
    zero_allowed += ("exponent",)  # a log-log slope: at the quick sizes fixed per-call costs can make it ~0
    for path, value in leaves:
        if not any(key in path for key in zero_allowed):
            assert value > 0, path
    assert all(r["flops_per_step"] > 0 for r in result["training"])  # the adapter backbone runs for every method
    for row in result["retrieval"]["didemo"]:
        assert (row["flops_per_pair"] > 0) == (row["method"] != "random"), row["method"]
    assert all(r["peak_bytes"] > 0 for r in result["training"] if r["method"] not in ("random", "meanp"))


def test_quick_bench_markdown_has_the_targets_and_every_method(quick_bench):
    result, markdown = quick_bench
    assert "GFLOP/s" in markdown and "## Targets" in markdown
    for row in result["targets"]:
        assert row["name"] in markdown
    for method in list_methods():
        assert f"| {method} |" in markdown
    names = [t["name"] for t in result["targets"]]
    assert any("X-CLIP / GLSCL" in n for n in names) and any("encodes per item" in n for n in names)


def test_evaluation_encodes_each_item_once(tmp_path):
    run = default_run("xclip", QUICK, tmp_path)
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


def test_logged_eval_share_reads_the_run_log(tmp_path):
    header = "sweep,run,method,seed,step,train_seconds,split,metric,value\n"
    rows = [("0", "eval_seconds", 2.0), ("0", "wall_seconds", 2.5), ("50", "eval_seconds", 3.0)]
    rows += [("50", "wall_seconds", 20.0), ("50", "loss", 1.0)]
    for seed in (0, 1):
        run = tmp_path / f"xclip-s{seed}"
        run.mkdir()
        body = "".join(f"default,xclip-s{seed},xclip,{seed},{s},1.0,{'train' if m == 'loss' else 'time'},{m},{v}\n"
                       for s, m, v in rows)  # fmt: skip
        (run / "metrics.csv").write_text(header + body)
    assert logged_eval_shares(tmp_path) == {"xclip": pytest.approx(5.0 / 20.0)}
    assert logged_eval_shares(Path(tmp_path / "missing")) == {}


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
