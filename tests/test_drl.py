"""DRL (``methods/drl.py``) against the spec (``reference/baselines-and-didemo.md`` 2.4), brute-force oracles of the
WTI score and of the official ``cdcr=3`` regulariser, and its memory bound."""

from __future__ import annotations

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
from tvr_convbench.methods.parts.losses import symmetric_infonce

SEQTRANSF_512 = 12_609_536 + 39_424  # 4 blocks + the 77-row position table
WEIGHT_MLP_512 = 512 * 512 + 512 + 512 + 1


def drl(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    config = {"width": 32, "max_frames": 9, "max_words": 7} | kwargs
    return build_method("drl", **config)


def trainable_count(method) -> int:
    return sum(p.numel() for p in method.parameters() if p.requires_grad)


# --- oracles --------------------------------------------------------------------------------------------------------
def oracle_weights(mlp, features: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Per item: softmax of the MLP logits over its valid positions (uniform without an MLP)."""
    out = []
    for feats, valid in zip(features, mask, strict=True):
        n = int(valid.sum())
        out.append(torch.full((n,), 1.0 / n) if mlp is None else torch.softmax(mlp(feats[valid]).squeeze(-1), 0))
    return out


def oracle_scores(method, texts: dict, videos: dict) -> torch.Tensor:
    """WTI per pair, as the code: the full L x F cosine matrix with invalid pairs = 0, max over all slots."""
    frames = method.temporal(videos["video_frames"], videos["video_mask"])  # the shared seqTransf
    t_w = oracle_weights(method.text_weight_fc, texts["text_tokens"], texts["text_mask"])
    v_w = oracle_weights(method.video_weight_fc, frames, videos["video_mask"])
    scores = torch.empty(len(t_w), len(v_w))
    for a, (tokens, t_valid) in enumerate(zip(texts["text_tokens"], texts["text_mask"], strict=True)):
        for b, (feats, v_valid) in enumerate(zip(frames, videos["video_mask"], strict=True)):
            s = torch.zeros(len(t_valid), len(v_valid))
            s[t_valid.nonzero()[:, 0][:, None], v_valid.nonzero()[:, 0][None]] = (
                F.normalize(tokens[t_valid], dim=-1) @ F.normalize(feats[v_valid], dim=-1).t()
            )
            t2v = (t_w[a] * s[t_valid].max(dim=1).values).sum()
            v2t = (v_w[b] * s[:, v_valid].max(dim=0).values).sum()
            scores[a, b] = SCALE * (t2v + v2t) / 2
    return scores


def oracle_matches(full: torch.Tensor, anchors: torch.Tensor, others: torch.Tensor, mask, weights, transpose: bool):
    """Rows of one CDCR direction: every valid anchor of item i, its best match in item i (diagonal of ``full``)
    and its token weight, by explicit loops."""
    rows, matches, row_weights = [], [], []
    for i in range(anchors.shape[0]):
        diag = full[i, i].t() if transpose else full[i, i]  # [anchors, others]
        for n in range(anchors.shape[1]):
            if mask[i, n]:
                rows.append(anchors[i, n])
                matches.append(others[i, diag[n].argmax()])
                row_weights.append(weights[i, n])
    return torch.stack(rows), torch.stack(matches), torch.stack(row_weights)


def oracle_cdcr(text: dict, video: dict, alpha1: float, alpha2: float) -> torch.Tensor:
    """DRL ``cdcr=3`` as the code computes it: arg-max matches read off the diagonal of the full [B, B, L, F]
    similarity tensor (invalid pairs 0), z-scores over all valid rows of the batch, weighted [N, D, D] outer
    products summed and divided by B, the two directions averaged."""
    tokens, frames, t_mask, v_mask = text["tokens"], video["frames"], text["mask"], video["mask"]
    full = torch.einsum("atd,bvd->abtv", tokens, frames) * t_mask[:, None, :, None] * v_mask[None, :, None, :]

    def corr(anchors, matches, weights):
        za, zb = (anchors - anchors.mean(0)) / anchors.std(0), (matches - matches.mean(0)) / matches.std(0)
        return torch.einsum("ncd,n->cd", torch.einsum("nc,nd->ncd", za, zb), weights) / tokens.shape[0]

    c_t2v = corr(*oracle_matches(full, tokens, frames, t_mask, text["weights"], transpose=False))
    c_v2t = corr(*oracle_matches(full, frames, tokens, v_mask, video["weights"], transpose=True))
    c = (c_t2v + c_v2t) / 2
    off = c - torch.diag(torch.diagonal(c))
    return alpha1 * (torch.diagonal(c) - 1).pow(2).sum() + alpha2 * off.pow(2).sum()


# --- tests ----------------------------------------------------------------------------------------------------------
def test_cost_class_is_pairwise():
    assert drl().cost_class is CostClass.PAIRWISE


def test_trainable_parameters_at_width_512():
    assert trainable_count(drl(width=512, max_frames=64, max_words=64)) == SEQTRANSF_512 + 2 * WEIGHT_MLP_512


def test_ti_ablation_builds_no_weight_mlps():
    method = drl(width=512, max_frames=64, max_words=64, uniform_weights=True)
    assert method.text_weight_fc is None and method.video_weight_fc is None
    assert trainable_count(method) == SEQTRANSF_512


@pytest.mark.parametrize("uniform_weights", [False, True])
def test_similarity_matches_a_per_pair_loop(uniform_weights):
    method = drl(uniform_weights=uniform_weights).eval()
    texts, videos = feature_batch(batch=6, frames=9, seed=1), feature_batch(batch=7, frames=9, seed=2)
    assert (~videos["video_mask"]).any() and (~texts["text_mask"]).any(), "the batch must contain padding"
    with torch.no_grad():
        sim = method.similarity(method.encode_text(texts), method.encode_video(videos))
        expected = oracle_scores(method, texts, videos)
    torch.testing.assert_close(sim, expected, rtol=0, atol=SCALE * 1e-5)  # 1e-5 in cosine


@pytest.mark.parametrize("padded_frame", [False, True])
def test_invalid_pairs_count_as_zero_in_the_max(padded_frame):
    """Every real frame is -t for every token t (cosine -1). As the code sets invalid pairs to 0 (not -inf), a
    padded frame makes every token's max 0, so the score is (0 + (-1)) / 2; without one it is (-1 + -1) / 2."""
    method = drl().eval()
    direction = F.normalize(torch.randn(32), dim=0)
    video_mask = torch.tensor([[True, True, not padded_frame]])
    text = {
        "tokens": direction.expand(1, 3, 32),
        "mask": torch.ones(1, 3, dtype=torch.bool),
        "weights": torch.full((1, 3), 1 / 3),
    }
    video = {"frames": -direction.expand(1, 3, 32), "mask": video_mask, "weights": video_mask / video_mask.sum()}
    with torch.no_grad():
        score = method.similarity(text, video).item()
    assert score == pytest.approx(SCALE * (-0.5 if padded_frame else -1.0), abs=1e-4)


@pytest.mark.parametrize("alpha2", [0.0, 0.05])
def test_cdcr_matches_the_official_formula(alpha2):
    method = perturb_(drl(cdcr_alpha2=alpha2), std=0.02).train()
    batch = feature_batch(batch=8, frames=9, seed=3)
    text, video = method(batch)
    with torch.no_grad():
        expected = oracle_cdcr(text, video, alpha1=0.14, alpha2=alpha2)
        torch.testing.assert_close(method.cdcr(text, video), expected, rtol=1e-5, atol=1e-6)


def test_loss_is_infonce_plus_weighted_cdcr():
    method = drl().train()
    text, video = method(feature_batch(batch=8, frames=9, seed=4))
    sim = method.similarity(text, video)
    parts = method.loss(sim, text, video)
    assert set(parts) == {"loss", "infonce", "cdcr"}
    torch.testing.assert_close(parts["infonce"], symmetric_infonce(sim))
    torch.testing.assert_close(parts["cdcr"], method.cdcr(text, video))
    torch.testing.assert_close(parts["loss"], parts["infonce"] + 0.001 * parts["cdcr"])
    assert parts["cdcr"] > 0


def test_ti_ablation_gradients_reach_every_trainable_parameter():
    method = drl(uniform_weights=True).train()
    method.training_forward(*method(feature_batch(batch=6, frames=9)))["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters() if p.requires_grad)


def test_a_video_without_real_frames_scores_finite():
    method = drl().eval()
    batch = feature_batch(batch=4, frames=9, seed=5)
    batch["video_mask"][1] = False
    with torch.no_grad():
        video = method.encode_video(batch)
        sim = method.similarity(method.encode_text(batch), video)
    assert torch.isfinite(sim).all() and torch.equal(video["weights"][1], torch.zeros(9))


def test_blockwise_equals_unblocked_within_float32_rounding():
    """257 x 193: not bit-exact (GEMM kernels, and so summation orders, depend on the block shape); the weights and
    normalised features are per item and identical in both. Bound as for X-Pool: a block may be at most 2x less
    accurate than the unblocked matrix against a float64 evaluation of the pairwise stage (same reps), so
    |block - full| <= 3 x err(full), with err(full) itself float32-level (<= 2^-20 in cosine)."""
    method = perturb_(drl(), std=0.02).eval()
    with torch.no_grad():
        text = method.encode_text(feature_batch(batch=257, frames=9, seed=6))
        video = method.encode_video(feature_batch(batch=193, frames=9, seed=7))
    assert_blockwise_within_rounding(method, text, video)


def drl_block_bytes(a: int, b: int, width: int, words: int, frames: int) -> int:
    """Peak intermediates of one [a, b] block: the [a L, b F] similarity GEMM output, the zeroed normalised tokens
    and frames, the two max reductions (values + int64 indices when autograd is on) and a few [a, b] results."""
    return (
        4 * a * words * b * frames
        + 4 * (a * words + b * frames) * width
        + 12 * (a * words * b + a * b * frames)
        + 12 * a * b
    )


@pytest.mark.parametrize(
    "shape", [(16, 16, 64, 16, 16), (12, 20, 64, 16, 16), (20, 12, 128, 24, 8), (9, 17, 96, 8, 24)]
)
def test_measured_block_memory_within_the_analytic_bound(shape):
    a, b, width, words, frames = shape
    method = drl(width=width, max_frames=frames, max_words=words).eval()
    with torch.no_grad():
        text = method.encode_text(feature_batch(batch=a, words=words, frames=frames, width=width, seed=1))
        video = method.encode_video(feature_batch(batch=b, words=words, frames=frames, width=width, seed=2))
    measured = measured_similarity_peak(method, text, video)
    assert 0.5 * drl_block_bytes(a, b, width, words, frames) < measured <= drl_block_bytes(a, b, width, words, frames)


def test_didemo_scale_memory_budget():
    """D = 512, 64 frames, 64 words: one max_eval_block block well under 1 GiB; 1,000 x 1,000 under 4 GiB."""
    method = drl(width=512, max_frames=64, max_words=64).eval()
    block = drl_block_bytes(method.max_eval_block, method.max_eval_block, 512, 64, 64)
    assert block <= 0.5 * GIB
    total = 1000 * reps_per_item_bytes(method, 512, 64, 64) + 1000 * 1000 * 4 + block
    assert total <= 4 * GIB
