"""The synthetic DiDeMo proxy: DiDeMo's statistics, determinism, structure, and the pinned difficulty band."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.test_didemo_fixtures import VAL_JSON, needs_val_json
from tvr_convbench.datasets import dataset_class
from tvr_convbench.datasets.proxy import (
    FUNCTION_WORDS,
    ProxyDataModule,
    annotations_from_didemo,
    calibration,
    generate_annotations,
)

TINY = {"train_videos": 48, "val_videos": 24, "test_videos": 16, "width": 16, "max_words": 20, "vocab_size": 200}


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
    figures = calibration(dm.settings, dm.split("val").tensors)
    assert 15.0 <= figures["zero_shot_meanP_t2v_R@1"] <= 30.0, figures
    assert figures["chance_R@1"] == pytest.approx(0.1)
    assert figures["word_view_cosine_zero_shot"] < figures["word_view_cosine_adapted"]
    assert figures["sentence_frame_cosine_matched"] > figures["sentence_frame_cosine_unmatched"]
