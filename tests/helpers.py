"""Shared test helpers: tiny, seeded feature batches with DiDeMo's structure (padded words and frames)."""

from __future__ import annotations

import torch

from methods import build_method

TINY = {"width": 32, "max_frames": 5, "max_words": 7}


def feature_batch(
    batch: int = 6, words: int = 7, frames: int = 5, width: int = 32, seed: int = 0, offset: int = 0
) -> dict[str, torch.Tensor]:
    """A FeatureBatch with variable text/video lengths; padded slots hold constant (non-zero) features, as CLIP's
    pad-token and blank-frame encodings do."""
    g = torch.Generator().manual_seed(seed)
    text_len = torch.randint(3, words + 1, (batch,), generator=g)  # SOT + words + EOT
    text_mask = torch.arange(words)[None] < text_len[:, None]  # [B, L]
    tokens = 2.0 * torch.randn(batch, words, width, generator=g)
    pad_token = torch.randn(width, generator=g)
    tokens = torch.where(text_mask[..., None], tokens, pad_token)
    eot = tokens[torch.arange(batch), text_len - 1]  # [B, D]
    frame_len = torch.randint(1, frames + 1, (batch,), generator=g)
    video_mask = torch.arange(frames)[None] < frame_len[:, None]  # [B, F]
    blank = torch.randn(width, generator=g)
    video = torch.where(video_mask[..., None], 2.0 * torch.randn(batch, frames, width, generator=g), blank)
    return {
        "text_tokens": tokens,
        "text_mask": text_mask,
        "text_eot": eot,
        "video_frames": video,
        "video_mask": video_mask,
        "index": torch.arange(offset, offset + batch),
    }


def tiny_method(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_method(name, **TINY, **overrides)
