"""TS2-Net: token shift and token selection, with a text-conditioned softmax over frames.

Paper: Liu, Xiong, Luo, Xu, Zhao, Chen, "TS2-Net: Token Shift and Selection Transformer for Text-Video Retrieval",
ECCV'22, arXiv 2207.07852. Reference code: github.com/yuqi657/ts2_net @1d9d4d5 (``modules/modeling.py``:
``get_visual_output``, ``_loose_similarity`` with ``seqTransf``, ``get_frame_selectedcls_similarity``;
``modules/differential_topk.py``; ``modules/until_module.py::PatchShiftModule``). Spec:
``reference/baselines-and-didemo.md`` 2.5, with 2.6a (T1-T7, what the code does) taking precedence.

Per video (cached): the frame CLS features ``video_frames [B, F, D]`` and their patch tokens
``video_patches [B, F, P, D]`` (projected final-layer tokens, P = 49 for ViT-B/32) go through the token selector
(``tvr_convbench.methods.parts.token_selection``: a scorer over all 1 + P tokens, the perturbed top-k with k = 3,
500 draws, sigma 0.05, slots in ascending patch-index order), giving 4 tokens per frame, ``[CLS, 3 selected]``;
seqTransf (4 blocks) runs over the 4F tokens with one position per token; only the CLS-slot outputs c_j are kept.
Per text: the normalised sentence (EOT) feature t. Score (parameter-free, per pair)::

    s_j = t . c_j / |c_j|;   w = softmax_j over real frames of 4 s_j / || s * m ||_2;   logit = scale * sum_j w_j s_j

Loss: symmetric InfoNCE on that logit.

Token shift (zero parameters; 2.5, T6) lives inside CLIP's vision tower, blocks 10-11: ``token_shift_layers = 2``
asks the harness to install it in the last two blocks of a live CLIP (``datasets.clip.ClipBackbone
.enable_token_shift``, where the shift itself is implemented and documented). Cached features cannot contain it: in
the frozen regime (the proxy, a feature store) TS2-Net runs without token shift, which ``regime_note`` says next to
every result. ``token_shift=False`` is the ablation.

Official behaviour kept by default, each deviation of the official code a named switch:
- ``frame_mask="tiled"`` (T1): the official code expands the frame mask to the 4F tokens with ``repeat``, so token
  4j + s gets the mask of frame (4j + s) mod F, and the similarity keeps every 4th column of that (frame j is real
  iff frame 4j mod F is). Invisible when every video fills F (MSR-VTT); on DiDeMo it counts padded frames as real
  and drops real ones. ``"interleaved"`` is the intended masking (every token of frame j takes frame j's mask).
- ``extended_positions=False``: the frame-position table has the official 77 rows (CLIP's text context), one per
  token, so at most 19 frames (4 x 19 = 76); a larger F is refused at construction. ``True`` sizes the table to
  ``max(77, 4 F)`` rows (the official code has a commented-out 600-row table): DiDeMo's 64 frames need it, so a
  DiDeMo config sets it (``overrides: {ts2net: {args: {extended_positions: true}}}``). The first 77 rows copy CLIP's
  text positions as the official table does; the rest keep ``SeqTransf``'s random init.

Deviations from the official code:
- Evaluation noise of the perturbed top-k is one fixed table from ``eval_seed`` (frame slot j reads row j), so
  evaluation is deterministic and a video's tokens do not depend on its batch; officially it is fresh noise on
  every call (stochastic evaluation). Training noise comes from the device's generator (officially the CPU one).
- The per-frame step of ``get_frame_selectedcls_similarity`` (a softmax over the single EOT vector) is the
  identity and is not computed; the weight-0 "global" branch (T2) and the unused text token selector are not
  built (the selector's 0.26 M parameters would receive no gradient).
- ``|| s * m ||_2`` is clamped at 1e-12 (officially a 0 / 0 NaN when every real frame has cosine exactly 0).
- seqTransf LayerNorms use eps 1e-12 (TF style, T5) as in the shared ``SeqTransf``; its blocks copy CLIP text
  blocks 0-3 when a CLIP text tower is available.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.temporal import SeqTransf
from tvr_convbench.methods.parts.token_selection import FROZEN_NOTE, TOKEN_SHIFT_LAYERS, TokenSelector

FrameMask = Literal["tiled", "interleaved"]

CLIP_POSITIONS = 77
"""rows of the official frame-position table (CLIP's text context length)"""
FRAME_SOFTMAX_SCALE = 4.0
"""the hard-coded factor on the normalised cosines before the softmax over frames"""
EPS = 1e-12


def expand_frame_mask(mask: Tensor, tokens: int, mode: FrameMask) -> Tensor:
    """The mask ``[B, F tokens]`` of the per-frame tokens (frame-major) from the frame mask ``[B, F]``.

    ``"tiled"`` is the official ``unsqueeze(1).repeat(1, 1, tokens).view(B, -1)``: token ``tokens j + s`` takes the
    mask of frame ``(tokens j + s) mod F``; ``"interleaved"`` gives every token of frame j frame j's mask.
    """
    if mode == "tiled":
        return mask.repeat(1, tokens)  # [B, tokens F]
    return mask.repeat_interleave(tokens, dim=1)  # [B, tokens F]


def frame_softmax_scores(sentence: Tensor, frames: Tensor, mask: Tensor) -> Tensor:
    """TS2-Net's parameter-free score ``[A, B]`` (no logit scale) of normalised sentences ``[A, D]`` and normalised
    CLS-slot outputs ``[B, F, D]`` with their frame mask ``[B, F]``."""
    sims = torch.einsum("ad,bfd->abf", sentence, frames)  # [A, B, F]
    real = mask[None]  # [1, B, F]
    masked = sims * real
    logits = FRAME_SOFTMAX_SCALE * masked / masked.norm(dim=-1, keepdim=True).clamp_min(EPS)  # [A, B, F]
    weights = logits.masked_fill(~real, -1e18).softmax(dim=-1)  # [A, B, F]
    return (weights * sims).sum(-1)  # [A, B]


@register_method("ts2net")
class TS2Net(RetrievalMethod):
    """TS2-Net (Liu et al.) on frame CLS features and their patch tokens.

    Args:
        frame_mask: ``"tiled"`` (official, T1) or ``"interleaved"`` (the intended masking).
        extended_positions: a ``max(77, 4 F)``-row frame-position table instead of the official 77 rows.
        topk: patches selected per frame (3).
        samples: noise draws of the perturbed top-k (500).
        sigma: noise scale of the perturbed top-k (0.05).
        eval_seed: seed of the fixed evaluation noise.
        token_shift: ask a live-CLIP backbone for the token shift in its last two vision blocks.
        temporal_layers: seqTransf blocks (4).
    """

    cost_class = CostClass.PAIRWISE
    needs_patches = True
    max_eval_block = 256
    """a 256 x 256 block holds a few [A, B, F] float32 temporaries (16.8 MB each at F = 64)"""

    def __init__(
        self,
        *,
        frame_mask: FrameMask = "tiled",
        extended_positions: bool = False,
        topk: int = 3,
        samples: int = 500,
        sigma: float = 0.05,
        eval_seed: int = 0,
        token_shift: bool = True,
        temporal_layers: int = 4,
        **base,
    ) -> None:
        super().__init__(**base)
        if frame_mask not in ("tiled", "interleaved"):
            raise ValueError(f"TS2Net: frame_mask must be 'tiled' or 'interleaved', got {frame_mask!r}")
        self.frame_mask = frame_mask
        self.tokens_per_frame = 1 + topk
        self.token_shift_layers = TOKEN_SHIFT_LAYERS if token_shift else 0
        self.selector = TokenSelector(self.width, topk, samples, sigma, eval_seed)
        self.temporal = SeqTransf(self.width, layers=temporal_layers, positions=self.position_rows(extended_positions))

    def position_rows(self, extended: bool) -> int:
        """Rows of the frame-position table (one per token: ``(1 + k) F`` are used)."""
        needed = self.tokens_per_frame * self.max_frames
        if extended:
            return max(CLIP_POSITIONS, needed)
        if needed > CLIP_POSITIONS:
            raise ValueError(
                f"ts2net: {self.max_frames} frames x {self.tokens_per_frame} tokens exceed the official "
                f"{CLIP_POSITIONS}-row frame-position table (at most {CLIP_POSITIONS // self.tokens_per_frame} "
                "frames); set extended_positions: true (DiDeMo's 64 frames need it)"
            )
        return CLIP_POSITIONS

    @classmethod
    def regime_note(cls, regime: str) -> str | None:
        """Frozen features cannot carry the token shift (it runs inside the vision tower)."""
        return FROZEN_NOTE if regime == "frozen" else None

    def encode_text(self, batch: FeatureBatch) -> Rep:
        return {"sentence": normalize(batch["text_eot"])}  # [A, D]

    def encode_video(self, batch: FeatureBatch) -> Rep:
        mask = batch["video_mask"]  # [B, F]
        tokens = self.selector(batch["video_frames"], batch["video_patches"])  # [B, F, 1 + k, D]
        token_mask = expand_frame_mask(mask, self.tokens_per_frame, self.frame_mask)  # [B, (1 + k) F]
        context = self.temporal(tokens.flatten(1, 2), token_mask)  # [B, (1 + k) F, D]
        step = self.tokens_per_frame
        return {"frames": normalize(context[:, ::step]), "frame_mask": token_mask[:, ::step]}  # CLS slots [B, F]

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        return self.logit_scale(frame_softmax_scores(text["sentence"], video["frames"], video["frame_mask"]))
