"""The patch-token data path: the proxy's patch tokens (only when asked for, their own random stream and cache, the
features and their cache key unchanged, content that lives in a few patches), the frozen adapter, the live-CLIP
backbone's projected tokens from one forward, and TS2-Net's token shift inside the vision tower (2.5, 2.6a T6)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_didemo_fixtures import write_tiny_clip
from tests.test_proxy import TINY, TINY_KEY
from tvr_convbench.bench.trainer import build_data, needs_patches
from tvr_convbench.core.errors import DataError
from tvr_convbench.datasets.base import FeatureBackbone
from tvr_convbench.datasets.clip import ClipBackbone, encode_frame_tokens, load_clip, shift_tokens, slot_plan
from tvr_convbench.datasets.proxy import ProxyDataModule, ProxySettings, World, generate_annotations, generate_patches
from tvr_convbench.datasets.video import normalize_pixels

FROM_PREVIOUS = [1, 8, 15, 22, 29, 36, 43]  # 50 tokens per frame: fold 50 // 7 = 7
FROM_FOLLOWING = [4, 11, 18, 25, 32, 39, 46]


# --- the proxy ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proxy_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProxyDataModule, ProxyDataModule, Path]:
    cache = tmp_path_factory.mktemp("proxy")
    plain = ProxyDataModule(**TINY, cache_dir=str(cache))
    plain.setup()
    with_patches = ProxyDataModule(**TINY, cache_dir=str(cache))
    with_patches.request_patches()
    with_patches.setup()
    return plain, with_patches, cache


def test_proxy_patches_only_when_requested(proxy_pair):
    plain, with_patches, cache = proxy_pair
    assert "video_patches" not in plain.split("train")[[0, 1]]
    batch = with_patches.split("train")[[3, 0, 7]]
    assert batch["video_patches"].shape == (3, 8, 16, 16) and batch["video_patches"].dtype == torch.float32
    names = sorted(p.name for p in cache.glob("proxy-*.pt"))
    settings = ProxySettings(**TINY)
    assert names == [f"proxy-{TINY_KEY}-patches-{settings.patch_key()}.pt", f"proxy-{TINY_KEY}.pt"]


def test_proxy_patches_leave_the_features_and_their_key_alone(proxy_pair):
    plain, with_patches, _ = proxy_pair
    assert ProxySettings(**TINY).key() == ProxySettings(**TINY, patches=49, patch_noise=0.5).key() == TINY_KEY
    assert ProxySettings(**TINY).patch_key() != ProxySettings(**TINY, patches=49).patch_key()
    for split in ("train", "val", "test"):
        a, b = plain.split(split).tensors, with_patches.split(split).tensors
        assert set(b) - set(a) == {"video_patches"}
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_proxy_patches_structure(proxy_pair):
    _, with_patches, _ = proxy_pair
    batch = with_patches.split("val")[list(range(24))]
    patches, mask = batch["video_patches"], batch["video_mask"]
    norms = patches.norm(dim=-1)  # [B, F, P]
    torch.testing.assert_close(norms, torch.full_like(norms, 10.0), atol=2e-2, rtol=0)  # frame_norm, float16 stored
    padded = patches[~mask]  # [padded frames, P, D]
    assert len(padded) and torch.allclose(padded, padded[:1, :1].expand_as(padded))  # the blank frame everywhere
    torch.testing.assert_close(padded[0, 0], batch["video_frames"][~mask][0], atol=1e-2, rtol=0)
    real = patches[mask]  # [real frames, P, D]
    assert (real[:, 1:] - real[:, :1]).abs().amax() > 1.0  # patches of a real frame differ


def test_proxy_content_lives_in_a_few_patches():
    """A grounded word's visual view is much closer to its best patch than to its frame's CLS, and it is there in a
    few patches only: the rest of the frame is background."""
    s = ProxySettings(**{**TINY, "width": 64})
    rng = np.random.default_rng(s.seed)
    world = World.sample(rng, s)  # the generator's world and annotations, drawn as it draws them
    anns = generate_annotations(rng, s.train_videos + s.val_videos + s.test_videos, s.vocab_size)
    features, patches = generate_patches(s)
    frames = F.normalize(features["train"]["video_frames"], dim=-1)  # one frame per segment
    tokens = F.normalize(patches["train"].float(), dim=-1)  # [n, F, P, D]
    patch_cos, frame_cos, near = [], [], []
    for v, ann in enumerate(anns[: s.train_videos]):
        for desc, (first, _) in zip(ann.descriptions, ann.moments, strict=True):
            for w in (w for w in desc if not world.is_function[w]):
                view = torch.from_numpy(world.visual[w]).float()
                cos = tokens[v, first] @ view  # [P]
                patch_cos.append(cos.max())
                frame_cos.append(frames[v, first] @ view)
                near.append((cos > 0.5 * cos.max()).float().mean())
    patch, frame = torch.stack(patch_cos).mean(), torch.stack(frame_cos).mean()
    assert patch > 1.4 * frame and patch > 0.35, (patch, frame)
    assert torch.stack(near).mean() < 0.3  # a word is in a few of the 16 patches


def test_frozen_adapter_maps_patches_like_frames():
    backbone = FeatureBackbone(8, adapter=True)
    with torch.no_grad():
        backbone.frame_adapter.weight.mul_(2.0)
        backbone.text_adapter.weight.mul_(3.0)
    frames, patches = torch.randn(2, 3, 8), torch.randn(2, 3, 5, 8)
    batch = {"text_tokens": torch.randn(2, 4, 8), "text_eot": torch.randn(2, 8), "video_frames": frames}
    out = backbone({**batch, "video_patches": patches})
    torch.testing.assert_close(out["video_patches"], 2 * patches)
    torch.testing.assert_close(out["video_frames"], 2 * frames)
    assert "video_patches" not in backbone(batch)
    assert backbone.enable_token_shift(2) is False  # cached features: no vision tower to shift in


def test_the_harness_loads_patches_only_for_methods_that_need_them(proxy_pair):
    _, _, cache = proxy_pair
    data = {"name": "proxy", **TINY, "cache_dir": str(cache)}
    assert needs_patches("ts2net") and needs_patches("ucofia") and not needs_patches("meanp")
    assert "video_patches" in build_data(data, needs_patches("ucofia")).split("train")[[0]]
    assert "video_patches" not in build_data(data, needs_patches("xclip")).split("train")[[0]]


# --- live CLIP: projected tokens and the token shift ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    model, _ = load_clip(write_tiny_clip(tmp_path_factory.mktemp("clip")))  # 3 blocks, 224 px, patch 32: 50 tokens
    return model


def fresh(model) -> ClipBackbone:
    """A backbone on its own copy of the model (token-shift hooks stay on that copy)."""
    return ClipBackbone(copy.deepcopy(model))


def raw_video_batch(lengths: list[int], frames: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (sum(lengths), 3, 224, 224), generator=g, dtype=torch.uint8)
    mask = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]
    return pixels, mask


def test_backbone_returns_every_projected_token_from_one_forward(tiny_clip):
    pixels, mask = raw_video_batch([3, 1, 6])
    backbone = ClipBackbone(tiny_clip, patches=True)
    with torch.no_grad():
        tokens = backbone.encode_video_tokens(pixels, mask)  # [B, F, 50, D]
        frames = backbone.encode_video(pixels, mask)
        images = normalize_pixels(pixels)
        hidden = tiny_clip.vision_model(pixel_values=images).last_hidden_state
        expected = tiny_clip.visual_projection(tiny_clip.vision_model.post_layernorm(hidden))  # [N, 50, D]
    assert tokens.shape == (3, 6, 50, 16) and backbone.num_patches == 49
    torch.testing.assert_close(tokens[mask], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens[:, :, 0], frames, rtol=1e-5, atol=1e-5)  # the CLS row is the frame feature
    blank = tokens[~mask]  # every padded slot: the blank frame's tokens
    assert torch.allclose(blank, blank[:1].expand_as(blank), atol=1e-6)
    raw = {"text_ids": torch.zeros(3, 5, dtype=torch.long), "text_mask": torch.ones(3, 5, dtype=torch.bool)}
    raw.update(pixels=pixels, video_mask=mask, index=torch.arange(3))
    with torch.no_grad():
        out = backbone(raw)
        plain = ClipBackbone(tiny_clip)(raw)
    torch.testing.assert_close(out["video_patches"], tokens[:, :, 1:])
    assert "video_patches" not in plain


def test_shift_moves_exactly_the_documented_tokens():
    x = torch.randn(4, 50, 3)
    previous, following = torch.tensor([0, 0, 1, 3]), torch.tensor([1, 2, 2, 3])  # frames 0-2 of a video, a lone one
    out = shift_tokens(x, previous, following)
    kept = [i for i in range(50) if i not in FROM_PREVIOUS + FROM_FOLLOWING]
    assert 0 in kept  # the CLS is never shifted
    assert torch.equal(out[:, kept], x[:, kept])
    assert torch.equal(out[:, FROM_PREVIOUS], x[previous][:, FROM_PREVIOUS])  # whole token vectors from t - 1
    assert torch.equal(out[:, FROM_FOLLOWING], x[following][:, FROM_FOLLOWING])  # ... and from t + 1
    assert torch.equal(out[0, FROM_PREVIOUS], x[0, FROM_PREVIOUS])  # the first frame keeps its own (no zero fill)
    assert torch.equal(out[2, FROM_FOLLOWING], x[2, FROM_FOLLOWING])  # the last frame keeps its own
    with pytest.raises(ValueError, match="fewer than 7"):
        shift_tokens(torch.randn(2, 6, 3), torch.tensor([0, 0]), torch.tensor([1, 1]))


def test_shift_changes_the_attention_input_only(tiny_clip):
    """In a shifted block, q = k = v = shift(layer_norm1(h)); the residual stream h is not shifted."""
    backbone = fresh(tiny_clip)
    assert backbone.enable_token_shift(2)
    block = backbone.clip.vision_model.encoder.layers[2]
    h = torch.randn(3, 50, 32)
    neighbours = (torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]))
    with torch.no_grad():
        backbone.shift.neighbours = neighbours
        shifted = block(h, None)
        backbone.shift.neighbours = None
        unshifted = block(h, None)
        queries = shift_tokens(block.layer_norm1(h), *neighbours)  # q = k = v
        attended = block.self_attn(hidden_states=queries, attention_mask=None)[0]
        middle = h + attended  # the residual stream carries h itself
        expected = middle + block.mlp(block.layer_norm2(middle))
    torch.testing.assert_close(shifted, expected, rtol=1e-5, atol=1e-5)
    assert (shifted - unshifted).abs().max() > 1e-3
    blocks = backbone.clip.vision_model.encoder.layers
    assert [len(b.layer_norm1._forward_hooks) for b in blocks] == [0, 1, 1]  # the last two blocks only


def full_grid_reference(model, pixels: torch.Tensor, mask: torch.Tensor, layers: int) -> torch.Tensor:
    """The official layout: every one of the B x F slots encoded (pads as the blank image), shifted along the grid."""
    backbone = fresh(model)
    backbone.enable_token_shift(layers)
    videos, frames = mask.shape
    grid = torch.zeros(videos * frames, 3, 224, 224)
    grid[mask.flatten()] = normalize_pixels(pixels)
    index = torch.arange(videos * frames).view(videos, frames)
    previous = torch.cat([index[:, :1], index[:, :-1]], 1).flatten()
    following = torch.cat([index[:, 1:], index[:, -1:]], 1).flatten()
    backbone.shift.neighbours = (previous, following)
    try:
        return encode_frame_tokens(backbone.clip, grid).view(videos, frames, 50, -1)
    finally:
        backbone.shift.neighbours = None


def test_shifted_video_encoding_equals_the_full_grid(tiny_clip):
    """Padded slots beyond the shift's reach equal the blank frame's encoding, so encoding the real frames, the
    first two padded slots of each video and one blank gives the official all-slots result."""
    pixels, mask = raw_video_batch([3, 1, 6, 2], frames=6, seed=1)
    backbone = ClipBackbone(copy.deepcopy(tiny_clip), patches=True)
    backbone.enable_token_shift(2)
    with torch.no_grad():
        tokens = backbone.encode_video_tokens(pixels, mask)
        reference = full_grid_reference(tiny_clip, pixels, mask, 2)
        unshifted = ClipBackbone(tiny_clip).encode_video_tokens(pixels, mask)
    torch.testing.assert_close(tokens, reference, rtol=1e-5, atol=1e-5)
    assert (tokens - unshifted)[mask].abs().max() > 1e-3
    assert (tokens[0, 3] - tokens[0, 5]).abs().max() > 1e-4  # the first padded slot took its neighbour's tokens
    extra, slots, *_ = slot_plan(mask, 2)
    assert extra == 2 + 2 + 0 + 2 and slots.max() == mask.sum() + extra  # 6 extra images, then the blank


def test_token_shift_requests_are_checked(tiny_clip):
    backbone = fresh(tiny_clip)
    with pytest.raises(DataError, match="field 'token_shift_layers': must be in 1..3"):
        backbone.enable_token_shift(4)
    backbone.enable_token_shift(2)
    assert backbone.enable_token_shift(2)  # idempotent
    assert [len(b.layer_norm1._forward_hooks) for b in backbone.clip.vision_model.encoder.layers] == [0, 1, 1]
    with pytest.raises(DataError, match="installed: 2"):
        backbone.enable_token_shift(1)
