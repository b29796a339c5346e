"""GLSCL (``methods/glscl.py``) against the numbers of ``reference/glscl.md`` section 8 and brute-force oracles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import feature_batch, tiny_method
from tvr_convbench.bench.evaluate import blockwise_similarity, cat_reps
from tvr_convbench.methods import build_method
from tvr_convbench.methods.base import normalize
from tvr_convbench.methods.glscl import global_scores, inter_consistency, intra_diversity, pairwise_dots
from tvr_convbench.methods.parts.pooling import conditioned_weights, pool

DIDEMO = {"width": 512, "max_frames": 64, "max_words": 64}


def trainable(method) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in method.named_parameters() if p.requires_grad}


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(gaussian(*shape, seed=seed), dim=-1)


def orthonormal(batch: int, num: int, dim: int, seed: int = 0) -> torch.Tensor:
    """[batch, num, dim] with orthonormal rows per item."""
    return torch.linalg.qr(gaussian(batch, dim, num, seed=seed)).Q.mT


@torch.no_grad()
def gim_oracle(sentence, frames, mask, temperature: float = 3.0, only_valid: bool = True) -> torch.Tensor:
    """Per-pair loops: softmax over the valid frames only (or over all, then masked), pool, cosine."""
    out = sentence.new_empty(sentence.shape[0], frames.shape[0])  # in the inputs' dtype
    for i, t in enumerate(sentence):
        for j, (video, valid) in enumerate(zip(frames, mask)):
            logits = video @ t / temperature  # [F]
            if only_valid:
                weights = torch.zeros_like(logits)
                weights[valid] = logits[valid].softmax(0)
            else:
                weights = logits.softmax(0) * valid
            pooled = weights @ video  # [D]
            out[i, j] = t @ pooled / (t.norm() * pooled.norm())  # official: no epsilon
    return out


@torch.no_grad()
def local_oracle(text_concepts, video_concepts) -> torch.Tensor:
    """Per-pair, per-query loop: mean over k of cos(text concept k, video concept k)."""
    num_queries = text_concepts.shape[1]
    out = torch.zeros(text_concepts.shape[0], video_concepts.shape[0])
    for i, zt in enumerate(text_concepts):
        for j, zv in enumerate(video_concepts):
            out[i, j] = sum(F.cosine_similarity(zt[k], zv[k], dim=0) for k in range(num_queries)) / num_queries
    return out


def idl_oracle(concepts, margin: float = 0.1) -> float:
    """The official ``margin_ranking_loss(mean_b Z Z^T, margin, 'both')``, written out with loops."""
    batch, num_queries = concepts.shape[:2]
    gram = (sum(concepts[b] @ concepts[b].T for b in range(batch)) / batch).tolist()
    total = 0.0
    for k in range(num_queries):
        for l in range(num_queries):
            if k != l:
                total += max(0.0, margin + gram[k][l] - gram[k][k]) + max(0.0, margin + gram[k][l] - gram[l][l])
    return total / (num_queries * (num_queries - 1))


def paired_concepts(cosines: torch.Tensor, dim: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit video/text concepts [B, Nq, dim] whose pair (b, k) has cosine ``cosines[b, k]`` exactly (up to fp32)."""
    video = unit(*cosines.shape, dim, seed=seed)
    other = unit(*cosines.shape, dim, seed=seed + 1)
    other = F.normalize(other - (other * video).sum(-1, keepdim=True) * video, dim=-1)  # orthogonal to video
    c = cosines[..., None]
    return video, c * video + (1 - c**2).sqrt() * other


def no_grad_similarity(method, text, video):
    with torch.no_grad():
        return method.similarity(text, video)


# --- sizes -----------------------------------------------------------------------------------------------------
def test_parameter_counts_at_didemo_size():
    method = build_method("glscl", **DIDEMO)
    decoder = sum(p.numel() for p in method.decoder.parameters())
    assert decoder == 12_612_096
    assert method.queries.numel() == 4_096
    assert sum(p.numel() for p in trainable(method).values()) == 25_265_152
    learnable = build_method("glscl", **DIDEMO, learnable_logit_scale=True)
    assert sum(p.numel() for p in trainable(learnable).values()) == 25_265_152 + 1
    global_only = build_method("glscl", **DIDEMO, score="global")
    assert sum(p.numel() for p in trainable(global_only).values()) == 25_265_152 - 12_616_192


def test_local_module_is_the_official_decoder():
    method = build_method("glscl", **DIDEMO)
    layers = method.decoder.layers
    assert len(layers) == 3 and method.decoder.norm is None
    for layer in layers:
        assert not layer.norm_first and layer.activation is F.relu
        assert layer.linear1.out_features == 4 * 512 and layer.dropout.p == 0.1
        assert layer.self_attn.num_heads == 8 and layer.multihead_attn.num_heads == 8
    queries = method.queries.detach()
    assert queries.shape == (8, 512) and queries.min() >= 0 and queries.max() < 1  # torch.rand
    cosines = F.normalize(queries, dim=-1) @ F.normalize(queries, dim=-1).T
    assert abs(cosines[~torch.eye(8, dtype=torch.bool)].mean().item() - 0.75) < 0.02  # spec 8.11


# --- losses ----------------------------------------------------------------------------------------------------
def test_infonce_at_uniform_logits_is_ln_batch():
    method = tiny_method("glscl").train()
    text, video = method(feature_batch(batch=32))
    parts = method.loss(torch.zeros(32, 32), text, video)
    assert parts["infonce"].item() == pytest.approx(math.log(32), abs=1e-4)
    assert parts["loss"].item() == pytest.approx((parts["infonce"] + parts["idl"] + parts["icl"]).item(), abs=1e-6)


def test_idl_identical_and_orthonormal_concepts():
    method = tiny_method("glscl")
    text = {"concepts": unit(32, 8, 32, seed=1)}
    identical = {"concepts": unit(1, 1, 32).expand(32, 8, 32)}
    assert method.loss(torch.zeros(32, 32), text, identical)["idl"].item() == pytest.approx(2.0e-5, rel=1e-5)
    spread = {"concepts": orthonormal(32, 8, 32, seed=2)}
    assert method.loss(torch.zeros(32, 32), text, spread)["idl"].item() == 0.0


def test_idl_matches_the_official_margin_ranking_loss():
    shared = unit(1, 1, 32, seed=3)
    concepts = F.normalize(shared + 0.35 * unit(16, 8, 32, seed=4), dim=-1)  # off-diagonal Gram near 0.9
    gram = torch.einsum("bkd,bld->kl", concepts, concepts) / 16
    off = gram[~torch.eye(8, dtype=torch.bool)]
    assert (off > 0.9).any() and (off < 0.9).any(), "the hinge should be active for some pairs only"
    # fp32 Gram entries near 0.9 carry ~1e-7 error into each hinge; the oracle runs in float64
    assert intra_diversity(concepts).item() == pytest.approx(idl_oracle(concepts), abs=1e-6)


def test_icl_r_term_at_perfect_alignment_and_at_its_zero():
    method = tiny_method("glscl")
    concepts = unit(32, 8, 32, seed=5)
    mse, r = inter_consistency(concepts, concepts)
    assert mse.item() == 0.0 and r.item() == pytest.approx(84.5, rel=1e-6)
    icl = method.loss(torch.zeros(32, 32), {"concepts": concepts}, {"concepts": concepts})["icl"]
    assert icl.item() == pytest.approx(0.4225, rel=1e-6)
    cosines = 0.1875 + 0.1 * torch.linspace(-1, 1, 32)[:, None].expand(32, 8)  # mean over the batch: 0.1875
    video, text = paired_concepts(cosines)
    mse, r = inter_consistency(video, text)
    assert r.item() < 1e-10
    assert mse.item() == pytest.approx(F.mse_loss(video.mean(0), text.mean(0)).item(), rel=1e-6) and mse > 0


# --- the three switches ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("icl_normalise", [False, True])
def test_icl_normalise_switch(icl_normalise):
    method = tiny_method("glscl", icl_normalise=icl_normalise)
    cosines = torch.rand(24, 8, generator=torch.Generator().manual_seed(6))
    video, text = paired_concepts(cosines, dim=32)
    divisor = 24 if icl_normalise else 8  # the batch (per-pair mean) or, officially, Nq
    r = sum((cosines[:, k].sum() / divisor - 0.75) ** 2 for k in range(8))
    expected = F.mse_loss(video.mean(0), text.mean(0)) + 0.005 * r
    icl = method.loss(torch.zeros(24, 24), {"concepts": text}, {"concepts": video})["icl"]
    assert icl.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("text_idl", [False, True])
def test_text_idl_switch(text_idl):
    method = tiny_method("glscl", text_idl=text_idl)
    identical_text = {"concepts": unit(1, 1, 32).expand(16, 8, 32)}  # raw IDL 0.2
    spread_video = {"concepts": orthonormal(16, 8, 32, seed=2)}  # raw IDL 0
    idl = method.loss(torch.zeros(16, 16), identical_text, spread_video)["idl"]
    assert idl.item() == pytest.approx(2.0e-5 if text_idl else 0.0, rel=1e-5, abs=1e-12)


def with_extra_padding(batch: dict, extra: int) -> dict:
    """The same items with ``extra`` more padded frame and token slots (blank frame / pad token features)."""
    frames, tokens = batch["video_frames"], batch["text_tokens"]
    blank = frames[~batch["video_mask"]][0] if (~batch["video_mask"]).any() else torch.ones(frames.shape[-1])
    pad = tokens[~batch["text_mask"]][0]
    size = frames.shape[0]
    return {
        **batch,
        "video_frames": torch.cat([frames, blank.expand(size, extra, -1)], 1),
        "video_mask": torch.cat([batch["video_mask"], torch.zeros(size, extra, dtype=torch.bool)], 1),
        "text_tokens": torch.cat([tokens, pad.expand(size, extra, -1)], 1),
        "text_mask": torch.cat([batch["text_mask"], torch.zeros(size, extra, dtype=torch.bool)], 1),
    }


@pytest.mark.parametrize("mask_padding", [False, True])
def test_mask_padding_switch(mask_padding):
    method = tiny_method("glscl", mask_padding=mask_padding, logit_scale=1.0).eval()
    batch = feature_batch(batch=6, seed=7)
    assert (~batch["video_mask"]).any() and (~batch["text_mask"]).any()
    longer = with_extra_padding(batch, extra=6)
    short, long = (no_grad_similarity(method, *method(b)) for b in (batch, longer))
    if mask_padding:
        torch.testing.assert_close(long, short, rtol=0, atol=2e-6)
    else:
        assert (long - short).abs().max() > 1e-3


@pytest.mark.parametrize("mask_padding", [False, True])
def test_a_video_without_real_frames_scores_finite(mask_padding):
    method = tiny_method("glscl", mask_padding=mask_padding).train()
    batch = feature_batch(batch=4, seed=15)
    batch["video_mask"][1] = False
    losses = method.training_forward(*method(batch))
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(p.grad).all() for p in trainable(method).values())


# --- scores ----------------------------------------------------------------------------------------------------
def test_gim_equals_softmax_over_valid_frames():
    method = tiny_method("glscl", score="global", logit_scale=1.0).eval()
    batch = feature_batch(batch=7, seed=8)
    text, video = method(batch)
    valid = gim_oracle(text["sentence"], video["frames"], video["mask"], only_valid=True)
    official = gim_oracle(text["sentence"], video["frames"], video["mask"], only_valid=False)
    torch.testing.assert_close(official, valid, rtol=0, atol=1e-6)
    torch.testing.assert_close(no_grad_similarity(method, text, video), valid, rtol=0, atol=1e-6)
    torch.testing.assert_close(method.similarity(text, video).detach(), valid, rtol=0, atol=1e-6)  # GEMM path


def test_gim_value_and_gradient_match_the_shared_pooling_parts():
    batch = feature_batch(batch=5, seed=9)
    sentence = batch["text_eot"].clone().requires_grad_()
    frames = batch["video_frames"].clone().requires_grad_()
    mask = batch["video_mask"]
    ours = global_scores(sentence, frames, frames @ frames.mT, mask, 3.0)
    weights = conditioned_weights(sentence, frames, 3.0, mask, mode="multiply")  # [A, B, F]
    official = torch.einsum("ad,abd->ab", normalize(sentence), normalize(pool(weights, frames)))  # [A, B]
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-6)
    upstream = gaussian(5, 5, seed=10)
    grads = torch.autograd.grad((ours * upstream).sum(), (sentence, frames))
    expected = torch.autograd.grad((official * upstream).sum(), (sentence, frames))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# --- the GIM at large feature norms: where the official fp32 softmax underflows ---------------------------------
LARGE_NORM = 70.0
"""feature norm of the underflow tests (CLIP's are ~10): logits spread over hundreds, so a dominant padded slot
drives every real frame's fp32 softmax weight to (nearly) zero"""


def large_norm_inputs(seed: int = 51) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw sentences [16, 32], frames [16, 8, 32] (padded slots hold the blank frame) at ``LARGE_NORM``, frame mask."""
    batch = feature_batch(batch=16, frames=8, width=32, seed=seed)
    return LARGE_NORM * normalize(batch["text_eot"]), LARGE_NORM * normalize(batch["video_frames"]), batch["video_mask"]


def official_gim(sentence, frames, mask, temperature: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The official GIM in the inputs' dtype: softmax over all F slots, times the mask, pooled, cosine without an
    epsilon. Returns (scores [A, B], pooled-video norms [A, B])."""
    weights = (torch.einsum("ad,bfd->abf", sentence, frames) / temperature).softmax(-1) * mask[None]  # [A, B, F]
    pooled = torch.einsum("abf,bfd->abd", weights, frames)  # [A, B, D]
    pooled_norm = pooled.norm(dim=-1)  # [A, B]
    return torch.einsum("ad,abd->ab", sentence, pooled) / (sentence.norm(dim=-1)[:, None] * pooled_norm), pooled_norm


def ours_on_both_paths(sentence, frames, mask) -> list[torch.Tensor]:
    """``global_scores`` on the evaluation path (tiled GEMMs, no autograd) and on the training path (autograd)."""
    with torch.no_grad():
        evaluation = global_scores(sentence, frames, frames @ frames.mT, mask, 3.0)
    sentence, frames = sentence.clone().requires_grad_(), frames.clone().requires_grad_()
    return [evaluation, global_scores(sentence, frames, frames @ frames.mT, mask, 3.0).detach()]


def test_gim_at_large_norms_equals_the_official_score_wherever_that_is_finite():
    sentence, frames, mask = large_norm_inputs()
    official, pooled_norm = official_gim(sentence.double(), frames.double(), mask)  # the float64 reference
    kept = official.isfinite() & (pooled_norm > 0)
    official32 = official_gim(sentence, frames, mask)[0]
    assert kept.float().mean() > 0.5 and (kept & ~official32.isfinite()).any(), "some pairs only fp64 keeps"
    for ours in ours_on_both_paths(sentence, frames, mask):
        # fp32 logits of size ~1e3 carry ~1e-4 absolute error into the softmax: the cosines agree to ~1e-6
        torch.testing.assert_close(ours.double()[kept], official[kept], rtol=0, atol=1e-5)


def test_gim_where_the_official_fp32_softmax_underflows_is_the_real_frame_softmax():
    sentence, frames, mask = large_norm_inputs()
    official32, pooled_norm32 = official_gim(sentence, frames, mask)
    lost = pooled_norm32 == 0  # every real frame's weight (or its square in the norm) underflowed in fp32
    assert lost.sum() >= 10
    assert not official32[lost].isfinite().any()  # 0/0 or x/0: the official code loses these pairs
    assert official32[~lost].isfinite().all()
    reference = gim_oracle(sentence.double(), frames.double(), mask, only_valid=True)  # float64, real frames only
    for ours in ours_on_both_paths(sentence, frames, mask):
        assert ours.isfinite().all()
        torch.testing.assert_close(ours.double()[lost], reference[lost], rtol=0, atol=1e-5)


def test_gim_gradients_at_large_norms_are_finite_and_match_float64():
    sentence, frames, mask = large_norm_inputs()
    upstream = gaussian(16, 16, seed=52)
    sentence32, frames32 = sentence.clone().requires_grad_(), frames.clone().requires_grad_()
    ours = global_scores(sentence32, frames32, frames32 @ frames32.mT, mask, 3.0)
    grads = torch.autograd.grad((ours * upstream).sum(), (sentence32, frames32))
    assert all(torch.isfinite(g).all() for g in grads)
    sentence64, frames64 = sentence.double().requires_grad_(), frames.double().requires_grad_()
    weights = conditioned_weights(sentence64, frames64, 3.0, mask, mode="exclude")  # [A, B, F]
    reference = torch.einsum("ad,abd->ab", normalize(sentence64), normalize(pool(weights, frames64)))  # [A, B]
    expected = torch.autograd.grad((reference * upstream.double()).sum(), (sentence64, frames64))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=2e-5)


def test_gim_of_a_video_without_real_frames_pools_all_its_slots():
    batch = feature_batch(batch=5, seed=53)
    sentence, frames, mask = batch["text_eot"], batch["video_frames"], batch["video_mask"].clone()
    mask[2] = False
    ours = global_scores(sentence, frames, frames @ frames.mT, mask, 3.0)
    expected = gim_oracle(sentence, frames[2:3], torch.ones_like(mask[2:3]), only_valid=True)  # [A, 1]
    assert ours.isfinite().all()
    torch.testing.assert_close(ours[:, 2:3], expected, rtol=0, atol=1e-6)


def test_local_score_is_the_per_query_cosine_mean():
    method = tiny_method("glscl", score="local", logit_scale=1.0).eval()
    text, video = method(feature_batch(batch=6, seed=11))
    expected = local_oracle(text["concepts"], video["concepts"])
    torch.testing.assert_close(no_grad_similarity(method, text, video), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(method.similarity(text, video).detach(), expected, rtol=0, atol=1e-6)


def test_score_is_global_plus_half_local_times_logit_scale():
    method = tiny_method("glscl").eval()
    text, video = method(feature_batch(batch=6, seed=12))
    gim = gim_oracle(text["sentence"], video["frames"], video["mask"], only_valid=False)
    expected = 100.0 * (gim + 0.5 * local_oracle(text["concepts"], video["concepts"]))
    torch.testing.assert_close(no_grad_similarity(method, text, video), expected, rtol=0, atol=1e-4)


def test_the_local_module_is_shared_between_modalities():
    method = tiny_method("glscl").eval()
    batch = feature_batch(batch=4, seed=13)
    with torch.no_grad():
        video = method.encode_video(batch)
        as_text = {**batch, "text_tokens": video["frames"], "text_mask": batch["video_mask"]}
        text = method.encode_text(as_text)
    assert torch.equal(text["concepts"], video["concepts"])
    torch.testing.assert_close(text["concepts"].norm(dim=-1), torch.ones(4, 8))


# --- blockwise evaluation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [64, 40_000])  # 40,000: a lone reduction this long would be split across threads
def test_pairwise_dots_blocks_are_bit_identical_to_the_full_product(k):
    x, y = gaussian(3, k, seed=15), gaussian(4, k, seed=16)
    with torch.no_grad():
        full = pairwise_dots(x, y)
        for i in range(3):
            for j in range(4):
                assert torch.equal(pairwise_dots(x[i : i + 1], y[j : j + 1]), full[i : i + 1, j : j + 1]), (i, j)
        assert torch.equal(pairwise_dots(x[1:], y[:3]), full[1:, :3])
    torch.testing.assert_close(full, x @ y.T, rtol=0, atol=1e-5 * math.sqrt(k))


def encoded(method, sizes: tuple[int, ...], seed: int) -> tuple[list[dict], list[dict]]:
    """Per-batch text and video reps of consecutive batches (as ``bench.evaluate.encode_split`` builds them)."""
    batches = [feature_batch(batch=n, seed=seed + i, offset=sum(sizes[:i])) for i, n in enumerate(sizes)]
    with torch.no_grad():
        return [method.encode_text(b) for b in batches], [method.encode_video(b) for b in batches]


def test_blockwise_similarity_is_exact_over_257_texts_and_193_videos():
    method = tiny_method("glscl").eval()
    text = cat_reps(encoded(method, (100, 100, 57), seed=20)[0])
    video = cat_reps(encoded(method, (100, 93), seed=30)[1])
    full = no_grad_similarity(method, text, video)
    assert full.shape == (257, 193) and method.max_eval_block >= 64
    assert torch.equal(blockwise_similarity(method, text, video, 64), full)
    assert torch.equal(blockwise_similarity(method, text, video, 37), full)


@pytest.mark.parametrize("score", ["both", "global", "local"])
def test_blockwise_similarity_is_exact_for_small_blocks(score):
    method = tiny_method("glscl", score=score).eval()
    texts, videos = encoded(method, (9, 8), seed=40)
    text, video = cat_reps(texts), cat_reps(videos)
    full = no_grad_similarity(method, text, video)
    for block in (1, 4, 5):
        assert torch.equal(blockwise_similarity(method, text, video, block), full), block


# --- ablation modes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["global", "local"])
def test_ablation_modes_train_every_parameter(score):
    method = tiny_method("glscl", score=score).train()
    text, video = method(feature_batch(batch=6))
    losses = method.training_forward(text, video)
    assert set(losses) == ({"loss", "infonce"} if score == "global" else {"loss", "infonce", "idl", "icl"})
    assert hasattr(method, "decoder") == (score == "local")
    losses["loss"].backward()
    for name, param in trainable(method).items():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("score", ["global", "local"])
def test_ablation_modes_ignore_the_other_path(score):
    method = tiny_method("glscl", score=score).eval()
    batch = feature_batch(batch=5, seed=14)
    changed = dict(batch)
    if score == "global":  # the GIM reads the sentence feature and frames only
        changed["text_tokens"] = batch["text_tokens"] + 1.0
    else:  # the LIM reads tokens and frames only
        changed["text_eot"] = batch["text_eot"] + 1.0
    assert torch.equal(no_grad_similarity(method, *method(changed)), no_grad_similarity(method, *method(batch)))
