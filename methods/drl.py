"""DRL: weighted token-wise interaction (WTI) with channel decorrelation regularisation (CDCR).

Paper: Wang et al., "Disentangled Representation Learning for Text-Video Retrieval", arXiv 2203.07111.
Reference code: github.com/foolwood/DRL @475f96ce61 (HEAD; ``tvr/models/modeling.py`` read at 696c75c3,
``wti_interaction`` with ``interaction="wti"``, ``wti_arch=2``, ``cdcr=3``; ``scripts/msrvtt.sh`` for the
hyper-parameters). Spec: ``reference/baselines-and-didemo.md`` 2.4.

Representations (per item, cached): all text token features with the text mask; the seqTransf outputs of the
frames (``tvr_convbench.methods.parts.temporal``) with the frame mask. Token weights come from two MLPs ``D -> D -> 1``
(ReLU), g_t on the unnormalised token features and g_v on the unnormalised seqTransf outputs, softmaxed over the
valid positions. On L2-normalised features, with ``s_ij = t_i . f_j`` and invalid pairs set to 0 (not -inf)::

    S_t2v = sum_i w^t_i max_j s_ij      S_v2t = sum_j w^v_j max_i s_ij      score = scale * (S_t2v + S_v2t) / 2

Loss: symmetric InfoNCE + ``cdcr_weight`` x CDCR, computed on the diagonal (positive) pairs of the in-batch
matrix as the code does (mode 3): every valid text token of pair i is matched to its best frame of video i (and
every valid frame to its best token); the valid tokens of the whole batch and their matches are z-scored per
channel over those rows (unbiased std, as ``Tensor.std``); the cross-correlation ``c`` of the two is weighted by
the token weights and divided by the batch size, for each direction, and the two are averaged;
``CDCR = alpha1 sum_k (c_kk - 1)^2 + alpha2 sum_{k != l} c_kl^2`` (MSR-VTT recipe: lambda 0.001, alpha1 0.14,
alpha2 0). ``uniform_weights=True`` is the paper's TI ablation: uniform weights over valid tokens, no MLPs.

Implementation notes (the same function as the code, computed differently):
- Invalid pairs are zeroed by zeroing the normalised features of padded tokens/frames before the max-sim GEMM
  (``0 * x`` instead of masking the ``[A, B, L, F]`` tensor), which halves the peak memory of a block.
- The similarities are laid out frame-major, ``[B, F, A, L]`` (one GEMM of frames by tokens), and evaluation
  scores the texts in tiles of ``TEXT_TILE``: the two maxima then reduce a long inner axis or a contiguous one of
  a cache-sized tensor (the same function; only the GEMM's summation order may differ).
- CDCR recomputes the ``[B, L, F]`` token similarities of the B diagonal pairs instead of keeping the arg-max of
  the full ``[B, B, L, F]`` tensor; only the C_kk terms are formed when ``alpha2 = 0`` (the code forms a
  ``[N, D, D]`` tensor, ~1 GB at N = 1,000 valid tokens). The diagonal similarities come from a different GEMM
  shape than the full matrix, so an arg-max between two frames within float32 rounding of each other may pick
  the other one.

Deviations from the official code:
- An item without any valid position (a video whose frames all failed to decode) gets all-zero token weights
  instead of NaN (the code's softmax over an all ``-inf`` row).
- The TI ablation with CDCR uses the uniform weights in the CDCR weighting (the code only defines CDCR mode 3
  for WTI, whose weights it needs).
- Weight-MLP initialisation follows the code (normal std 0.02, zero bias); seqTransf uses the shared module's
  init (CLIP text blocks 0-3 via ``init_from_clip_text`` when a CLIP text tower is available).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.losses import symmetric_infonce
from tvr_convbench.methods.parts.temporal import SeqTransf


def weight_mlp(width: int) -> nn.Sequential:
    """DRL's ``wti_arch=2`` token-weight head: Linear(D, D) -> ReLU -> Linear(D, 1), init N(0, 0.02), zero bias."""
    mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
    for layer in (mlp[0], mlp[2]):
        nn.init.normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    return mlp


def masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the valid positions of each row (logits, mask: [N, T]); a row without one gets zeros."""
    has_any = mask.any(dim=-1, keepdim=True)  # [N, 1]
    weights = logits.masked_fill(~(mask | ~has_any), float("-inf")).softmax(dim=-1)  # [N, T]
    return weights * has_any


def uniform_over_valid(mask: Tensor) -> Tensor:
    """The TI ablation's weights: 1 / (number of valid positions) on valid positions, 0 elsewhere."""
    valid = mask.float()  # [N, T]
    return valid / valid.sum(dim=-1, keepdim=True).clamp_min(1.0)


def max_over(x: Tensor, dim: int) -> Tensor:
    """Max along ``dim``. With autograd on, ``max(dim)`` (as the code): its backward keeps only the arg-max indices,
    so the ``[B, F, A, L]`` similarity tensor is freed after the forward; without it, the ~4x faster ``amax``."""
    return x.max(dim=dim).values if torch.is_grad_enabled() else x.amax(dim=dim)


def zscore(x: Tensor) -> Tensor:
    """Standardise every channel over the rows: x [N, D] -> (x - mean) / std (unbiased, as the code)."""
    return (x - x.mean(dim=0)) / x.std(dim=0)


TEXT_TILE = 32
"""texts per evaluation tile (with the frame-major layout the tile's similarity tensor stays cache-sized)"""


@register_method("drl")
class DRL(RetrievalMethod):
    """DRL's weighted token-wise interaction over text tokens and seqTransf frames, with CDCR in the loss.

    Args:
        uniform_weights: the TI ablation (uniform weights over valid tokens; the weight MLPs are not built).
        cdcr_weight: lambda, the CDCR weight in the loss (0 disables CDCR).
        cdcr_alpha1: weight of the diagonal term sum_k (c_kk - 1)^2.
        cdcr_alpha2: weight of the off-diagonal term sum_{k != l} c_kl^2.
        temporal_layers: seqTransf blocks (4, as released).
    """

    cost_class = CostClass.PAIRWISE
    max_eval_block = 128
    """a 128 x 128 block peaks at ~0.29 GiB of intermediates at D = 512, L = F = 64 with autograd (the [A L, B F]
    max-sim GEMM output is 268 MB of it; bound checked in tests/test_drl.py); without, texts are scored in tiles of
    ``TEXT_TILE``"""

    def __init__(
        self,
        *,
        uniform_weights: bool = False,
        cdcr_weight: float = 0.001,
        cdcr_alpha1: float = 0.14,
        cdcr_alpha2: float = 0.0,
        temporal_layers: int = 4,
        **base,
    ) -> None:
        super().__init__(**base)
        self.uniform_weights = uniform_weights
        self.cdcr_weight = cdcr_weight
        self.cdcr_alpha1 = cdcr_alpha1
        self.cdcr_alpha2 = cdcr_alpha2
        self.temporal = SeqTransf(self.width, layers=temporal_layers)
        self.text_weight_fc = None if uniform_weights else weight_mlp(self.width)
        self.video_weight_fc = None if uniform_weights else weight_mlp(self.width)

    # --- per-item representations ---------------------------------------------------------------------------
    def encode_text(self, batch: FeatureBatch) -> Rep:
        tokens, mask = batch["text_tokens"], batch["text_mask"]  # [A, L, D], [A, L]
        return {"tokens": normalize(tokens), "mask": mask, "weights": self.token_weights(tokens, mask, "text")}

    def encode_video(self, batch: FeatureBatch) -> Rep:
        mask = batch["video_mask"]  # [B, F]
        frames = self.temporal(batch["video_frames"], mask)  # [B, F, D]
        return {"frames": normalize(frames), "mask": mask, "weights": self.token_weights(frames, mask, "video")}

    def token_weights(self, features: Tensor, mask: Tensor, side: Literal["text", "video"]) -> Tensor:
        """WTI weights over valid positions: features [N, T, D] (unnormalised), mask [N, T] -> [N, T]."""
        if self.uniform_weights:
            return uniform_over_valid(mask)
        mlp = self.text_weight_fc if side == "text" else self.video_weight_fc
        return masked_softmax(mlp(features).squeeze(-1), mask)  # [N, T]

    # --- pairwise score -------------------------------------------------------------------------------------
    def similarity(self, text: Rep, video: Rep) -> Tensor:
        frames = video["frames"] * video["mask"][..., None]  # [B, F, D]  padded frames -> 0
        frame_rows = frames.reshape(-1, frames.shape[-1])  # [B F, D]
        rows = text["tokens"].shape[0] if torch.is_grad_enabled() else TEXT_TILE
        tiles = [dict(zip(text, part, strict=True)) for part in zip(*(v.split(rows) for v in text.values()))]
        return self.logit_scale(torch.cat([self.tile_scores(tile, video, frame_rows) for tile in tiles]))  # [A, B]

    def tile_scores(self, text: Rep, video: Rep, frame_rows: Tensor) -> Tensor:
        """Unscaled scores ``[A, B]`` of a tile of texts; ``frame_rows``: the zero-padded frames ``[B F, D]``.

        The similarities come from one GEMM as ``[B, F, A, L]`` (frame-major: both maxima reduce a long inner axis
        or a contiguous one)."""
        tokens = text["tokens"] * text["mask"][..., None]  # [A, L, D]  padded tokens -> 0
        (num_texts, num_words, width), (num_videos, num_frames) = tokens.shape, video["frames"].shape[:2]
        sims = frame_rows @ tokens.reshape(-1, width).t()  # [B F, A L]
        sims = sims.view(num_videos, num_frames, num_texts, num_words)  # [B, F, A, L]
        t2v = torch.einsum("bal,al->ab", max_over(sims, 1), text["weights"])  # [A, B]
        v2t = torch.einsum("bfa,bf->ab", max_over(sims, 3), video["weights"])  # [A, B]
        return (t2v + v2t) / 2  # [A, B]

    # --- loss -----------------------------------------------------------------------------------------------
    def loss(self, sim: Tensor, text: Rep, video: Rep) -> dict[str, Tensor]:
        infonce = symmetric_infonce(sim)
        if self.cdcr_weight == 0:
            return {"loss": infonce, "infonce": infonce}
        cdcr = self.cdcr(text, video)
        return {"loss": infonce + self.cdcr_weight * cdcr, "infonce": infonce, "cdcr": cdcr}

    def cdcr(self, text: Rep, video: Rep) -> Tensor:
        """Channel decorrelation (DRL ``cdcr=3``) on the B diagonal pairs of a square batch."""
        tokens, frames = text["tokens"], video["frames"]  # [B, L, D], [B, F, D]
        t_mask, v_mask = text["mask"], video["mask"]  # [B, L], [B, F]
        with torch.no_grad():
            sims = torch.einsum("bld,bfd->blf", tokens * t_mask[..., None], frames * v_mask[..., None])  # [B, L, F]
            best_frame, best_token = sims.argmax(dim=2), sims.argmax(dim=1)  # [B, L], [B, F]
        matched_frames = frames.gather(1, best_frame[..., None].expand(-1, -1, frames.shape[-1]))  # [B, L, D]
        matched_tokens = tokens.gather(1, best_token[..., None].expand(-1, -1, tokens.shape[-1]))  # [B, F, D]
        batch_size = tokens.shape[0]
        c_t2v = self.correlation(tokens[t_mask], matched_frames[t_mask], text["weights"][t_mask], batch_size)
        c_v2t = self.correlation(frames[v_mask], matched_tokens[v_mask], video["weights"][v_mask], batch_size)
        corr = (c_t2v + c_v2t) / 2  # [D, D] or [D]
        return self.decorrelation_penalty(corr)

    def correlation(self, anchors: Tensor, matches: Tensor, weights: Tensor, batch_size: int) -> Tensor:
        """Weighted cross-correlation over the valid rows: anchors, matches [N, D], weights [N] -> [D, D] (or [D]).

        Each item's weights sum to 1, so dividing by the batch size makes ``c`` a weighted mean over items.
        """
        z_a, z_b = zscore(anchors) * weights[:, None], zscore(matches)  # [N, D]
        if self.cdcr_alpha2 == 0:
            return (z_a * z_b).sum(dim=0) / batch_size  # [D] the diagonal c_kk only
        return z_a.t() @ z_b / batch_size  # [D, D]

    def decorrelation_penalty(self, corr: Tensor) -> Tensor:
        """alpha1 sum_k (c_kk - 1)^2 + alpha2 sum_{k != l} c_kl^2, from the diagonal [D] or the full [D, D]."""
        diag = corr if corr.ndim == 1 else corr.diagonal()
        penalty = self.cdcr_alpha1 * (diag - 1).pow(2).sum()
        if corr.ndim == 2:
            penalty = penalty + self.cdcr_alpha2 * (corr.pow(2).sum() - diag.pow(2).sum())
        return penalty
