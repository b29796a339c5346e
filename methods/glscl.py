"""GLSCL: a parameter-free global interaction module plus a shared set of learnable concept queries.

Paper: Zhang, Zeng, Gao, Song, Duan, Lyu, Shen, "Text-Video Retrieval with Global-Local Semantic Consistent
Learning", arXiv 2405.12710 (IEEE TIP 2025).
Reference code: github.com/zchoi/GLSCL @06979f8 (model code identical to the first commit e174368):
``tvr/models/modeling.py`` (class ``DiCoSA``: ``similarity``, ``_score``, ``margin_ranking_loss``).
Spec: ``reference/glscl.md`` sections 1-4 and 8 (DiDeMo script values: tau 3, Nq 8, 3 decoder layers, lambda 0.5,
alpha 1e-4, beta 0.005).

Score of text i and video j, with t_i the raw sentence (EOT) feature and V_j the seqTransf frame features::

    S_g = cos(t_i, sum_f w_ijf v_jf),   w_ij = softmax_f(<t_i, v_jf> / tau) over real frames   (GIM, no parameters)
    S_l = (1 / Nq) sum_k cos(z^t_ik, z^v_jk),   z = Dec(queries, memory)                       (shared LIM)
    S   = logit_scale * (S_g + 0.5 S_l)

The LIM is one ``nn.TransformerDecoder`` (post-norm, ReLU, dropout 0.1, PyTorch default init; the layers are
deep copies of one layer, so they start identical, as in the official code) whose Nq queries (uniform [0, 1)) read
all F seqTransf frame features (video) or all L token features (text): same queries, same weights for both
modalities. Concepts are L2-normalised rows without a projection, computed once per item in ``encode_*``, so the
local score of a block is one product of flattened concepts; only the GIM is pairwise.

Losses (on the gathered global batch): ``infonce`` (symmetric InfoNCE on S) + ``idl`` + ``icl``.
**The official code swaps the regularisers' names**: its ``Inter_Diversity`` is the paper's IDL (Intra-Diversity,
within the video concepts) and its ``Intra_Consistency`` is the paper's ICL (Inter-Consistency, video vs text).
We use the paper's names.

- IDL = alpha * 2 hinges over the batch-mean Gram G of the video concepts, margin 0.1, each diagonal entry being
  the positive of its row (and of its column): ``sum_{k != l} [max(0, m + G_kl - G_kk) + max(0, m + G_kl - G_ll)]
  / (Nq (Nq - 1))``.
- ICL = MSE(mean_b Z^v_b, mean_b Z^t_b) + beta * sum_k (M_kk - 0.75)^2 with M = (1/Nq) sum_b Z^v_b Z^t_b^T. The
  official code divides the batch sum by Nq, not by B, so the r-term depends on the global batch size (zero at a
  mean paired cosine of 0.75 Nq / B = 0.1875 for DiDeMo's B = 32).

Official quirks kept by default, each with a switch (``reference/glscl.md`` 1.3, 2.2, 2.3, 4):
- ``mask_padding=False``: the decoder's cross-attention also reads padded frames and padded tokens (no key-padding
  mask); ``True`` passes the masks (a memory with no real slot then stays unmasked).
- ``icl_normalise=False``: the r-term divides the batch sum by Nq; ``True`` divides by B (a per-pair mean).
- ``text_idl=False``: the official code computes IDL for the text concepts but never adds it; ``True`` adds
  ``alpha * IDL(text)``.
Ablation switch ``score``: ``"global"`` keeps the GIM alone (no decoder, no queries, no IDL/ICL); ``"local"`` keeps
the LIM alone (S = logit_scale * S_l, IDL and ICL kept). In ``"local"`` the 0.5 is dropped: it only balances the
two parts of a sum, and keeping it would halve the logit scale, confounding the ablation with a temperature change.

Deviations from the official code (at default settings none changes a score that the official code computes as a
finite number):
- Nothing unused is built: no ``weight_fc`` (its output is discarded officially), no ``noun_queries``, no second
  decoder, no prototype ``decoder_layer_*`` modules, no multi-positive targets, no training-set encoding at eval.
- The GIM softmax runs over the real frames only (padded logits -> -inf), where the official code takes it over
  all F slots and then multiplies by the mask. The two weight vectors differ by a positive factor per pair, which
  the cosine ignores, so the scores agree wherever the official one is finite (to float32 rounding). At large
  feature norms (e.g. ~70) a dominant padded slot can drive every real frame's fp32 weight, or the pooled norm, to
  zero: the official score is then NaN (or inf), ours the true cosine. A video without any real frame takes all
  its slots (officially NaN). Norms are clamped at 1e-12 (officially none), a guard that acts only on a zero
  vector (e.g. all-zero frames).
- The GIM's norm of the pooled video is taken as ``sqrt(w^T G_j w)`` with the per-video frame Gram
  ``G_j = V_j V_j^T`` (cached in the video rep), and ``<t_i, pooled>`` as ``sum_f w_ijf <t_i, v_jf>``: the same
  cosine without an [A, B, D] pooled tensor. ``tvr_convbench.methods.parts.pooling`` is therefore not called (its
  einsums are not block-exact, see the next item); the tests check value and gradient against its
  ``conditioned_weights`` + ``pool``.
- Evaluation is block-exact: without autograd, every GEMM of the pairwise and local scores runs in tiles of one
  fixed shape (``GEMM_TILE`` rows of each operand, zero-padded; ``pairwise_dots``, ``quadratic_forms``), and a
  fixed-shape GEMM computes every entry the same way wherever its row and column sit in the tile, so a block
  equals the slice of the full matrix bit for bit (tests/test_glscl.py and tests/test_perf.py check it for many
  block sizes and depths). Training uses plain GEMMs on the same formula (the same cosines to ~1e-6).
- The official ``.squeeze()`` on the GIM logits (crash for a one-item block) is not reproduced. The logit scale is
  the base class's (fixed 100 by default; officially CLIP's learnable one at lr 1e-7, clamped at 100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.losses import symmetric_infonce
from tvr_convbench.methods.parts.temporal import SeqTransf

ScoreMode = Literal["both", "global", "local"]

GEMM_TILE = 64
"""rows of each operand in every evaluation GEMM (``pairwise_dots``, ``quadratic_forms``); block sizes pad up to it"""

EPS = 1e-12


def pairwise_dots(x: Tensor, y: Tensor) -> Tensor:
    """``x @ y.T`` for x [M, K] and y [N, K], returning [M, N].

    When autograd records the call (training) this is one GEMM. Otherwise (evaluation) both operands are zero-padded
    to multiples of ``GEMM_TILE`` rows and multiplied in ``GEMM_TILE x GEMM_TILE`` output tiles of one fixed shape
    (one batched GEMM per row tile of x), so each entry's summation order depends on K alone and any block of the
    result is bit-identical to the same slice of the full result. An unpadded GEMM does not give that: BLAS picks its
    kernel, and so the summation order, by matrix shape (e.g. a GEMV for a one-row block).
    """
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return x @ y.t()  # [M, N]
    y_tiles = _pad_rows(y, GEMM_TILE).view(-1, GEMM_TILE, y.shape[1]).mT  # [n, K, T]
    rows = [torch.bmm(x_tile.expand(y_tiles.shape[0], -1, -1), y_tiles) for x_tile in _row_tiles(x)]  # [n, T, T]
    out = torch.cat([tile.transpose(0, 1).reshape(GEMM_TILE, -1) for tile in rows])  # [M', N']
    return out[: x.shape[0], : y.shape[0]]


def quadratic_forms(weights: Tensor, gram: Tensor) -> Tensor:
    """``w_ab^T G_b w_ab`` for weights [A, B, F] and per-video matrices [B, F, F], returning [A, B].

    Without autograd the texts are padded to ``GEMM_TILE`` rows and each video's product is a batched GEMM of one
    fixed shape ([T, F] x [F, F]), block-exact like ``pairwise_dots``; the last reduction sums a contiguous length-F
    row (an order fixed by F alone).
    """
    if torch.is_grad_enabled() and (weights.requires_grad or gram.requires_grad):
        return (torch.bmm(weights.transpose(0, 1), gram).transpose(0, 1) * weights).sum(-1)  # [A, B]
    per_video = weights.transpose(0, 1)  # [B, A, F]
    tiles = [torch.bmm(tile, gram) * tile for tile in _row_tiles(per_video, dim=1)]  # [B, T, F] each
    return torch.cat(tiles, dim=1).sum(-1)[:, : weights.shape[0]].t()  # [A, B]


def _pad_rows(x: Tensor, multiple: int, dim: int = 0) -> Tensor:
    """``x`` with zero rows appended along ``dim`` up to a multiple of ``multiple``."""
    missing = -x.shape[dim] % multiple
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _row_tiles(x: Tensor, dim: int = 0) -> list[Tensor]:
    """``x`` zero-padded along ``dim`` and split into contiguous tiles of ``GEMM_TILE`` rows."""
    return [tile.contiguous() for tile in _pad_rows(x, GEMM_TILE, dim).split(GEMM_TILE, dim=dim)]


def global_scores(sentence: Tensor, frames: Tensor, gram: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """GIM cosine ``S_g`` [A, B] of raw sentences [A, D] and videos (frames [B, F, D], Gram [B, F, F], mask [B, F]).

    Frame weights are a softmax of ``<t, v_f> / temperature`` over the real frames only (padded logits -> -inf; a
    video without a real frame takes all its slots). The official softmax over all F slots times the mask differs
    from it by a positive factor per pair, which the cosine ignores, so the two agree wherever the official one is
    finite. The official one fails (NaN or inf) when a padded slot's logit dominates so far that the real frames'
    fp32 weights, or the pooled norm, underflow to zero.
    """
    num_texts, (num_videos, num_frames) = sentence.shape[0], frames.shape[:2]
    dots = pairwise_dots(sentence, frames.flatten(0, 1)).view(num_texts, num_videos, num_frames)  # [A, B, F]
    attend = mask | ~mask.any(dim=-1, keepdim=True)  # [B, F]
    weights = (dots / temperature).masked_fill(~attend[None], float("-inf")).softmax(dim=-1)  # [A, B, F]
    inner = (weights * dots).sum(-1)  # [A, B]  <t_a, pooled_ab>
    pooled_sq = quadratic_forms(weights, gram)  # [A, B]  w^T G_b w
    sentence_norm = sentence.norm(dim=-1).clamp_min(EPS)  # [A]
    return inner / (sentence_norm[:, None] * pooled_sq.clamp_min(EPS * EPS).sqrt())  # [A, B]


def local_scores(text_concepts: Tensor, video_concepts: Tensor) -> Tensor:
    """LIM score ``S_l`` [A, B]: mean over queries of cos(text concept k, video concept k), normalised [*, Nq, D]."""
    num_queries = text_concepts.shape[1]
    return pairwise_dots(text_concepts.flatten(1), video_concepts.flatten(1)) / num_queries  # [A, B]


def intra_diversity(concepts: Tensor, margin: float = 0.1) -> Tensor:
    """The paper's IDL before its weight: both hinge directions over the batch-mean Gram of concepts [B, Nq, D]."""
    batch, num_queries = concepts.shape[:2]
    gram = torch.einsum("bkd,bld->kl", concepts, concepts) / batch  # [Nq, Nq]
    diag = gram.diagonal()  # [Nq]
    rows = (margin + gram - diag[:, None]).clamp_min(0)  # [Nq, Nq]  positive G_kk for row k
    cols = (margin + gram - diag[None, :]).clamp_min(0)  # [Nq, Nq]  positive G_ll for column l
    off_diagonal = ~torch.eye(num_queries, dtype=torch.bool, device=concepts.device)
    return (rows + cols)[off_diagonal].sum() / max(num_queries * (num_queries - 1), 1)


def inter_consistency(
    video_concepts: Tensor, text_concepts: Tensor, target: float = 0.75, normalise: bool = False
) -> tuple[Tensor, Tensor]:
    """The paper's ICL parts for paired concepts [B, Nq, D]: (MSE of the batch means, r-term before beta).

    ``r = sum_k (M_kk - target)^2`` with ``M_kk = sum_b cos(z^v_bk, z^t_bk) / Nq`` (official) or ``/ B`` with
    ``normalise``.
    """
    batch, num_queries = video_concepts.shape[:2]
    mse = F.mse_loss(video_concepts.mean(0), text_concepts.mean(0))
    paired = (video_concepts * text_concepts).sum(dim=(0, 2)) / (batch if normalise else num_queries)  # [Nq]
    return mse, (paired - target).pow(2).sum()


@register_method("glscl")
class GLSCL(RetrievalMethod):
    """GLSCL on frozen or trainable backbone features (seqTransf + GIM + shared LIM).

    Args:
        num_queries: Nq, learnable concept queries.
        decoder_layers: layers of the shared decoder.
        decoder_heads: attention heads of the decoder.
        decoder_dropout: dropout inside the decoder layers.
        temporal_layers: seqTransf blocks.
        temperature: GIM softmax temperature tau.
        local_weight: lambda in ``S = S_g + lambda S_l``.
        alpha: IDL weight.
        idl_margin: IDL hinge margin.
        beta: weight of the ICL r-term.
        icl_target: target of the paired-concept diagonal in the r-term.
        score: ``"both"``, or an ablation: ``"global"`` (GIM only) / ``"local"`` (LIM only).
        mask_padding: pass key-padding masks to the decoder's cross-attention (official: no masks).
        icl_normalise: divide the r-term's batch sum by B instead of Nq (official: Nq).
        text_idl: add the IDL of the text concepts (official: computed, not used).
    """

    cost_class = CostClass.PARTLY_PAIRWISE
    max_eval_block = 256
    """largest evaluation block; its intermediates are mostly [A, B, F] tensors"""

    def __init__(
        self,
        *,
        num_queries: int = 8,
        decoder_layers: int = 3,
        decoder_heads: int = 8,
        decoder_dropout: float = 0.1,
        temporal_layers: int = 4,
        temperature: float = 3.0,
        local_weight: float = 0.5,
        alpha: float = 1e-4,
        idl_margin: float = 0.1,
        beta: float = 0.005,
        icl_target: float = 0.75,
        score: ScoreMode = "both",
        mask_padding: bool = False,
        icl_normalise: bool = False,
        text_idl: bool = False,
        **base,
    ) -> None:
        super().__init__(**base)
        if score not in ("both", "global", "local"):
            raise ValueError(f"GLSCL: score must be 'both', 'global' or 'local', got {score!r}")
        if num_queries < 1:
            raise ValueError(f"GLSCL: num_queries must be positive, got {num_queries}")
        self.temperature = temperature
        self.local_weight = local_weight
        self.score = score
        self.alpha = alpha
        self.idl_margin = idl_margin
        self.beta = beta
        self.icl_target = icl_target
        self.mask_padding = mask_padding
        self.icl_normalise = icl_normalise
        self.text_idl = text_idl
        self.temporal = SeqTransf(self.width, layers=temporal_layers)
        if self.uses_local:
            self.queries = nn.Parameter(torch.rand(num_queries, self.width))  # [Nq, D], uniform [0, 1) (official)
            layer = nn.TransformerDecoderLayer(
                self.width, decoder_heads, 4 * self.width, decoder_dropout, activation="relu", batch_first=True
            )
            self.decoder = nn.TransformerDecoder(layer, decoder_layers)

    @property
    def uses_global(self) -> bool:
        return self.score != "local"

    @property
    def uses_local(self) -> bool:
        return self.score != "global"

    def concepts(self, memory: Tensor, mask: Tensor) -> Tensor:
        """Normalised concepts [B, Nq, D] of one modality's memory [B, M, D] (mask [B, M], True = real)."""
        queries = self.queries.expand(memory.shape[0], -1, -1)  # [B, Nq, D]
        padding = (~mask & mask.any(-1, keepdim=True)) if self.mask_padding else None  # [B, M]
        return normalize(self.decoder(queries, memory, memory_key_padding_mask=padding))  # [B, Nq, D]

    def encode_text(self, batch: FeatureBatch) -> Rep:
        rep = {"sentence": batch["text_eot"]} if self.uses_global else {}  # [B, D] raw
        if self.uses_local:
            rep["concepts"] = self.concepts(batch["text_tokens"], batch["text_mask"])  # [B, Nq, D]
        return rep

    def encode_video(self, batch: FeatureBatch) -> Rep:
        mask = batch["video_mask"]  # [B, F]
        frames = self.temporal(batch["video_frames"], mask)  # [B, F, D]
        rep = {"frames": frames, "gram": frames @ frames.mT, "mask": mask} if self.uses_global else {}  # gram [B, F, F]
        if self.uses_local:
            rep["concepts"] = self.concepts(frames, mask)  # [B, Nq, D]
        return rep

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        if self.score == "local":
            return self.logit_scale(local_scores(text["concepts"], video["concepts"]))
        scores = global_scores(text["sentence"], video["frames"], video["gram"], video["mask"], self.temperature)
        if self.score == "both":
            scores = scores + self.local_weight * local_scores(text["concepts"], video["concepts"])
        return self.logit_scale(scores)  # [Nt, Nv]

    def loss(self, sim: Tensor, text: Rep, video: Rep) -> dict[str, Tensor]:
        parts = {"infonce": symmetric_infonce(sim)}
        if self.uses_local:
            video_concepts, text_concepts = video["concepts"], text["concepts"]  # [B, Nq, D]
            idl = intra_diversity(video_concepts, self.idl_margin)
            if self.text_idl:
                idl = idl + intra_diversity(text_concepts, self.idl_margin)
            mse, r = inter_consistency(video_concepts, text_concepts, self.icl_target, self.icl_normalise)
            parts.update(idl=self.alpha * idl, icl=mse + self.beta * r)
        return {"loss": sum(parts.values()), **parts}
