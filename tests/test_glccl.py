"""GLCCL (``glccl``): the spec's numeric checks (reference/glccl.md 12), the exact rewrite of the word-guided frame
scores, a per-pair oracle, masking, blockwise evaluation and the evaluation-memory bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import GIB, assert_odd_blockwise, attn_sum_oracle, eval_memory, feature_batch, perturb_head
from tvr_convbench.methods import CostClass, build_method
from tvr_convbench.methods.glccl import csc_loss, glccl_losses, guided_frame_scores, guided_frame_weights, guided_video

SMALL = {"width": 16, "max_frames": 5, "max_words": 7}
ALL_REAL = torch.ones(2, 3, dtype=torch.bool)


def golden(logit_scale: float = 1.0):
    """The spec's golden tiny forward (12.7): D=4, L=3, F=2, A=B=2, every matrix at the identity, no masks."""
    method = build_method("glccl", width=4, max_frames=2, max_words=3, temporal_heads=1, logit_scale=logit_scale)
    sentences = torch.tensor([[2.0, 1, 0, 0], [1, 0, 2, 0]])
    words = torch.tensor([[[2.0, 0, 0, 0], [0, 2, 0, 0], [1, 1, 1, 1]], [[1.0, 0, 0, 0], [0, 0, 2, 0], [1, 1, 1, 1]]])
    z = torch.tensor([[[3.0, 0, 0, 0], [0, 3, 1, 0]], [[1.0, 0, 3, 0], [0, 0, 0, 3]]])  # seqTransf outputs
    text = method.encode_text({"text_eot": sentences, "text_tokens": words, "text_mask": ALL_REAL})
    return method, text, method.video_features(z, torch.ones(2, 2, dtype=torch.bool))


def direct_guided_frames(words: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """g [A, B, L, D], materialised as the official code does (a loop over word positions)."""
    logits_mask = torch.zeros(z.shape[:2]) if mask is None else torch.zeros(z.shape[:2]).masked_fill(~mask, -math.inf)
    frames = []
    for u in range(words.shape[1]):
        weights = torch.softmax(torch.einsum("ad,bfd->abf", words[:, u], z) / 5.0 + logits_mask, dim=-1)
        frames.append(torch.einsum("abf,bfd->abd", weights, z))
    return F.normalize(torch.stack(frames, dim=2), dim=-1)


def glccl_pair(method, text: dict, z: torch.Tensor, frame_mask: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """The four scores of one (text a, video b) pair from the spec (sections 3-4); z: seqTransf outputs [F, D]."""
    head, masked = method.head, method.mask_padding
    e, h = text["text_eot"][a], text["text_tokens"][a]  # [D], [L, D]
    zb = z[frame_mask] if masked else z  # [F', D]

    def glim(query):  # normalise(sum_f softmax_f(q . z_f / 5) z_f)
        return F.normalize(torch.softmax(zb @ query / 5.0, dim=0) @ zb, dim=0)

    v, g = glim(e), torch.stack([glim(h[u]) for u in range(h.shape[0])])  # [D], [L, D]
    t, w = F.normalize(e, dim=0), F.normalize(h, dim=-1)
    keep = text["text_mask"][a] if masked else torch.ones(h.shape[0], dtype=torch.bool)
    x = (w @ head.local_mat) @ g.t()  # [L (words), L (guided frames)]
    r = torch.stack([attn_sum_oracle(x[:, u], head.word.weight, keep) for u in range(x.shape[1])])
    c = torch.stack([attn_sum_oracle(x[i], head.frame.weight, keep) for i in range(x.shape[0])])
    return torch.stack(
        [
            t @ head.global_mat @ v,
            attn_sum_oracle(w @ v, head.video_word.weight, keep),
            attn_sum_oracle(g @ t, head.sentence_frame.weight, keep),
            0.5 * (attn_sum_oracle(r, head.frame2.weight, keep) + attn_sum_oracle(c, head.word2.weight, keep)),
        ]
    )


def test_is_pairwise():
    assert build_method("glccl", **SMALL).cost_class is CostClass.PAIRWISE


def test_parameter_counts():
    method = build_method("glccl", width=512, max_frames=64, max_words=64)
    assert sum(p.numel() for p in method.temporal.parameters()) == 12_648_960
    # 552,960 official matrices minus the unused F x F visual_logit_weight (dropped): 2 D^2 + 6 L^2
    assert sum(p.numel() for p in method.head.parameters()) == 552_960 - 4_096 == 548_864
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 12_648_960 + 548_864
    assert all(torch.equal(p, torch.eye(p.shape[0])) for p in method.head.parameters())
    # every re-weighting matrix is L x L whatever F is (MSR-VTT shapes: 530,576 - 144 unused)
    msrvtt = build_method("glccl", width=512, max_frames=12, max_words=32)
    assert sum(p.numel() for p in msrvtt.head.parameters()) == 530_576 - 144


@pytest.mark.parametrize("size", [8, 64])
def test_constant_scores_give_ln_b_and_csc_b_over_b_minus_1(size):
    # spec 12.1-12.2: four constant matrices 0, 1, 2, 3 -> InfoNCE ln B, CSC B / (B - 1) (B^2 denominator)
    scores = torch.arange(4.0)[:, None, None].expand(4, size, size)
    losses = glccl_losses(scores, csc_weight=0.5)
    torch.testing.assert_close(losses["infonce"], torch.tensor(math.log(size)), rtol=0, atol=1e-6)
    torch.testing.assert_close(losses["csc"], torch.tensor(size / (size - 1)), rtol=0, atol=1e-6)
    if size == 64:
        assert abs(losses["infonce"].item() - 4.158883) < 1e-6
        assert abs(losses["csc"].item() - 1.015873) < 1e-6
        assert abs(losses["loss"].item() - 4.666820) < 1e-6


def test_glim_weights():
    # spec 12.4: query (2, 1, 0, 0) over frames (3, 0, 0, 0), (0, 3, 0, 0) at temperature 5
    query, frames = torch.tensor([[2.0, 1, 0, 0]]), torch.tensor([[[3.0, 0, 0, 0], [0, 3, 0, 0]]])
    expected = torch.tensor([0.645656, 0.354344])
    video = guided_video(query, frames, 5.0)[0, 0]  # normalise(0.645656 * f_0 + 0.354344 * f_1)
    torch.testing.assert_close(video[:2] / video[:2].sum(), expected, rtol=0, atol=1e-6)
    weights = guided_frame_weights(query[None], {"frames": frames, "gram": frames @ frames.mT}, 5.0)[0, 0, 0]
    torch.testing.assert_close(weights / weights.sum(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights @ frames[0], video)  # the weights give the unit pooled frame


def test_golden_tiny_forward():
    method, text, video = golden()
    with torch.no_grad():
        parts = method.score_parts(text, video)
        sim = method.similarity(text, video)
        losses = method.loss(sim, text, video)
    tables = [
        [[0.986660, 0.238671], [0.523361, 0.963924]],  # video-sentence
        [[0.865594, 0.801990], [0.790695, 0.923742]],  # video-word
        [[0.980871, 0.235084], [0.527095, 0.951854]],  # sentence-frame
        [[0.952446, 0.804051], [0.865394, 0.912172]],  # frame-word
    ]
    torch.testing.assert_close(parts, torch.tensor(tables), rtol=0, atol=1e-5)
    torch.testing.assert_close(sim, torch.tensor([[0.946393, 0.519949], [0.676636, 0.937923]]), rtol=0, atol=1e-5)
    assert abs(losses["infonce"].item() - 0.536670) < 1e-5
    assert abs(losses["csc"].item() - 0.053537) < 1e-5
    assert abs(losses["loss"].item() - 0.563438) < 1e-5


def test_golden_at_logit_scale_100_keeps_csc():
    method, text, video = golden(logit_scale=100.0)
    with torch.no_grad():
        losses = method.training_forward(text, video)
        torch.testing.assert_close(method.similarity(text, video), 100 * golden()[0].similarity(text, video))
    assert abs(losses["csc"].item() - 0.053537) < 1e-5
    assert losses["infonce"].item() < 1e-6


def test_csc_is_scale_invariant_and_zero_when_positives_agree():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 9, 9, generator=g)
    torch.testing.assert_close(csc_loss(100.0 * scores), csc_loss(scores), rtol=1e-5, atol=0)
    agree = scores.clone()
    agree[:, torch.arange(9), torch.arange(9)] = torch.randn(9, generator=g)  # same value for all four scores
    assert csc_loss(agree).item() == 0.0


def test_csc_guard_when_all_four_scores_are_equal():
    same = torch.randn(1, 6, 6).expand(4, 6, 6)
    variance = same.var(dim=0)
    assert torch.isnan(variance.diagonal().mean() / variance.fill_diagonal_(0).mean())  # the official 0/0
    assert csc_loss(same).item() == 0.0
    assert csc_loss(torch.zeros(4, 6, 6)).item() == 0.0


def test_collapse_identity_is_finite():
    # spec 12.6: one frame, every word parallel to its sentence, identity matrices -> the four scores coincide
    method = build_method("glccl", width=8, max_frames=1, max_words=4, temporal_heads=1)
    g = torch.Generator().manual_seed(0)
    sentences = torch.randn(5, 8, generator=g)
    words = sentences[:, None] * torch.rand(5, 4, 1, generator=g).add(0.5)
    text = method.encode_text({"text_eot": sentences, "text_tokens": words, "text_mask": torch.ones(5, 4).bool()})
    z = torch.randn(5, 1, 8, generator=g).requires_grad_()
    video = method.video_features(z, torch.ones(5, 1, dtype=torch.bool))
    parts = method.score_parts(text, video)
    cosine = F.normalize(sentences, dim=-1) @ F.normalize(z[:, 0], dim=-1).t()
    torch.testing.assert_close(parts, cosine.expand(4, 5, 5), rtol=0, atol=1e-5)
    losses = method.training_forward(text, video)
    assert 0.0 <= losses["csc"].item() < 1e-3
    losses["loss"].backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("mask_padding", [False, True])
def test_guided_frame_scores_equal_the_materialised_computation(mask_padding):
    torch.manual_seed(0)
    method = build_method("glccl", **SMALL, mask_padding=mask_padding).eval()
    perturb_head(method)
    texts, videos = feature_batch(batch=5, seed=1, width=16), feature_batch(batch=4, seed=2, width=16)
    with torch.no_grad():
        text, video = method.encode_text(texts), method.encode_video(videos)
        mask = video["frame_mask"] if mask_padding else None
        weights = guided_frame_weights(text["words_raw"], video, 5.0, mask)
        g = direct_guided_frames(text["words_raw"], video["frames"], mask)  # [A, B, L, D]
        frame_word = torch.einsum("atd,abud->abtu", text["words_loc"], g)
        sentence_frame = torch.einsum("ad,abud->abu", text["sentence"], g)
        torch.testing.assert_close(guided_frame_scores(text["words_loc"], video["frames"], weights), frame_word)
        got = guided_frame_scores(text["sentence"][:, None], video["frames"], weights)[:, :, 0]
        torch.testing.assert_close(got, sentence_frame)
        v = guided_video(text["sentence_raw"], video["frames"], 5.0, mask)
        word_mask = text["word_mask"][:, None] if mask_padding else None
        direct = method.head(
            torch.einsum("ad,abd->ab", text["sentence_g"], v),
            torch.einsum("atd,abd->abt", text["words"], v),
            sentence_frame,
            frame_word,
            word_mask,
            word_mask,
        )
        torch.testing.assert_close(method.score_parts(text, video), direct)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_score_parts_equal_per_pair_oracle(mask_padding):
    torch.manual_seed(0)
    method = build_method("glccl", **SMALL, logit_scale=1.0, mask_padding=mask_padding).eval()
    perturb_head(method)
    texts, videos = feature_batch(batch=4, seed=1, width=16), feature_batch(batch=3, seed=2, width=16)
    with torch.no_grad():
        text, video = method.encode_text(texts), method.encode_video(videos)
        z, mask = video["frames"], video["frame_mask"]
        expected = torch.stack(
            [torch.stack([glccl_pair(method, texts, z[b], mask[b], a, b) for b in range(3)]) for a in range(4)]
        )
        torch.testing.assert_close(method.score_parts(text, video), expected.permute(2, 0, 1), rtol=0, atol=1e-5)
        torch.testing.assert_close(method.similarity(text, video), expected.mean(-1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_appended_padded_frame_matters_only_without_masks(mask_padding):
    # spec 12.11: in faithful mode a padded frame changes v and g; in masked mode it must not
    method = build_method("glccl", **SMALL, mask_padding=mask_padding).eval()
    batch = feature_batch(batch=4, width=16)
    z, mask = torch.randn(4, 5, 16), batch["video_mask"]
    longer_z = torch.cat([z, torch.randn(16).expand(4, 1, 16)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(4, 1, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        text = method.encode_text(batch)
        parts = method.score_parts(text, method.video_features(z, mask))
        longer = method.score_parts(text, method.video_features(longer_z, longer_mask))
    if mask_padding:
        torch.testing.assert_close(longer, parts)
    else:
        assert (longer - parts).abs().max() > 1e-3


def test_training_forward_equals_loss_of_similarity():
    torch.manual_seed(0)
    method = build_method("glccl", **SMALL).train()
    text, video = method(feature_batch(batch=6, width=16))
    fused = method.training_forward(text, video)
    separate = method.loss(method.similarity(text, video), text, video)
    assert fused.keys() == separate.keys() == {"loss", "infonce", "csc"}
    for key in fused:
        torch.testing.assert_close(fused[key], separate[key])


def test_blockwise_equals_unblocked_for_odd_sizes():
    assert_odd_blockwise("glccl")


def test_eval_memory_is_bounded():
    block_peak, total = eval_memory("glccl")
    assert block_peak < 0.5 * GIB, f"one 64x64 block needs {block_peak / GIB:.2f} GiB"
    assert total < 4 * GIB
