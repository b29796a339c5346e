"""X-CLIP's attention over similarity matrices (AOSM) and its four-score head, shared by X-CLIP and GLCCL (UCoFiA
uses ``AttnSum`` with its second softmax, ``second_softmax=True``).

Spec: ``reference/baselines-and-didemo.md`` 2.3 (X-CLIP, github.com/xuguohai/X-CLIP @6b5344f,
``modules/modeling_xclip.py``) and ``reference/glccl.md`` 4 (GLCCL reuses the head unchanged, with its
"frame" axis indexed by word).

``AttnSum`` pools a score vector x over its last axis with a soft maximum whose weights are re-mixed by a
learnable square matrix M (identity at init) and *not* renormalised::

    beta = softmax(x / 0.01) @ M;   AttnSum(x) = sum_k x_k beta_k

``FourScores`` holds the eight identity-initialised matrices and turns the four raw similarity tensors of a
text x video block into the four scores (video-sentence, video-word, sentence-frame, frame-word). How the raw
tensors are built is the method's business (X-CLIP: per-item features; GLCCL: text-guided features).

Computation (the same function up to float32 rounding; the AOSM tests check it against per-pair oracles): AttnSum
runs on logits ``x / temperature`` and returns ``temperature * (x/t . softmax(x/t) M)``, so a caller that builds
the logits directly (the 1/temperature folded into its GEMM) saves a pass, and it pools any axis in place
(``dim``): the word x frame AOSM pools the words and the frames of one logits tensor, never a transposed copy.
Evaluation feeds the head tiles of texts sized by ``pair_tile`` so that every [pairs, L, K] temporary stays in
the CPU cache.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tvr_convbench.methods.base import normalize

AOSM_TEMPERATURE = 0.01
"""the hard-coded softmax temperature of every AOSM softmax in the official code"""

TILE_ELEMENTS = 1 << 18
"""elements of one [pairs, L, K] AOSM temporary of an evaluation tile at feature width 64 (1 MiB in float32: the
tile's elementwise passes, which dominate at narrow widths, stay in cache)"""
MIN_GEMM_COLUMNS = 128
"""at least this many text-token columns (texts x L) per tile GEMM (narrower GEMMs run less efficiently)"""


def pair_tile(pairs_per_row: int, pair_elements: int, width: int, words: int) -> int:
    """Texts per evaluation tile, for ``pairs_per_row`` videos and ``pair_elements`` AOSM elements per pair.

    At narrow widths the passes over the [pairs, L, K] tensors are the cost, so a tile's tensors stay within
    ``TILE_ELEMENTS``; the budget grows with the feature width D because wide features make the tile's text x
    frame GEMMs the cost, whose efficiency grows with their width (texts x L).
    """
    budget = TILE_ELEMENTS * max(1, width // 64)
    return max(budget // max(1, pairs_per_row * pair_elements), -(-MIN_GEMM_COLUMNS // words), 1)


class AttnSum(nn.Module):
    """Soft-max pooling of the last axis with a learnable re-weighting matrix (``[K, K]``, identity at init).

    Args:
        size: K, the length of the pooled axis.
        temperature: the softmax temperature (0.01 officially).
        second_softmax: UCoFiA's variant: the re-weighted attention is wrapped in a second softmax of the same
            temperature, ``beta = softmax((softmax(x / t) M) / t)`` (renormalised; padded slots get no mass).
    """

    def __init__(self, size: int, temperature: float = AOSM_TEMPERATURE, second_softmax: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.second_softmax = second_softmax
        self.weight = nn.Parameter(torch.eye(size))

    def forward(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``scores [..., K]`` to ``[...]``.

        Args:
            scores: the score vectors, pooled over the last axis.
            mask: optional bool mask broadcastable to ``scores`` (True = real slot): padded slots get no
                softmax mass and contribute no score. ``None`` keeps every slot (the official behaviour).
        """
        return self.pool_logits(scores / self.temperature, mask)

    def pool_logits(self, logits: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
        """``forward(temperature * logits, mask)`` pooling axis ``dim`` of the logits ``scores / temperature``.

        ``sum_k x_k (softmax(x / t) M)_k = t * sum_k (x / t)_k (softmax(x / t) M)_k``: one softmax, one GEMM with M
        and one dot product along ``dim``, on the tensor as laid out (no transposed copy for ``dim != -1``).

        Args:
            logits: the scores divided by the temperature; axis ``dim`` (length K) is pooled.
            mask: optional bool mask broadcastable to ``logits`` (True = real slot).
            dim: the pooled axis.
        """
        values = logits if mask is None else logits.masked_fill(~mask, 0.0)
        if self.second_softmax:  # softmax((softmax(x / t) M) / t), the 1 / t folded into M
            mixed = _mix(self.softmax(logits, mask, dim), self.weight / self.temperature, dim)
            weights = self.softmax(mixed, mask, dim)
        else:
            weights = _mix(self.softmax(logits, mask, dim), self.weight, dim)  # softmax(x / t) M along dim
        return self.temperature * torch.linalg.vecdot(values, weights, dim=dim)

    def softmax(self, logits: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
        """The softmax weights of ``pool_logits`` (padded slots get none), before the re-weighting by M."""
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        return logits.softmax(dim=dim)


def _mix(weights: Tensor, matrix: Tensor, dim: int) -> Tensor:
    """``weights @ matrix`` along axis ``dim`` of ``weights`` (``[.., K, ..]``, ``matrix`` ``[K, K]``)."""
    dim = dim % weights.ndim
    if dim == weights.ndim - 1:
        return weights @ matrix
    shape = weights.shape
    if dim == 0:
        return (matrix.t() @ weights.reshape(shape[0], -1)).view(shape)  # one GEMM: [K, K] x [K, after]
    rows = weights.reshape(-1, shape[dim], math.prod(shape[dim + 1 :]))  # [before, K, after]
    return torch.bmm(matrix.t().expand(rows.shape[0], -1, -1), rows).view(shape)  # no transposing copies


class FourScores(nn.Module):
    """X-CLIP's multi-grained scoring head: four ``[A, B]`` scores from raw text x video similarities.

    Parameter names map to the official ones (X-CLIP / GLCCL): ``global_mat`` = ``global_mat_weight`` (G),
    ``local_mat`` = ``local_mat_weight`` (W_loc), ``video_word`` = ``word_logit_weight``, ``sentence_frame`` =
    ``frame_logit_weight`` / ``word_frame_logit_weight``, ``word`` = ``word_mat_weight``, ``frame`` =
    ``frame_mat_weight`` / ``word_frame_mat_weight``, ``frame2`` = ``frame_mat_weight2`` /
    ``word_frame_mat_weight2``, ``word2`` = ``word_mat_weight2``.

    Args:
        width: D (G and W_loc are D x D).
        num_words: L, the word axis.
        num_frames: K, the frame axis (F for X-CLIP; L for GLCCL, whose "frames" are word-guided).
    """

    temperature = AOSM_TEMPERATURE
    """the softmax temperature of every AttnSum of the head"""

    def __init__(self, width: int, num_words: int, num_frames: int) -> None:
        super().__init__()
        self.global_mat = nn.Parameter(torch.eye(width))
        self.local_mat = nn.Parameter(torch.eye(width))
        self.video_word = AttnSum(num_words)
        self.sentence_frame = AttnSum(num_frames)
        self.word = AttnSum(num_words)
        self.frame = AttnSum(num_frames)
        self.frame2 = AttnSum(num_frames)
        self.word2 = AttnSum(num_words)

    def text_rep(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The per-text tensors the four scores need (shared by X-CLIP and GLCCL): the normalised sentence and
        words, their G / W_loc projections (applied once per text), and the word mask."""
        sentence, words = normalize(batch["text_eot"]), normalize(batch["text_tokens"])  # [A, D], [A, L, D]
        return {
            "sentence": sentence,
            "sentence_g": self.project_sentence(sentence),  # [A, D]
            "words": words,
            "words_loc": self.project_words(words),  # [A, L, D]
            "word_mask": batch["text_mask"],  # [A, L]
        }

    def project_sentence(self, sentence: Tensor) -> Tensor:
        """``t^T G`` for normalised sentences ``[A, D]`` (not renormalised)."""
        return sentence @ self.global_mat

    def project_words(self, words: Tensor) -> Tensor:
        """``w_i^T W_loc`` for normalised words ``[A, L, D]`` (not renormalised)."""
        return words @ self.local_mat

    def forward(
        self,
        video_sentence: Tensor,
        video_word: Tensor,
        sentence_frame: Tensor,
        frame_word: Tensor,
        word_mask: Tensor | None = None,
        frame_mask: Tensor | None = None,
    ) -> Tensor:
        """The four scores, stacked ``[4, A, B]`` (no logit scale).

        Args:
            video_sentence: ``t^T G v`` per pair, ``[A, B]``.
            video_word: ``w_i . v`` per pair and word, ``[A, B, L]``.
            sentence_frame: ``t . f_j`` per pair and frame, ``[A, B, K]``.
            frame_word: ``w_i^T W_loc f_j`` per pair, ``[A, B, L, K]``.
            word_mask: optional bool, broadcastable to ``[A, B, L]``.
            frame_mask: optional bool, broadcastable to ``[A, B, K]``.
        """
        logits = frame_word / self.temperature  # [A, B, L, K]
        per_frame = self.word.pool_logits(logits, _axis_mask(word_mask, -1), dim=-2)  # [A, B, K]: words pooled
        per_word = self.frame.pool_logits(logits, _axis_mask(frame_mask, -2), dim=-1)  # [A, B, L]: frames pooled
        return self.combine(video_sentence, video_word, sentence_frame, per_word, per_frame, word_mask, frame_mask)

    def combine(
        self,
        video_sentence: Tensor,
        video_word: Tensor,
        sentence_frame: Tensor,
        per_word: Tensor,
        per_frame: Tensor,
        word_mask: Tensor | None = None,
        frame_mask: Tensor | None = None,
    ) -> Tensor:
        """``forward`` from the frame-word matrix already pooled along each axis (with ``word``/``frame``).

        Args:
            video_sentence: ``[A, B]``; video_word: ``[A, B, L]``; sentence_frame: ``[A, B, K]``.
            per_word: the frame-word matrix with its frames pooled (``frame``), ``[A, B, L]``.
            per_frame: the frame-word matrix with its words pooled (``word``), ``[A, B, K]``.
            word_mask: optional bool, broadcastable to ``[A, B, L]``.
            frame_mask: optional bool, broadcastable to ``[A, B, K]``.
        """
        video_word = self.video_word(video_word, word_mask)  # [A, B]
        sentence_frame = self.sentence_frame(sentence_frame, frame_mask)  # [A, B]
        frame_word = 0.5 * (self.frame2(per_frame, frame_mask) + self.word2(per_word, word_mask))  # [A, B]
        return torch.stack([video_sentence, video_word, sentence_frame, frame_word])


def rep_len(rep: dict[str, Tensor]) -> int:
    """Items in a representation (its tensors hold the items on dim 0)."""
    return next(iter(rep.values())).shape[0]


def split_rep(rep: dict[str, Tensor], size: int) -> list[dict[str, Tensor]]:
    """Consecutive slices of ``size`` items of a representation (views, no copies)."""
    return [{key: value[start : start + size] for key, value in rep.items()} for start in range(0, rep_len(rep), size)]


def _axis_mask(mask: Tensor | None, dim: int) -> Tensor | None:
    """The mask of a ``[A, B, L, K]`` matrix's pooled axis, broadcast over its other axis (inserted at ``dim``)."""
    return None if mask is None else mask.unsqueeze(dim)
