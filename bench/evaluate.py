"""Evaluation: encode a split once, score it blockwise, compute the retrieval metrics.

Every text and every video is encoded exactly once per evaluation (``encode_split``); the similarity matrix is
then filled block by block (``blockwise_similarity``) so memory stays bounded for any split size and any
pairwise method. A method's block results must equal the corresponding slice of the unblocked matrix (the
contract tests check this for every registered method).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from tvr_convbench.core.metrics import retrieval_metrics
from tvr_convbench.methods.base import FeatureBatch, Rep, RetrievalMethod


def cat_reps(reps: list[Rep]) -> Rep:
    """Concatenate per-item representations along dim 0."""
    return {key: torch.cat([r[key] for r in reps]) for key in reps[0]}


def slice_rep(rep: Rep, start: int, stop: int) -> Rep:
    return {key: value[start:stop] for key, value in rep.items()}


def rep_len(rep: Rep) -> int:
    return next(iter(rep.values())).shape[0]


@torch.no_grad()
def blockwise_similarity(method: RetrievalMethod, text: Rep, video: Rep, block: int) -> Tensor:
    """The full ``[Nt, Nv]`` matrix from ``block x block`` calls of ``method.similarity`` (float32, on CPU)."""
    block = max(1, min(block, method.max_eval_block))
    num_texts, num_videos = rep_len(text), rep_len(video)
    out = torch.empty(num_texts, num_videos, dtype=torch.float32)
    for t0 in range(0, num_texts, block):
        text_block = slice_rep(text, t0, t0 + block)
        for v0 in range(0, num_videos, block):
            scores = method.similarity(text_block, slice_rep(video, v0, v0 + block))
            out[t0 : t0 + block, v0 : v0 + block] = scores.float().cpu()
    return out


@torch.no_grad()
def encode_split(
    method: RetrievalMethod, batches: Iterable[FeatureBatch], to_features: Callable[[dict], FeatureBatch]
) -> tuple[Rep, Rep, Tensor]:
    """Encode every item of a split once: returns (text reps, video reps, dataset indices), in loader order."""
    texts, videos, indices = [], [], []
    for batch in batches:
        features = to_features(batch)
        texts.append(method.encode_text(features))
        videos.append(method.encode_video(features))
        indices.append(features["index"].cpu())
    return cat_reps(texts), cat_reps(videos), torch.cat(indices)


def evaluate_reps(method: RetrievalMethod, text: Rep, video: Rep, block: int) -> dict[str, float]:
    """Metrics of one split from its cached reps (row i and column i are the same pair)."""
    return retrieval_metrics(blockwise_similarity(method, text, video, block))
