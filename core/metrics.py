"""Retrieval metrics from a square similarity matrix (DiDeMo paragraph-to-video: pair i is the positive of row i).

Ranks are 0-based and pessimistic: a negative tied with the positive is ranked ahead of it, so a tie never
flatters a model (a constant matrix gives every query the worst rank). NaN scores count against the model: a NaN
negative ranks ahead of the positive, and a NaN positive gets the worst rank.

``R@K = 100 * mean(rank < K)``, ``MdR = median(rank) + 1``, ``MnR = mean(rank) + 1`` (CLIP4Clip's definitions),
for text-to-video on ``sim`` and video-to-text on ``sim.T``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tvr_convbench.core.schema import METRIC_NAMES, RECALL_KS

__all__ = ["IN_BATCH_METRICS", "METRIC_NAMES", "in_batch_recall", "positive_ranks", "rank_metrics", "retrieval_metrics"]


def positive_ranks(sim: Tensor) -> Tensor:
    """0-based rank of each row's diagonal entry among the row, ties and NaNs counted against it. [N, N] -> [N]."""
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"retrieval metrics need a square similarity matrix, got {tuple(sim.shape)}")
    positive = sim.diagonal()[:, None]  # [N, 1]
    ahead = (sim >= positive) | sim.isnan()  # [N, N], includes the positive itself when it is not NaN
    ranks = ahead.sum(dim=1) - 1
    return torch.where(positive[:, 0].isnan(), torch.full_like(ranks, sim.shape[1] - 1), ranks)


def rank_metrics(ranks: Tensor, prefix: str) -> dict[str, float]:
    r = ranks.cpu().numpy().astype(np.float64)
    out = {f"{prefix}/R@{k}": float(100.0 * np.mean(r < k)) for k in RECALL_KS}
    out[f"{prefix}/MdR"] = float(np.median(r) + 1.0)
    out[f"{prefix}/MnR"] = float(np.mean(r) + 1.0)
    return out


IN_BATCH_METRICS = ("t2v/R@1", "t2v/R@5", "v2t/R@1", "v2t/R@5")
"""the in-batch training recall logged at every optimizer step"""


def in_batch_recall(sim: Tensor) -> dict[str, float]:
    """R@1 and R@5 in both directions of a square in-batch similarity (pair i positive), ranks as in evaluation."""
    matrix = sim.detach().float().cpu().numpy()  # [B, B]: a few numpy ops beat a dozen tiny torch ops per step
    out = {}
    for prefix, rows in (("t2v", matrix), ("v2t", matrix.T)):
        ranks = _numpy_positive_ranks(rows)  # [B]
        for k in (1, 5):
            out[f"{prefix}/R@{k}"] = float(100.0 * np.mean(ranks < k))  # float64, as ``rank_metrics``
    return out


def _numpy_positive_ranks(sim: np.ndarray) -> np.ndarray:
    """``positive_ranks`` of a small square matrix in numpy (the same ranks, ties and NaNs included)."""
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"retrieval metrics need a square similarity matrix, got {tuple(sim.shape)}")
    positive = np.diagonal(sim)[:, None]  # [N, 1]
    ranks = ((sim >= positive) | np.isnan(sim)).sum(axis=1) - 1  # [N]
    return np.where(np.isnan(positive[:, 0]), sim.shape[1] - 1, ranks)


def retrieval_metrics(sim: Tensor) -> dict[str, float]:
    """All ten metrics (``t2v/R@1`` ... ``v2t/MnR``) of a square text x video matrix."""
    sim = sim.detach().float()
    return {**rank_metrics(positive_ranks(sim), "t2v"), **rank_metrics(positive_ranks(sim.t()), "v2t")}
