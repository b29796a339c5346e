"""X-CLIP (``xclip``) and the shared AOSM parts (``methods.parts.aosm``): spec numbers, a per-pair oracle, masking,
blockwise evaluation and the evaluation-memory bound (reference/baselines-and-didemo.md 2.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import GIB, assert_odd_blockwise, attn_sum_oracle, eval_memory, feature_batch, perturb_head
from tvr_convbench.methods import CostClass, build_method
from tvr_convbench.methods.parts.aosm import AttnSum

SMALL = {"width": 16, "max_frames": 5, "max_words": 7}


def xclip_video(method, videos: dict, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, f) of video b from the spec: v = normalise(mean of normalised seqTransf outputs over real frames), f = the
    normalised frame features before seqTransf."""
    frames, mask = videos["video_frames"][b], videos["video_mask"][b]  # [F, D], [F]
    context = method.temporal(frames[None], mask[None])[0]  # [F, D]
    return F.normalize(F.normalize(context[mask], dim=-1).mean(0), dim=0), F.normalize(frames, dim=-1)


def xclip_pair(method, texts: dict, a: int, v: torch.Tensor, f: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """The X-CLIP logit of one (text a, video (v, f)) pair, written from the spec formulas (2.3)."""
    head, masked = method.head, method.mask_padding
    t, w = F.normalize(texts["text_eot"][a], dim=0), F.normalize(texts["text_tokens"][a], dim=-1)  # [D], [L, D]
    words = texts["text_mask"][a] if masked else torch.ones(w.shape[0], dtype=torch.bool)
    frame_keep = frame_mask if masked else torch.ones(f.shape[0], dtype=torch.bool)
    s_vs = t @ head.global_mat @ v
    s_vw = attn_sum_oracle(w @ v, head.video_word.weight, words)
    s_sf = attn_sum_oracle(f @ t, head.sentence_frame.weight, frame_keep)
    m = (w @ head.local_mat) @ f.t()  # [L, F]
    u = torch.stack([attn_sum_oracle(m[:, j], head.word.weight, words) for j in range(m.shape[1])])  # [F]
    r = torch.stack([attn_sum_oracle(m[i], head.frame.weight, frame_keep) for i in range(m.shape[0])])  # [L]
    s_fw = 0.5 * (attn_sum_oracle(u, head.frame2.weight, frame_keep) + attn_sum_oracle(r, head.word2.weight, words))
    return method.logit_scale((s_vs + s_vw + s_sf + s_fw) / 4)


def test_attn_sum_with_identity_is_a_soft_maximum():
    # spec (glccl.md 12.5): AttnSum_I((0.3, 0.2)) with temperature 0.01 = 0.2999955
    value = AttnSum(2)(torch.tensor([0.3, 0.2]))
    torch.testing.assert_close(value, torch.tensor(0.2999955), rtol=0, atol=1e-7)


def test_attn_sum_weights_are_remixed_and_not_renormalised():
    x = torch.tensor([0.3, 0.2, -0.1])
    pool = AttnSum(3)
    with torch.no_grad():
        pool.weight.copy_(torch.tensor([[0.5, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    beta = torch.softmax(x / 0.01, dim=0)
    expected = x[0] * (0.5 * beta[0] + beta[1]) + x[1] * 2.0 * beta[0] + x[2] * 3.0 * beta[2]  # beta M, row vector
    torch.testing.assert_close(pool(x), expected)


def test_attn_sum_mask_equals_pooling_the_real_slots():
    g = torch.Generator().manual_seed(0)
    pool = AttnSum(5)
    with torch.no_grad():
        pool.weight.add_(0.3 * torch.randn(5, 5, generator=g))
    x = 0.02 * torch.randn(4, 5, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        expected = torch.stack([attn_sum_oracle(x[i], pool.weight, mask[i]) for i in range(4)])
        torch.testing.assert_close(pool(x, mask), expected)


def test_is_pairwise():
    assert build_method("xclip", **SMALL).cost_class is CostClass.PAIRWISE


def test_parameter_count_at_didemo_shapes():
    method = build_method("xclip", width=512, max_frames=64, max_words=64)
    count = sum(p.numel() for p in method.parameters() if p.requires_grad)
    temporal = sum(p.numel() for p in method.temporal.parameters())
    assert temporal == 12_609_536 + 39_424
    assert count == 12_609_536 + 39_424 + 2 * 512**2 + 3 * 64**2 + 3 * 64**2 == 13_197_824
    assert all(torch.equal(p, torch.eye(p.shape[0])) for p in method.head.parameters())


@pytest.mark.parametrize("mask_padding", [False, True])
def test_similarity_equals_per_pair_oracle(mask_padding):
    torch.manual_seed(0)
    method = build_method("xclip", **SMALL, logit_scale=1.0, mask_padding=mask_padding).eval()
    perturb_head(method)
    texts, videos = feature_batch(batch=5, seed=1, width=16), feature_batch(batch=4, seed=2, width=16)
    with torch.no_grad():
        sim = method.similarity(method.encode_text(texts), method.encode_video(videos))
        per_video = [(*xclip_video(method, videos, b), videos["video_mask"][b]) for b in range(4)]
        expected = torch.tensor([[xclip_pair(method, texts, a, *video) for video in per_video] for a in range(5)])
    torch.testing.assert_close(sim, expected, rtol=0, atol=1e-5)


def test_logit_is_scaled_mean_of_four_scores():
    torch.manual_seed(0)
    method = build_method("xclip", **SMALL).eval()
    batch = feature_batch(batch=4, width=16)
    with torch.no_grad():
        text, video = method.encode_text(batch), method.encode_video(batch)
        parts = method.score_parts(text, video)
        assert parts.shape == (4, 4, 4)
        torch.testing.assert_close(method.similarity(text, video), 100.0 * parts.mean(0))


@pytest.mark.parametrize("mask_padding", [False, True])
def test_padding_content_matters_only_without_masks(mask_padding):
    torch.manual_seed(0)
    method = build_method("xclip", **SMALL, mask_padding=mask_padding).eval()
    batch = feature_batch(batch=5, width=16)
    other = dict(batch)
    other["text_tokens"] = torch.where(batch["text_mask"][..., None], batch["text_tokens"], torch.randn(16))
    other["video_frames"] = torch.where(batch["video_mask"][..., None], batch["video_frames"], torch.randn(16))
    with torch.no_grad():
        sim, sim_other = (method.similarity(method.encode_text(b), method.encode_video(b)) for b in (batch, other))
    if mask_padding:
        torch.testing.assert_close(sim_other, sim, rtol=0, atol=1e-4)
    else:
        assert (sim_other - sim).abs().max() > 1e-2


def test_blockwise_equals_unblocked_for_odd_sizes():
    assert_odd_blockwise("xclip")


def test_eval_memory_is_bounded():
    block_peak, total = eval_memory("xclip")
    assert block_peak < 0.5 * GIB, f"one 64x64 block needs {block_peak / GIB:.2f} GiB"
    assert total < 4 * GIB
