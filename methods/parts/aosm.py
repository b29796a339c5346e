"""X-CLIP's attention over similarity matrices (AOSM) and its four-score head, shared by X-CLIP and GLCCL.

Spec: ``reference/baselines-and-didemo.md`` 2.3 (X-CLIP, github.com/xuguohai/X-CLIP @6b5344f,
``modules/modeling_xclip.py``) and ``reference/glccl.md`` 4 (GLCCL reuses the head unchanged, with its
"frame" axis indexed by word).

``AttnSum`` pools a score vector x over its last axis with a soft maximum whose weights are re-mixed by a
learnable square matrix M (identity at init) and *not* renormalised::

    beta = softmax(x / 0.01) @ M;   AttnSum(x) = sum_k x_k beta_k

``FourScores`` holds the eight identity-initialised matrices and turns the four raw similarity tensors of a
text x video block into the four scores (video-sentence, video-word, sentence-frame, frame-word). How the raw
tensors are built is the method's business (X-CLIP: per-item features; GLCCL: text-guided features).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

AOSM_TEMPERATURE = 0.01
"""the hard-coded softmax temperature of every AOSM softmax in the official code"""


class AttnSum(nn.Module):
    """Soft-max pooling of the last axis with a learnable re-weighting matrix (``[K, K]``, identity at init).

    Args:
        size: K, the length of the pooled axis.
        temperature: the softmax temperature (0.01 officially).
    """

    def __init__(self, size: int, temperature: float = AOSM_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature
        self.weight = nn.Parameter(torch.eye(size))

    def forward(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``scores [..., K]`` to ``[...]``.

        Args:
            scores: the score vectors, pooled over the last axis.
            mask: optional bool mask broadcastable to ``scores`` (True = real slot): padded slots get no
                softmax mass and contribute no score. ``None`` keeps every slot (the official behaviour).
        """
        logits = scores / self.temperature  # [..., K]
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            scores = scores.masked_fill(~mask, 0.0)
        weights = logits.softmax(dim=-1) @ self.weight  # [..., K]
        return torch.linalg.vecdot(scores, weights)  # [...]


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
        video_word = self.video_word(video_word, word_mask)  # [A, B]
        sentence_frame = self.sentence_frame(sentence_frame, frame_mask)  # [A, B]
        frame_word = self.frame_word(frame_word, word_mask, frame_mask)  # [A, B]
        return torch.stack([video_sentence, video_word, sentence_frame, frame_word])

    def frame_word(self, sims: Tensor, word_mask: Tensor | None, frame_mask: Tensor | None) -> Tensor:
        """AOSM on the ``[A, B, L, K]`` word x frame matrix: pool each axis, then pool the pooled vectors."""
        per_frame = self.word(sims.transpose(-1, -2), _axis_mask(word_mask))  # [A, B, K]: words pooled
        per_word = self.frame(sims, _axis_mask(frame_mask))  # [A, B, L]: frames pooled
        return 0.5 * (self.frame2(per_frame, frame_mask) + self.word2(per_word, word_mask))  # [A, B]


def _axis_mask(mask: Tensor | None) -> Tensor | None:
    """A ``[.., .., K]`` mask of the pooled axis, broadcast over the other axis of a ``[A, B, *, K]`` matrix."""
    return None if mask is None else mask.unsqueeze(-2)
