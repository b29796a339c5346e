"""TS2-Net (``ts2net``) and the shared token selection (``methods.parts.token_selection``): the spec's numbers
(reference/baselines-and-didemo.md 2.5, 2.6a), the perturbed top-k against brute force, the official masks, a
per-pair oracle, the per-pair MACs and the evaluation-memory bound at DiDeMo shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers import GIB, SCALE, feature_batch, measured_similarity_peak, perturb_
from tvr_convbench.methods import CostClass, build_method
from tvr_convbench.methods.parts.token_selection import PerturbedTopK, TokenSelector, soft_topk
from tvr_convbench.methods.ts2net import expand_frame_mask

SEQTRANSF_BLOCKS_512 = 12_609_536
SCORER_512 = 512 + 512 + 512 * 256 + 512 * 256 + 256  # LN + two D -> D/2 linears + D/2 -> 1, no biases
SMALL = {"width": 16, "max_frames": 5, "max_words": 7}


def ts2net(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_method("ts2net", **(SMALL | kwargs))


def trainable_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- spec numbers ---------------------------------------------------------------------------------------------------
def test_parameter_counts():
    method = ts2net(width=512, max_frames=12, max_words=32)
    assert trainable_count(method.selector) == SCORER_512 == 263_424  # 0.26 M
    assert trainable_count(method.temporal) == SEQTRANSF_BLOCKS_512 + 77 * 512 == 12_648_960  # 12.65 M
    assert trainable_count(method) == 12_648_960 + 263_424  # no text token selector is built
    extended = ts2net(width=512, max_frames=64, max_words=64, extended_positions=True)
    assert extended.temporal.frame_position_embeddings.num_embeddings == 4 * 64
    assert trainable_count(extended) == SEQTRANSF_BLOCKS_512 + 256 * 512 + 263_424


def test_the_official_position_table_caps_the_frames():
    assert ts2net(max_frames=19).temporal.positions == 77  # 4 x 19 = 76 tokens fit
    with pytest.raises(ValueError, match=r"20 frames x 4 tokens exceed the official 77-row .* extended_positions"):
        ts2net(max_frames=20)
    assert ts2net(max_frames=19, extended_positions=True).temporal.positions == 77


def test_declarations():
    method = ts2net()
    assert method.cost_class is CostClass.PAIRWISE and method.needs_patches
    assert method.token_shift_layers == 2 and ts2net(token_shift=False).token_shift_layers == 0
    assert "token shift" in method.regime_note("frozen")
    assert method.regime_note("full") is None and method.regime_note("partial") is None


# --- perturbed top-k ------------------------------------------------------------------------------------------------
SCORES = torch.tensor([0.90, 0.10, 0.50, 0.85, -0.20, 0.88, 0.30, 0.00])


def brute_force_selection(scores: torch.Tensor, noise: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Mean over the draws of the one-hot rows of the ascending top-k indices of ``scores + sigma z``: [k, P]."""
    rows = []
    for z in noise:
        indices = sorted(torch.topk(scores + sigma * z, k).indices.tolist())
        rows.append(F.one_hot(torch.tensor(indices), scores.numel()).float())
    return torch.stack(rows).mean(0)


def test_soft_selection_equals_brute_force_over_the_same_draws():
    noise = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    selection, _ = soft_topk(SCORES[None], noise[None], k=3, sigma=0.05)
    assert torch.equal(selection[0], brute_force_selection(SCORES, noise, 3, 0.05))
    torch.testing.assert_close(selection.sum(-1), torch.ones(1, 3))  # each slot is a distribution over patches
    wide, _ = soft_topk(SCORES[None], noise[None], k=3, sigma=0.5)
    assert torch.equal(wide[0], brute_force_selection(SCORES, noise, 3, 0.5))
    assert (wide > 0).sum() > (selection > 0).sum()  # more noise, softer selection


def test_slots_are_in_patch_index_order():
    selection, _ = soft_topk(SCORES[None], torch.zeros(1, 500, 8), k=3, sigma=0.05)  # no noise: the hard top-3
    assert selection[0].argmax(-1).tolist() == [0, 3, 5]  # patches 0, 3, 5 by index, not by score (0, 5, 3)
    assert torch.equal(selection[0].max(-1).values, torch.ones(3))


def test_backward_is_the_perturbed_optimizer_estimator():
    """T4: grad = sum_j g_j . E[one_hot_j(topk(s + sigma z)) z] / sigma over the same draws."""
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(3, 8, generator=g).requires_grad_()
    noise = torch.randn(3, 500, 8, generator=g)
    upstream = torch.randn(3, 3, 8, generator=g)
    (PerturbedTopK.apply(scores, noise, 3, 0.05) * upstream).sum().backward()
    perturbed = scores.detach()[:, None] + 0.05 * noise  # [R, S, P]
    one_hot = F.one_hot(perturbed.topk(3, dim=-1).indices.sort(-1).values, 8).float()  # [R, S, k, P]
    expected = torch.einsum("rskp,rsp->rkp", one_hot, noise) / 500 / 0.05
    torch.testing.assert_close(scores.grad, (upstream * expected).sum(1), rtol=1e-5, atol=1e-5)


def test_evaluation_noise_is_fixed_per_frame_slot_and_injectable():
    torch.manual_seed(0)
    selector = TokenSelector(16).eval()
    batch = feature_batch(batch=4, frames=5, width=16, patches=6)
    frames, patches = batch["video_frames"], batch["video_patches"]
    with torch.no_grad():
        together = selector(frames, patches)
        alone = torch.cat([selector(frames[i : i + 1], patches[i : i + 1]) for i in range(4)])
        torch.testing.assert_close(alone, together)  # a video's tokens do not depend on its batch
        assert torch.equal(selector(frames, patches), together)
        selector.eval_noise = torch.zeros(5, 500, 6)  # injected: no noise, the hard top-3
        hard = selector(frames, patches)
        scores = selector.scorer(torch.cat([frames[:, :, None], patches], 2))[..., 1:]
    picked = scores.topk(3, dim=-1).indices.sort(-1).values  # [B, F, 3]
    assert torch.equal(hard[:, :, 0], frames)
    torch.testing.assert_close(hard[:, :, 1:], patches.gather(2, picked[..., None].expand(-1, -1, -1, 16)))
    with torch.no_grad():
        training = selector.train()(frames, patches)
    assert not torch.allclose(training, hard)


# --- masks and the score --------------------------------------------------------------------------------------------
def test_tiled_frame_mask_is_the_official_one():
    """2.6a T1, F = 8: a video of 5 real frames counts all 8 as real, one of 3 gets [1, 0, 1, 0, 1, 0, 1, 0]."""
    mask = torch.arange(8)[None] < torch.tensor([[5], [3]])  # [2, 8]
    tiled = expand_frame_mask(mask, 4, "tiled")  # [2, 32]
    assert tiled[:, ::4].int().tolist() == [[1] * 8, [1, 0, 1, 0, 1, 0, 1, 0]]
    assert torch.equal(tiled, mask.unsqueeze(1).repeat(1, 1, 4).view(2, -1))  # the official expansion
    interleaved = expand_frame_mask(mask, 4, "interleaved")
    assert torch.equal(interleaved.view(2, 8, 4), mask[..., None].expand(-1, -1, 4))


def pair_logit(sentence: torch.Tensor, cls_slots: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The spec's score of one pair: s_j = cos(t, c_j); w = softmax over real j of 4 s_j / ||s_real||."""
    s = F.normalize(cls_slots, dim=-1) @ F.normalize(sentence, dim=0)  # [F]
    w = torch.softmax(4 * s[real] / s[real].norm(), dim=0)
    return SCALE * (w * s[real]).sum()


@pytest.mark.parametrize("frame_mask", ["tiled", "interleaved"])
def test_similarity_equals_per_pair_oracle(frame_mask):
    method = perturb_(ts2net(frame_mask=frame_mask), std=0.02).eval()
    texts = feature_batch(batch=5, seed=1, width=16)
    videos = feature_batch(batch=4, seed=2, width=16, patches=6)
    with torch.no_grad():
        sim = method.similarity(method.encode_text(texts), method.encode_video(videos))
        tokens = method.selector(videos["video_frames"], videos["video_patches"])  # [B, F, 4, D]
        token_mask = expand_frame_mask(videos["video_mask"], 4, frame_mask)
        cls_slots = method.temporal(tokens.flatten(1, 2), token_mask)[:, ::4]  # [B, F, D]
        expected = torch.tensor(
            [[pair_logit(t, cls_slots[b], token_mask[b, ::4]) for b in range(4)] for t in texts["text_eot"]]
        )
    torch.testing.assert_close(sim, expected, rtol=1e-5, atol=1e-4)


def test_tiled_mask_changes_scores_of_short_videos_only():
    torch.manual_seed(0)
    methods = {mode: ts2net(frame_mask=mode, max_frames=8, seed=3).eval() for mode in ("tiled", "interleaved")}
    batch = feature_batch(batch=6, frames=8, width=16, patches=6, seed=4)
    batch["video_mask"][0] = True  # one full video
    with torch.no_grad():
        sims = {m: method.similarity(*method(batch)) for m, method in methods.items()}
    torch.testing.assert_close(sims["tiled"][:, 0], sims["interleaved"][:, 0])
    assert (sims["tiled"][:, 1:] - sims["interleaved"][:, 1:]).abs().max() > 1e-3


# --- cost at DiDeMo shapes ------------------------------------------------------------------------------------------
def didemo_reps(texts: int, videos: int) -> tuple[dict, dict]:
    """Cached reps of the DiDeMo shapes (D = 512, F = 64, about 30 real frames) drawn directly: the similarity's cost
    does not depend on how they were encoded."""
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(64)[None] < torch.randint(20, 40, (videos, 1), generator=g)
    frames = F.normalize(torch.randn(videos, 64, 512, generator=g), dim=-1)
    sentence = F.normalize(torch.randn(texts, 512, generator=g), dim=-1)
    return {"sentence": sentence}, {"frames": frames, "frame_mask": mask}


def test_per_pair_macs_at_didemo_shapes():
    """About F D = 32 k MACs per pair (2.5): the sentence x frame GEMM is the only matrix product."""
    method = ts2net(width=512, max_frames=64, max_words=64, extended_positions=True).eval()
    text, video = didemo_reps(6, 5)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        method.similarity(text, video)
    assert counter.get_total_flops() / (2 * 6 * 5) == 64 * 512


def test_didemo_scale_memory_budget():
    """One max_eval_block x 256 block (measured on a 32-text slice: its temporaries scale with the texts) is well
    under 1 GiB; 1,004 x 1,004 with the cached reps and the output is under 4 GiB."""
    method = ts2net(width=512, max_frames=64, max_words=64, extended_positions=True).eval()
    block = method.max_eval_block
    text, video = didemo_reps(32, block)
    measured = measured_similarity_peak(method, text, video)
    block_bytes = measured * block // 32
    assert block_bytes < GIB
    rep_bytes = sum(t.nbytes for t in (*text.values(), *video.values()))
    per_item = rep_bytes // block + 512 * 4  # videos' reps (frames, mask) + one sentence
    assert block_bytes + 1004 * per_item + 4 * 1004**2 < 4 * GIB
