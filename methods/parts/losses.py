"""Contrastive losses shared by every method."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_infonce(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE on a square logit matrix whose diagonal holds the positives.

    ``0.5 * (CE over rows (text->video) + CE over columns (video->text))``; the logit scale is already in
    ``logits``. Duplicate videos in a batch count as negatives, as in every official code base.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_infonce needs a square [B, B] matrix, got {tuple(logits.shape)}")
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
