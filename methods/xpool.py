"""X-Pool: text-conditioned attention pooling of frames (one cross-attention layer per text-video pair).

Paper: Gorti et al., "X-Pool: Cross-Modal Language-Video Attention for Text-Video Retrieval", CVPR 2022,
arXiv 2203.15086. Reference code: github.com/layer6ai-labs/xpool @bc88718199 (``modules/transformer.py``,
``model/clip_transformer.py``, ``modules/metrics.py``). Spec: ``reference/baselines-and-didemo.md`` 2.2.

The pooling module, per (text t, video v) pair, on the raw CLIP sentence feature t and frame features c_j::

    q = W_q LN1(t)            k_j = W_k LN1(c_j)        u_j = W_v LN1(c_j)       (LN1 shared by both modalities)
    alpha = softmax_j(q . k_j / sqrt(D))                 (single head, head dim D)
    a = W_o sum_j alpha_j u_j;   o = LN2(a);   z = LN3(o + Dropout(W_p o))
    score = logit_scale * cos(t, z)

All five linear maps start as the identity with zero bias; ``dropout`` is the official ``transformer_dropout``
(0.3 or 0.4 in the released configs; 0.3 here). No temporal module: 1,316,352 parameters at D = 512.

Frames and padding. X-Pool always feeds a fixed number of frames without a mask (a short video repeats its last
frame). Our inputs are padded to ``max_frames`` with a mask, so the faithful default (``mask_padding=False``)
replaces every padded slot with the video's last real frame and attends over all F slots without a mask; a video
with no real frame keeps its blank-frame slots. ``mask_padding=True`` instead keeps the slots and removes
padded frames from the attention softmax (a video with no real frame then attends over all its slots, so the
score stays finite).

Implementation notes (mathematically identical reorderings; float32 rounding differs by a few ulps):
- q, k and the values are per item, so ``encode_text``/``encode_video`` compute them once; the query carries the
  1/sqrt(D) factor. Only the attention and the LN2 -> W_p -> LN3 chain run per pair, vectorised over the block.
- W_o is folded into the per-video values (``W_o (W_v LN1(c_j) + b_v) + b_o``): since the attention weights sum
  to 1, ``W_o sum_j alpha_j u_j + b_o = sum_j alpha_j (W_o u_j + b_o)``. This moves one D x D matmul from every
  pair to every frame (per pair: 2FD + D^2 MACs instead of 2FD + 2D^2), with the same parameters and gradients.

Deviations from the official code: none in the function computed. The score is cos(t, z) with the logit scale
of the shared contract (the official code has the same, with CLIP's learnable ``logit_scale``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize


def last_real_frame_fill(frames: Tensor, mask: Tensor) -> Tensor:
    """Replace every padded slot by the video's last real frame (X-Pool's fixed-count sampling).

    frames: [B, F, D]; mask: [B, F] bool. A video without any real frame is returned unchanged.
    """
    slots = torch.arange(mask.shape[1], device=mask.device)  # [F]
    last = torch.where(mask, slots, -1).amax(dim=1).clamp_min(0)  # [B]
    last_frame = frames[torch.arange(frames.shape[0], device=frames.device), last]  # [B, D]
    keep = mask | ~mask.any(dim=1, keepdim=True)  # [B, F]
    return torch.where(keep[..., None], frames, last_frame[:, None])  # [B, F, D]


@register_method("xpool")
class XPool(RetrievalMethod):
    """X-Pool's text-conditioned cross-attention pooling over frames (no temporal module).

    Args:
        dropout: dropout on ``W_p o`` before the residual (official ``transformer_dropout``: 0.3 or 0.4).
        mask_padding: exclude padded frames from the attention softmax instead of repeating the last real frame.
    """

    cost_class = CostClass.PAIRWISE
    max_eval_block = 256
    """a 256 x 256 block peaks at three live [A, B, D] float tensors (o, W_p o, their sum / z): ~0.41 GiB of
    intermediates at D = 512, F = 64 (bound checked in tests/test_xpool.py)"""

    def __init__(self, *, dropout: float = 0.3, mask_padding: bool = False, **base) -> None:
        super().__init__(**base)
        width = self.width
        self.mask_padding = mask_padding
        self.layer_norm1 = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.linear_proj = nn.Linear(width, width)
        self.layer_norm2 = nn.LayerNorm(width)
        self.layer_norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self._init_identity()

    @torch.no_grad()
    def _init_identity(self) -> None:
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
            nn.init.eye_(linear.weight)
            nn.init.zeros_(linear.bias)

    def encode_text(self, batch: FeatureBatch) -> Rep:
        sentence = batch["text_eot"]  # [A, D] raw
        query = self.q_proj(self.layer_norm1(sentence)) / math.sqrt(self.width)  # [A, D]
        return {"sentence": normalize(sentence), "query": query}

    def encode_video(self, batch: FeatureBatch) -> Rep:
        frames, mask = batch["video_frames"], batch["video_mask"]  # [B, F, D], [B, F]
        if not self.mask_padding:
            frames = last_real_frame_fill(frames, mask)
        normed = self.layer_norm1(frames)  # [B, F, D]
        values = self.out_proj(self.v_proj(normed))  # [B, F, D]  (W_o folded in, see module docstring)
        attend = mask | ~mask.any(dim=1, keepdim=True)  # [B, F]  an empty video attends over all its slots
        return {"keys": self.k_proj(normed), "values": values, "attend": attend}

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        pooled = self.pool(text["query"], video)  # [A, B, D]
        scores = torch.einsum("ad,abd->ab", text["sentence"], pooled)  # [A, B]
        return self.logit_scale(scores / pooled.norm(dim=-1).clamp_min(1e-12))  # [A, B] cosine x scale

    def pool(self, query: Tensor, video: Rep) -> Tensor:
        """The pooled video ``z`` of every (text, video) pair: query [A, D] -> [A, B, D]."""
        attended = torch.einsum("abf,bfd->abd", self.attention(query, video), video["values"])  # [A, B, D]
        attended = self.layer_norm2(attended)  # o
        return self.layer_norm3(attended + self.dropout(self.linear_proj(attended)))  # [A, B, D]

    def attention(self, query: Tensor, video: Rep) -> Tensor:
        """Softmax weights of every video's frames for every text: query [A, D] -> [A, B, F]."""
        logits = torch.einsum("ad,bfd->abf", query, video["keys"])  # [A, B, F]  (1/sqrt(D) is in the query)
        if self.mask_padding:
            logits = logits.masked_fill(~video["attend"][None], float("-inf"))
        return logits.softmax(dim=-1)
