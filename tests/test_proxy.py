"""The synthetic DiDeMo proxy: DiDeMo's statistics, determinism, structure, its knobs, and the pinned difficulty
band (measured by the harness: ``bench.calibration.describe_data``)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections import Counter
from dataclasses import fields

import numpy as np
import pytest
import torch

from tests.test_didemo_fixtures import VAL_JSON, needs_val_json
from tvr_convbench.bench.calibration import describe_data
from tvr_convbench.core.errors import UnknownNameError
from tvr_convbench.datasets import dataset_class
from tvr_convbench.datasets.base import SPLITS
from tvr_convbench.datasets.proxy import (
    FUNCTION_WORDS,
    ProxyDataModule,
    ProxySettings,
    annotations_from_didemo,
    generate,
    generate_annotations,
)
from tvr_convbench.datasets.proxy.module import check_memory, generate_patches, generation_bytes

TINY = {"train_videos": 48, "val_videos": 24, "test_videos": 16, "width": 16, "max_words": 20, "vocab_size": 200}
TINY_DIGEST = "2b054ea07712543531c54d16489aa5982ee04f2d0d493fbb7a79e9a58e6b80be"
"""sha256 of ``generate(ProxySettings(**TINY))`` (see ``features_digest``): any change to the generated data
changes it, and then GENERATOR_VERSION must be bumped (the cache key below changes with it)"""
TINY_KEY = "fb7f3982577e0dcc"


@pytest.fixture(scope="module")
def procedural():
    return generate_annotations(np.random.default_rng(0), 4000, 3000)


def test_descriptions_per_video(procedural):
    counts = [len(a.descriptions) for a in procedural]
    assert np.mean(counts) == pytest.approx(3.8, abs=0.1)  # DESIGN sec. 6: 1-6, mean 3.8
    assert min(counts) >= 1 and max(counts) <= 6


def test_words_per_description_and_paragraph(procedural):
    lengths = [len(d) for a in procedural for d in a.descriptions]
    assert np.mean(lengths) == pytest.approx(7.5, abs=0.2)
    paragraphs = [sum(len(d) for d in a.descriptions) for a in procedural]
    assert np.mean(paragraphs) == pytest.approx(29, abs=1.5)


def test_segments_and_moment_lengths(procedural):
    assert np.mean([a.num_segments == 5 for a in procedural]) == pytest.approx(0.17, abs=0.02)
    spans = [last - first + 1 for a in procedural for first, last in a.moments]
    assert np.mean([s == 1 for s in spans]) == pytest.approx(0.78, abs=0.02)
    assert all(0 <= f <= l < a.num_segments for a in procedural for f, l in a.moments)


def test_zipfian_vocabulary(procedural):
    words = Counter(w for a in procedural for d in a.descriptions for w in d)
    function_share = sum(words[i] for i in range(len(FUNCTION_WORDS))) / sum(words.values())
    assert function_share == pytest.approx(0.4, abs=0.02)
    content = sorted((c for w, c in words.items() if w >= len(FUNCTION_WORDS)), reverse=True)
    ranks = np.arange(1, 201)
    slope = np.polyfit(np.log(ranks + 1.7), np.log(content[:200]), 1)[0]  # Zipf exponent ~1
    assert slope == pytest.approx(-1.0, abs=0.15)


def test_registered_and_deterministic(tmp_path):
    assert dataset_class("proxy") is ProxyDataModule
    a = ProxyDataModule(**TINY, cache_dir=str(tmp_path / "a")).split("val").tensors
    b = ProxyDataModule(**TINY, cache_dir=str(tmp_path / "b")).split("val").tensors
    c = ProxyDataModule(**TINY, seed=1, cache_dir=str(tmp_path / "c")).split("val").tensors
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["video_frames"], c["video_frames"])


def test_cache_is_reused(tmp_path):
    first = ProxyDataModule(**TINY, cache_dir=str(tmp_path)).split("train").tensors
    (cached,) = tmp_path.glob("proxy-*.pt")
    stamp = cached.stat().st_mtime_ns
    again = ProxyDataModule(**TINY, cache_dir=str(tmp_path)).split("train").tensors
    assert cached.stat().st_mtime_ns == stamp and torch.equal(first["text_tokens"], again["text_tokens"])


def test_batch_structure(tmp_path):
    dm = ProxyDataModule(**TINY, cache_dir=str(tmp_path))
    batch = dm.split("train")[[3, 0, 7]]
    assert batch["index"].tolist() == [3, 0, 7]
    frames, mask = batch["video_frames"], batch["video_mask"]
    assert frames.shape == (3, 8, 16) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [int(m.sum()) for m in mask] and (mask.sum(1) >= 5).all()
    padded = frames[~mask]
    assert torch.allclose(padded, padded[:1].expand_as(padded))  # one constant blank-frame feature
    assert torch.allclose(frames.norm(dim=-1), torch.full(frames.shape[:2], 10.0), atol=1e-4)
    tokens, text_mask = batch["text_tokens"], batch["text_mask"]
    lengths = text_mask.sum(1)
    assert (lengths >= 3).all() and (lengths <= 20).all()
    eot = tokens[torch.arange(3), lengths - 1]
    assert torch.equal(eot, batch["text_eot"])
    assert not (tokens[~text_mask] == 0).all(dim=-1).any()  # pads are features, not zeros


@needs_val_json
def test_real_annotations_as_source(tmp_path):
    anns, vocab = annotations_from_didemo(str(VAL_JSON))
    assert len(anns) == 1094 and sum(len(a.descriptions) for a in anns) == 4180
    assert vocab > 1000
    dm = ProxyDataModule(**{**TINY, "vocab_size": 200}, annotations=str(VAL_JSON), cache_dir=str(tmp_path))
    assert dm.describe()["counts"] == {"train": 48, "val": 24, "test": 16}
    with pytest.raises(ValueError, match="fewer than"):
        ProxyDataModule(train_videos=2000, annotations=str(VAL_JSON), cache_dir=str(tmp_path)).setup()


def features_digest(data: dict[str, dict[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        for key in sorted(data[split]):
            digest.update(split.encode())
            digest.update(key.encode())
            digest.update(data[split][key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_generated_features_are_pinned():
    """The generator's output for fixed settings is bit-identical across refactors (same RNG call order)."""
    settings = ProxySettings(**TINY)
    assert features_digest(generate(settings)) == TINY_DIGEST
    assert settings.key() == TINY_KEY  # existing caches stay valid


def test_knobs_are_the_settings_fields():
    """The ``data:`` schema is ProxySettings' fields (same types and defaults), then the module-only keywords."""
    params = ProxyDataModule.config_parameters()
    knobs = [f.name for f in fields(ProxySettings)]
    assert list(params) == [*knobs, "regime", "adapter", "cache_dir", "world"] and len(knobs) == 29  # 27 + 2 patch
    assert all(params[k].default == getattr(ProxySettings(), k) for k in knobs)
    assert ProxyDataModule(**TINY).settings == ProxySettings(**TINY)
    with pytest.raises(UnknownNameError, match="did you mean 'val_videos'"):
        ProxyDataModule(val_video=3)


def test_every_knob_is_documented():
    """Each ProxySettings field is followed by its one-line attribute docstring."""
    body = ast.parse(textwrap.dedent(inspect.getsource(ProxySettings))).body[0].body
    documented = {
        field.target.id
        for field, doc in zip(body, body[1:])
        if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
    }
    assert documented == {f.name for f in fields(ProxySettings)}


def test_bad_knobs_are_named():
    with pytest.raises(ValueError, match="data.val_videos must be positive"):
        ProxyDataModule(val_videos=0)
    with pytest.raises(ValueError, match="data.alignment"):
        ProxyDataModule(alignment=1.5)
    with pytest.raises(ValueError, match="data.annotations"):
        ProxyDataModule(annotations="/nonexistent.json")


@pytest.mark.slow
def test_zero_shot_difficulty_band(tmp_path):
    """DESIGN sec. 6: with ~1,000 val videos, zero-shot meanP lands in 15-30% t2v R@1 (default knobs)."""
    dm = ProxyDataModule(train_videos=32, val_videos=1000, test_videos=32, cache_dir=str(tmp_path))
    figures = describe_data(dm)["calibration"]
    assert 15.0 <= figures["zero_shot_meanP_t2v_R@1"] <= 30.0, figures
    assert figures["chance_R@1"] == pytest.approx(0.1)
    assert figures["word_view_cosine_zero_shot"] < figures["word_view_cosine_adapted"]
    assert figures["sentence_frame_cosine_matched"] > figures["sentence_frame_cosine_unmatched"]


def test_describe_data_adds_zero_shot_meanp(tmp_path):
    """The harness measures zero-shot meanP (the real method and metrics) in front of the proxy's own figures."""
    dm = ProxyDataModule(**TINY, cache_dir=str(tmp_path))
    own = dm.describe()
    facts = describe_data(dm)
    assert {k: v for k, v in facts.items() if k != "calibration"} == {
        k: v for k, v in own.items() if k != "calibration"
    }
    zero_shot = {
        "val_videos": 24.0,
        "chance_R@1": 100 / 24,
        "zero_shot_meanP_t2v_R@1": 100 * 4 / 24,  # today's figures on TINY, to float precision
        "zero_shot_meanP_t2v_R@5": 100 * 13 / 24,
        "zero_shot_meanP_v2t_R@1": 100 * 7 / 24,
    }
    calibration = facts["calibration"]
    assert list(calibration) == [*zero_shot, *own["calibration"]]
    assert {k: calibration[k] for k in zero_shot} == pytest.approx(zero_shot)
    assert {k: calibration[k] for k in own["calibration"]} == own["calibration"]
    assert "zero_shot_meanP_t2v_R@1" not in own["calibration"]


def test_describe_data_adds_nothing_to_real_data(tmp_path):
    class NotSynthetic(ProxyDataModule):
        synthetic = False

    dm = NotSynthetic(**TINY, cache_dir=str(tmp_path))
    assert describe_data(dm) == dm.describe()


def test_calibration_leaves_the_random_stream_alone(tmp_path):
    """``describe_data`` runs inside every run after the model is built: its meanP and backbone inits must not
    shift the run's later random draws (dropout), or a method's curve would depend on the calibration."""
    module = ProxyDataModule(**TINY, cache_dir=str(tmp_path))
    module.setup()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    describe_data(module)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    "knobs",
    [
        {"train_videos": 1000, "val_videos": 100, "test_videos": 100},
        {"train_videos": 300, "val_videos": 50, "test_videos": 50, "max_frames": 32, "frames_per_segment": 5},
    ],
)
@pytest.mark.parametrize("patches", [False, True])
def test_the_memory_estimate_bounds_the_generators_peak(knobs: dict, patches: bool) -> None:
    """``generation_bytes`` is an upper estimate (by at most 2x here) of the peak traced memory of generation."""
    import tracemalloc

    s = ProxySettings(**knobs, patches=16)
    tracemalloc.start()
    try:
        (generate_patches if patches else generate)(s)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= generation_bytes(s, patches) <= 2 * peak


def test_a_proxy_larger_than_the_memory_is_refused_before_allocating() -> None:
    s = ProxySettings(train_videos=100_000_000)
    need = generation_bytes(s, patches=False)
    assert need > 10 * 2**40  # ~12 TiB: 8 D (6 L + S + F) bytes per video
    check_memory(s, patches=False, available=need)  # fits exactly
    with pytest.raises(ValueError, match=r"needs about 1\d+\.\d GiB .*data.train_videos 100,000,000.*1.0 GiB avail"):
        check_memory(s, patches=False, available=2**30)
