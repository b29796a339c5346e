"""X-Pool (``methods/xpool.py``) against the spec (``reference/baselines-and-didemo.md`` 2.2) and brute-force
oracles."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import (
    GIB,
    SCALE,
    assert_blockwise_within_rounding,
    feature_batch,
    measured_similarity_peak,
    perturb_,
    reps_per_item_bytes,
)
from tvr_convbench.methods import CostClass, build_method


# --- X-Pool -------------------------------------------------------------------------------------------------------
def xpool(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    config = {"width": 32, "max_frames": 9, "max_words": 7} | kwargs
    return build_method("xpool", **config)


def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm at initialisation (weight 1, bias 0), written out."""
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)


def oracle_pair(m, sentence: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """X-Pool's score for one (text, video) pair in the official order (W_o after the weighted sum)."""
    ln1 = m.layer_norm1
    q = F.linear(ln1(sentence), m.q_proj.weight, m.q_proj.bias)  # [D]
    k = F.linear(ln1(frames), m.k_proj.weight, m.k_proj.bias)  # [n, D]
    u = F.linear(ln1(frames), m.v_proj.weight, m.v_proj.bias)  # [n, D]
    alpha = torch.softmax(k @ q / math.sqrt(m.width), dim=0)  # [n]
    a = F.linear(alpha @ u, m.out_proj.weight, m.out_proj.bias)
    o = m.layer_norm2(a)
    z = m.layer_norm3(o + F.linear(o, m.linear_proj.weight, m.linear_proj.bias))
    return SCALE * torch.dot(sentence, z) / (sentence.norm() * z.norm())


def oracle_frames(videos: dict, b: int, mask_padding: bool) -> torch.Tensor:
    """Video b's frames X-Pool attends over: the real ones only, or every slot with padded slots = last real frame."""
    frames, mask = videos["video_frames"][b], videos["video_mask"][b]
    real = [j for j in range(len(mask)) if mask[j]]
    if mask_padding:
        return frames[real]
    return torch.stack([frames[j] if mask[j] else frames[real[-1]] for j in range(len(mask))])


def test_cost_class_is_pairwise():
    assert xpool().cost_class is CostClass.PAIRWISE


def test_trainable_parameters_at_width_512():
    method = xpool(width=512, max_frames=64, max_words=64)
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 1_316_352


def test_linear_maps_start_as_identity():
    method = xpool()
    for linear in (method.q_proj, method.k_proj, method.v_proj, method.out_proj, method.linear_proj):
        assert torch.equal(linear.weight, torch.eye(32)) and torch.equal(linear.bias, torch.zeros(32))


@pytest.mark.parametrize("mask_padding", [False, True])
def test_equal_frames_pool_to_the_frame_after_the_layernorms(mask_padding):
    """Identity maps, eval: every slot (after the last-frame fill) is LN1(c), so a = LN1(c), o = LN2(a) and
    z = LN3(o + W_p o) = LN3(2 o), whatever the text."""
    method = xpool(width=512, max_frames=8, max_words=5, mask_padding=mask_padding).eval()
    g = torch.Generator().manual_seed(0)
    frame = 2.0 * torch.randn(512, generator=g)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    frames = torch.where(mask[..., None], frame, torch.randn(512, generator=g))  # [1, 8, 512], padded = blank
    texts = {"text_eot": torch.randn(4, 512, generator=g)}
    expected = layer_norm(2.0 * layer_norm(layer_norm(frame)))  # [512]
    with torch.no_grad():
        text = method.encode_text(texts)
        video = method.encode_video({"video_frames": frames, "video_mask": mask})
        pooled = method.pool(text["query"], video)  # [4, 1, 512]
        scores = method.similarity(text, video)[:, 0]
    torch.testing.assert_close(pooled[:, 0], expected.expand(4, -1), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        scores, SCALE * F.cosine_similarity(texts["text_eot"], expected[None]), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize("mask_padding", [False, True])
def test_similarity_matches_a_per_pair_loop(mask_padding):
    method = perturb_(xpool(mask_padding=mask_padding)).eval()
    texts, videos = feature_batch(batch=6, frames=9, seed=1), feature_batch(batch=7, frames=9, seed=2)
    with torch.no_grad():
        sim = method.similarity(method.encode_text(texts), method.encode_video(videos))
        expected = torch.tensor(
            [
                [oracle_pair(method, texts["text_eot"][a], oracle_frames(videos, b, mask_padding)) for b in range(7)]
                for a in range(6)
            ]
        )
    assert (~videos["video_mask"]).any(), "the batch must contain padded frames"
    torch.testing.assert_close(sim, expected, rtol=0, atol=SCALE * 1e-5)  # 1e-5 in cosine


def test_padded_slot_content_never_matters():
    method = perturb_(xpool()).eval()
    batch = feature_batch(batch=5, frames=9, seed=3)
    other = dict(batch, video_frames=torch.where(batch["video_mask"][..., None], batch["video_frames"], 7.0))
    with torch.no_grad():
        text = method.encode_text(batch)
        assert torch.equal(
            method.similarity(text, method.encode_video(batch)), method.similarity(text, method.encode_video(other))
        )


def test_dropout_acts_on_the_projection_branch_only():
    """With p = 1 in training, z = LN3(o + 0): the same as an eval-mode module whose W_p is zero."""
    dropped = perturb_(xpool(dropout=1.0)).train()
    zeroed = copy.deepcopy(dropped).eval()
    with torch.no_grad():
        zeroed.linear_proj.weight.zero_()
        zeroed.linear_proj.bias.zero_()
    batch = feature_batch(batch=4, frames=9)
    with torch.no_grad():
        torch.testing.assert_close(dropped.similarity(*dropped(batch)), zeroed.similarity(*zeroed(batch)))


@pytest.mark.parametrize("mask_padding", [False, True])
def test_blockwise_equals_unblocked_within_float32_rounding(mask_padding):
    """257 x 193: not bit-exact. oneDNN/MKL choose GEMM kernels (and so the summation order) from the matrix shape,
    so a block rounds the same dot products differently. Bound: a block may be at most 2x less accurate than the
    unblocked matrix, both measured against a float64 evaluation of the same pairwise stage (same reps); so
    |block - full| <= 3 x err(full), and err(full) itself must be float32-level (<= 2^-20 in cosine)."""
    method = perturb_(xpool(mask_padding=mask_padding)).eval()
    with torch.no_grad():
        text = method.encode_text(feature_batch(batch=257, frames=9, seed=4))
        video = method.encode_video(feature_batch(batch=193, frames=9, seed=5))
    assert_blockwise_within_rounding(method, text, video)


def xpool_block_bytes(a: int, b: int, width: int, frames: int) -> int:
    """Peak intermediates of one [a, b] block: three live [a, b, D] float tensors in the LN2 -> W_p -> LN3 chain
    (o, W_p o, their sum / z), or the attention weights [a, b, F] (+ one copy) with the attended [a, b, D]."""
    return 4 * (3 * a * b * width + 2 * a * b * frames + 2 * a * b)


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("shape", [(16, 16, 64, 16), (12, 20, 64, 16), (20, 12, 128, 8), (9, 17, 96, 24)])
def test_measured_block_memory_within_the_analytic_bound(shape, mask_padding):
    a, b, width, frames = shape
    method = xpool(width=width, max_frames=frames, mask_padding=mask_padding).eval()
    with torch.no_grad():
        text = method.encode_text(feature_batch(batch=a, frames=frames, width=width, seed=1))
        video = method.encode_video(feature_batch(batch=b, frames=frames, width=width, seed=2))
    measured = measured_similarity_peak(method, text, video)
    assert 0.5 * xpool_block_bytes(a, b, width, frames) < measured <= xpool_block_bytes(a, b, width, frames)


def test_didemo_scale_memory_budget():
    """D = 512, 64 frames, 64 words: one max_eval_block block well under 1 GiB; 1,000 x 1,000 under 4 GiB."""
    method = xpool(width=512, max_frames=64, max_words=64).eval()
    block = xpool_block_bytes(method.max_eval_block, method.max_eval_block, 512, 64)
    assert block <= 0.5 * GIB
    total = 1000 * reps_per_item_bytes(method, 512, 64, 64) + 1000 * 1000 * 4 + block
    assert total <= 4 * GIB
