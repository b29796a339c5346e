"""Frame pooling shared by several methods: masked mean (CLIP4Clip, X-CLIP) and text-conditioned softmax pooling
(GLCCL's GLIM; GLSCL's GIM computes the same cosine without a pooled tensor, and its tests use these as the
reference)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tvr_convbench.methods.base import normalize

MaskMode = Literal["none", "multiply", "exclude"]


def masked_mean_of_normalized(frames: Tensor, mask: Tensor) -> Tensor:
    """CLIP4Clip meanP: ``normalise(sum_j m_j normalise(f_j) / sum_j m_j)``.

    frames: [B, F, D]; mask: [B, F] bool. Returns [B, D]. Frames are normalised before the mean; a video with
    no real frame gets a zero vector (the sum of its mask is clamped to 1), never NaN.
    """
    weights = mask.to(frames.dtype).unsqueeze(-1)  # [B, F, 1]
    pooled = (normalize(frames) * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # [B, D]
    return normalize(pooled)


def conditioned_weights(
    query: Tensor, frames: Tensor, temperature: float, mask: Tensor | None = None, mode: MaskMode = "none"
) -> Tensor:
    """Softmax weights of every video's frames for every query: ``softmax_f(<q_a, v_bf> / temperature)``.

    query: [A, D]; frames: [B, F, D]; mask: [B, F] bool. Returns [A, B, F]. Inputs are used as given
    (GLSCL and GLCCL pool *unnormalised* features). ``mode``:
      - ``"none"``: all F slots take part (GLCCL's faithful default);
      - ``"multiply"``: softmax over all slots, then multiply by the mask, no renormalisation (the official GLSCL
        code);
      - ``"exclude"``: softmax over real frames only (padded logits -> -inf).
    """
    logits = torch.einsum("ad,bfd->abf", query, frames) / temperature  # [A, B, F]
    if mode == "exclude":
        logits = logits.masked_fill(~_require(mask)[None], float("-inf"))
    weights = logits.softmax(dim=-1)
    if mode == "multiply":
        weights = weights * _require(mask)[None].to(weights.dtype)
    return weights


def pool(weights: Tensor, frames: Tensor) -> Tensor:
    """Weighted sum of frames per (query, video): weights [A, B, F], frames [B, F, D] -> [A, B, D]."""
    return torch.einsum("abf,bfd->abd", weights, frames)


def _require(mask: Tensor | None) -> Tensor:
    if mask is None:
        raise ValueError("this mask mode needs a frame mask")
    return mask
