"""UCoFiA (``ucofia``): the spec's numbers (reference/baselines-and-didemo.md 2.6, 2.6a), the training logit against
the official code's formulas, masking, SK-norm against the official ``sinkhorn_knopp``, the per-pair MACs and the
evaluation-memory bound at DiDeMo shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers import GIB, feature_batch, measured_similarity_peak
from tvr_convbench.bench.evaluate import blockwise_similarity
from tvr_convbench.methods import CostClass, build_method
from tvr_convbench.methods.parts.aosm import AttnSum
from tvr_convbench.methods.parts.pooling import masked_mean_of_normalized
from tvr_convbench.methods.ucofia import sinkhorn_video_bias

SMALL = {"width": 16, "max_frames": 5, "max_words": 7}
DELTA = 0.01


def ucofia(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_method("ucofia", **(SMALL | kwargs))


HEAD = ("global_mat", "global_mat_video", "local_mat", "local_mat_patch")
HEAD += tuple(f"{pool}.weight" for pool in ("sentence_frame", "word", "patch", "patch2", "word2"))
"""the identity-initialised matrices"""


def perturb_matrices(method, scale: float = 0.1, seed: int = 5) -> None:
    """Move every identity-initialised matrix off the identity (so the re-weighting orientation matters)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(method.named_parameters())
    with torch.no_grad():
        for name in HEAD:
            params[name].add_(scale * torch.randn(params[name].shape, generator=g))


# --- spec numbers ---------------------------------------------------------------------------------------------------
def test_parameter_count_at_didemo_shapes():
    """2.6: seqTransf 12.65 M + 4 D^2 + 4 L^2 + 3 F^2 + 2 (4F)^2 + selector ~ 14.1 M at 64 frames / 64 words; the
    official code's 4 matrices the training logit never reads (2 L^2 + 2 F^2) are not built."""
    method = ucofia(width=512, max_frames=64, max_words=64)
    count = sum(p.numel() for p in method.parameters() if p.requires_grad)
    official = 12_648_960 + 4 * 512**2 + 4 * 64**2 + 3 * 64**2 + 2 * 256**2 + 263_424
    assert official == 14_120_704
    assert count == official - 2 * 64**2 - 2 * 64**2 == 14_104_320
    assert sum(p.numel() for p in method.selector.parameters()) == 263_424
    assert method.patch.weight.shape == (256, 256) and method.sentence_frame.weight.shape == (64, 64)


def test_declarations():
    method = ucofia()
    assert method.cost_class is CostClass.PAIRWISE and method.needs_patches
    assert method.token_shift_layers == 2  # U1: UCoFiA's CLIP loader applies TS2-Net's token shift
    assert "token shift" in method.regime_note("frozen") and method.regime_note("full") is None
    assert not method.needs_reference_texts and ucofia(sk_norm=True).needs_reference_texts


def test_double_softmax_pooling():
    x = torch.tensor([0.3, 0.2, -0.1])
    pool = AttnSum(3, second_softmax=True)
    with torch.no_grad():
        pool.weight.copy_(torch.tensor([[0.5, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    beta = torch.softmax((torch.softmax(x / DELTA, dim=0) @ pool.weight) / DELTA, dim=0)
    torch.testing.assert_close(pool(x), (x * beta).sum())
    assert not torch.allclose(AttnSum(3)(x), pool(x))  # the first softmax is re-weighted, then softmaxed again


# --- the training logit against the official formulas --------------------------------------------------------------
def official_logits(method, texts: dict, videos: dict) -> torch.Tensor:
    """``_loose_similarity`` of the official training code, restated: full-tensor formulas, no masks (U4, U5)."""
    scale = 100.0
    t, w = F.normalize(texts["text_eot"], dim=-1), F.normalize(texts["text_tokens"], dim=-1)
    frames, mask = videos["video_frames"], videos["video_mask"]
    v = masked_mean_of_normalized(method.temporal(frames, mask), mask)
    f = F.normalize(frames, dim=-1)
    p = method.selector(frames, videos["video_patches"]).flatten(1, 2)  # [B, 4F, D], unnormalised
    s1 = scale * (t @ method.global_mat) @ (v @ method.global_mat_video).t()
    b = torch.matmul(t, f.permute(0, 2, 1))  # [B, A, F]
    a_f = method.sentence_frame.weight
    s2 = scale * torch.sum(b * torch.softmax(torch.softmax(b / DELTA, -1) @ a_f / DELTA, -1), -1).t()
    m = (w @ method.local_mat) @ (p @ method.local_mat_patch).flatten(0, 1).t()  # [A, L, B K]
    m = m.view(w.shape[0], w.shape[1], p.shape[0], p.shape[1])  # [A, L, B, K]
    word_w, patch_w = method.word.weight, method.patch.weight
    word_level = torch.sum(
        torch.softmax(torch.softmax(m / DELTA, dim=1).permute(0, 2, 3, 1) @ word_w / DELTA, -1).permute(0, 3, 1, 2) * m,
        dim=1,
    )  # [A, B, K]
    patch_level = torch.sum(torch.softmax(torch.softmax(m / DELTA, -1) @ patch_w / DELTA, -1) * m, -1)  # [A, L, B]
    sent2patch = torch.sum(
        torch.softmax(torch.softmax(word_level / DELTA, -1) @ method.patch2.weight / DELTA, -1) * word_level, -1
    )
    video2word = torch.sum(
        torch.softmax(
            torch.softmax(patch_level / DELTA, dim=1).permute(0, 2, 1) @ method.word2.weight / DELTA, -1
        ).permute(0, 2, 1)
        * patch_level,
        dim=1,
    )
    return (s1 + s2 + (sent2patch + video2word) / 2) / 3


def test_similarity_equals_the_official_training_logit():
    method = ucofia().eval()
    perturb_matrices(method)
    texts = feature_batch(batch=5, seed=1, width=16)
    videos = feature_batch(batch=4, seed=2, width=16, patches=6)
    with torch.no_grad():
        sim = method.similarity(method.encode_text(texts), method.encode_video(videos))
        expected = official_logits(method, texts, videos)
    torch.testing.assert_close(sim, expected, rtol=1e-5, atol=1e-4)


def test_only_the_first_two_levels_carry_the_logit_scale():
    method = ucofia().eval()
    batch = feature_batch(batch=4, width=16, patches=6)
    with torch.no_grad():
        reps = method(batch)
        levels = method.score_levels(*reps)
        method.logit_scale.log_scale.fill_(0.0)
        unscaled = method.score_levels(*reps)
    torch.testing.assert_close(levels[:2], 100 * unscaled[:2])
    torch.testing.assert_close(levels[2], unscaled[2])
    torch.testing.assert_close(method.similarity(*reps), unscaled.mean(0))


def masked_pair_logit(method, text: dict, video: dict, a: int, b: int) -> torch.Tensor:
    """One pair with ``mask_padding``: every double-softmax pooling restricted to the real words / frames / tokens."""
    words, frames = text["word_mask"][a], video["frame_mask"][b]
    tokens = frames.repeat_interleave(4)
    s1 = text["sentence_g"][a] @ video["video_g"][b]
    s2 = double_pool(video["frames"][b] @ text["sentence"][a], method.sentence_frame.weight, frames)
    m = text["words_loc"][a] @ video["tokens_loc"][b].t()  # [L, K]
    per_token = torch.stack([double_pool(m[:, k], method.word.weight, words) for k in range(m.shape[1])])
    per_word = torch.stack([double_pool(m[i], method.patch.weight, tokens) for i in range(m.shape[0])])
    s3 = double_pool(per_token, method.patch2.weight, tokens) + double_pool(per_word, method.word2.weight, words)
    return (100 * s1 + 100 * s2 + s3 / 2) / 3


def double_pool(x: torch.Tensor, matrix: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    x, matrix = x[keep], matrix[keep][:, keep]
    return (x * torch.softmax(torch.softmax(x / DELTA, 0) @ matrix / DELTA, 0)).sum()


def test_mask_padding_restricts_every_pooling_to_real_slots():
    method = ucofia(mask_padding=True).eval()
    perturb_matrices(method)
    texts = feature_batch(batch=4, seed=1, width=16)
    videos = feature_batch(batch=3, seed=2, width=16, patches=6)
    with torch.no_grad():
        text, video = method.encode_text(texts), method.encode_video(videos)
        sim = method.similarity(text, video)
        expected = torch.tensor([[masked_pair_logit(method, text, video, a, b) for b in range(3)] for a in range(4)])
    torch.testing.assert_close(sim, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_padding_content_matters_only_without_masks(mask_padding):
    method = ucofia(mask_padding=mask_padding).eval()
    batch = feature_batch(batch=5, width=16, patches=6)
    other = dict(batch)
    other["text_tokens"] = torch.where(batch["text_mask"][..., None], batch["text_tokens"], torch.randn(16))
    with torch.no_grad():
        sim, sim_other = (method.similarity(method.encode_text(b), method.encode_video(b)) for b in (batch, other))
    if mask_padding:
        torch.testing.assert_close(sim_other, sim, rtol=0, atol=1e-4)
    else:
        assert (sim_other - sim).abs().max() > 1e-3


def test_blockwise_equals_unblocked_for_odd_sizes():
    torch.manual_seed(0)
    method = build_method("ucofia", width=8, max_frames=3, max_words=4).eval()
    perturb_matrices(method)
    with torch.no_grad():
        text = method.encode_text(feature_batch(batch=70, seed=1, width=8, words=4, frames=3))
        video = method.encode_video(feature_batch(batch=53, seed=3, width=8, words=4, frames=3, patches=5))
        full = method.similarity(text, video)
    torch.testing.assert_close(blockwise_similarity(method, text, video, block=17), full, rtol=1e-6, atol=1e-4)


# --- SK-norm --------------------------------------------------------------------------------------------------------
def official_sinkhorn_video_bias(log_sim: torch.Tensor, n_iters: int = 4) -> torch.Tensor:
    """eval_t2v/main_ucofia.py::sinkhorn_knopp, restated in float64: the video bias."""
    m = log_sim.max()
    sim = torch.exp(log_sim - m)
    b = 1 / sim.sum(0)
    for _ in range(n_iters):
        a = 1 / (sim @ b)
        b = 1 / (a @ sim)
    return F.log_softmax(b.log() - m, dim=0)


def test_sinkhorn_bias_matches_the_official_function():
    logits = 30 * torch.randn(40, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(sinkhorn_video_bias(logits), official_sinkhorn_video_bias(logits))
    balanced = sinkhorn_video_bias(logits, iterations=200).exp()  # converged: the plan's video marginals are equal
    plan = (logits + balanced.log()[None]).softmax(dim=1).sum(0)
    torch.testing.assert_close(plan / plan.sum(), torch.full((9,), 1 / 9, dtype=torch.float64), rtol=1e-3, atol=1e-4)


def test_sk_norm_adds_the_mean_level_bias_of_the_reference_texts():
    method = ucofia(sk_norm=True).eval()
    perturb_matrices(method)
    with torch.no_grad():
        reference = method.encode_text(feature_batch(batch=11, seed=7, width=16))
        text = method.encode_text(feature_batch(batch=5, seed=1, width=16))
        video = method.encode_video(feature_batch(batch=6, seed=2, width=16, patches=6))
        with pytest.raises(ValueError, match="sk_norm needs calibrate_videos"):
            method.similarity(text, video)
        calibrated = method.calibrate_videos(video, reference)
        levels = method.score_levels(reference, video)  # [3, Nr, Nv]
        bias = torch.stack([official_sinkhorn_video_bias(level.double()) for level in levels]).mean(0).float()
        plain = method.score_levels(text, video).mean(0)
        torch.testing.assert_close(calibrated["sk_bias"], bias, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(method.similarity(text, calibrated), plain + bias[None])
        torch.testing.assert_close(blockwise_similarity(method, text, calibrated, 4), plain + bias[None])


# --- cost at DiDeMo shapes ------------------------------------------------------------------------------------------
def didemo_reps(texts: int, videos: int) -> tuple[dict, dict]:
    """Cached reps at DiDeMo shapes (D = 512, L = 64, F = 64, 4F = 256 selected tokens) drawn directly."""
    g = torch.Generator().manual_seed(0)
    text = {
        "sentence": F.normalize(torch.randn(texts, 512, generator=g), dim=-1),
        "sentence_g": F.normalize(torch.randn(texts, 512, generator=g), dim=-1),
        "words_loc": F.normalize(torch.randn(texts, 64, 512, generator=g), dim=-1),
        "word_mask": torch.ones(texts, 64, dtype=torch.bool),
    }
    video = {
        "video_g": F.normalize(torch.randn(videos, 512, generator=g), dim=-1),
        "frames": F.normalize(torch.randn(videos, 64, 512, generator=g), dim=-1),
        "tokens_loc": torch.randn(videos, 256, 512, generator=g) / 20,
        "frame_mask": torch.ones(videos, 64, dtype=torch.bool),
    }
    return text, video


PAIR_MACS = (
    512  # S1: (t G1) . (v G2), projections cached per item
    + 64 * 512  # S2: t . f_j
    + 64 * 64  # S2: softmax x A_f
    + 64 * 256 * 512  # S3: M = (w W1) (p W2)^T, 8.4 M
    + 256 * 64 * 64  # S3: word softmaxes x W, per token
    + 64 * 256 * 256  # S3: token softmaxes x P, per word
    + 256 * 256  # S3: x P2
    + 64 * 64  # S3: x W2
)


def test_per_pair_macs_at_didemo_shapes():
    """About 14 M MACs per pair at DiDeMo shapes (2.6): every matrix product, counted by the flop counter."""
    assert PAIR_MACS == 13_738_496
    method = ucofia(width=512, max_frames=64, max_words=64, temporal_layers=1).eval()
    text, video = didemo_reps(2, 3)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        method.similarity(text, video)
    assert counter.get_total_flops() / (2 * 2 * 3) == PAIR_MACS


def test_didemo_scale_memory_budget():
    """A 64 x 64 block is scored in tiles of texts, whose [64, 256, texts, 64] temporaries do not grow with the
    block's texts: measured on the first tile (2 texts), plus the block's [A, B, F] S2 temporaries, it stays well under
    1 GiB; 1,004 x 1,004 with the cached reps and the output stays under 4 GiB."""
    method = ucofia(width=512, max_frames=64, max_words=64, temporal_layers=1).eval()
    block = method.max_eval_block
    text, video = didemo_reps(2, block)
    tile_peak = measured_similarity_peak(method, text, video)
    block_bytes = tile_peak + 6 * 4 * block * block * 64
    assert block_bytes < GIB
    per_item = sum(t[:1].nbytes for t in (*text.values(), *video.values()))  # one text + one video
    assert block_bytes + 1004 * per_item + 4 * 1004**2 < 4 * GIB
