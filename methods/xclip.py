"""X-CLIP: multi-grained contrast with attention over similarity matrices (AOSM).

Paper: Ma et al., "X-CLIP: End-to-End Multi-grained Contrastive Learning for Video-Text Retrieval", ACM MM'22,
arXiv 2207.07285. Reference code: github.com/xuguohai/X-CLIP @6b5344f (``modules/modeling_xclip.py``,
``loose_type`` + ``seqTransf``). Spec: ``reference/baselines-and-didemo.md`` 2.3. Not Hugging Face's
``XCLIPModel`` (Ni et al.'s video-recognition X-CLIP).

Representations (t, w_i, f_j L2-normalised):
- t: sentence (EOT) feature; w_i, i = 1..L: every token slot (SOT, words, EOT, padding);
- v: the CLIP4Clip-seqTransf video vector (masked mean of normalised seqTransf outputs, renormalised);
- f_j, j = 1..F: the frame features *before* seqTransf (``use_original_clip_for_frame_features``), padded
  slots included.
Four scores (``tvr_convbench.methods.parts.aosm.FourScores``): video-sentence ``t^T G v``, video-word AttnSum over
``w_i . v``, sentence-frame AttnSum over ``t . f_j``, frame-word AOSM on ``M_ij = w_i^T W_loc f_j``; the
logit is the logit scale times their mean. Loss: symmetric InfoNCE. Every pair needs its own softmaxes over
an L x F matrix, so the cost class is pairwise; all features are cached per item (G and W_loc are applied
once per text in ``encode_text``).

Computation (the same function up to float32 rounding): the word x frame logits come from one GEMM laid out
frame-major (``[F, B, A, L]``, 1/temperature folded into the words), the AOSM pools its words (last axis) and its
frames (first axis, one GEMM with M) in place, and evaluation scores the texts in cache-sized tiles.

Deviations from the official code:
- ``mask_padding=True`` (off by default) is our addition: padded token and frame slots then take no part in
  any AOSM softmax or sum. The default keeps the official behaviour (all L token and F frame slots count).
- Parameter names follow ``FourScores`` (the mapping to the official names is in its docstring).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.aosm import FourScores, pair_tile, rep_len, split_rep
from tvr_convbench.methods.parts.pooling import masked_mean_of_normalized
from tvr_convbench.methods.parts.temporal import SeqTransf


@register_method("xclip")
class XCLIP(RetrievalMethod):
    """X-CLIP (Ma et al.) on frozen or trainable CLIP features.

    Args:
        temporal_layers: seqTransf blocks (4, as released).
        temporal_heads: seqTransf attention heads (8, as released).
        mask_padding: exclude padded token and frame slots from the AOSM scores (off = official).
    """

    cost_class = CostClass.PAIRWISE
    max_eval_block = 64
    """largest evaluation block (texts scored in cache-sized tiles; its memory is bounded in tests/test_xclip.py)"""

    def __init__(
        self, *, temporal_layers: int = 4, temporal_heads: int = 8, mask_padding: bool = False, **base
    ) -> None:
        super().__init__(**base)
        self.mask_padding = mask_padding
        self.temporal = SeqTransf(self.width, layers=temporal_layers, heads=temporal_heads)
        self.head = FourScores(self.width, self.max_words, self.max_frames)

    def encode_text(self, batch: FeatureBatch) -> Rep:
        return self.head.text_rep(batch)

    def encode_video(self, batch: FeatureBatch) -> Rep:
        frames, mask = batch["video_frames"], batch["video_mask"]  # [B, F, D], [B, F]
        return {
            "video": masked_mean_of_normalized(self.temporal(frames, mask), mask),  # [B, D]
            "frames": normalize(frames),  # [B, F, D]: pre-seqTransf
            "frame_mask": mask,
        }

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        return self.logit_scale(self.score_parts(text, video).mean(0))  # [A, B]

    def score_parts(self, text: Rep, video: Rep) -> Tensor:
        """The four unscaled scores ``[4, A, B]`` (video-sentence, video-word, sentence-frame, frame-word).

        Without autograd the texts are scored in tiles (``pair_tile``) so the [F, B, texts, L] temporaries stay in
        cache; every text's row is computed the same way in any tile.
        """
        frame_rows = video["frames"].transpose(0, 1).reshape(-1, self.width)  # [F B, D]: frame-major
        if torch.is_grad_enabled():
            parts = self.score_tile(text, video, frame_rows)
        else:
            rows = pair_tile(rep_len(video), self.max_words * self.max_frames, self.width, self.max_words)
            tiles = (self.score_tile(part, video, frame_rows) for part in split_rep(text, rows))
            parts = [torch.cat(part) for part in zip(*tiles)]
        word_mask = frame_mask = None
        if self.mask_padding:
            word_mask, frame_mask = text["word_mask"][:, None], video["frame_mask"][None]  # [A, 1, L], [1, B, F]
        return self.head.combine(*parts, word_mask, frame_mask)

    def score_tile(self, text: Rep, video: Rep, frame_rows: Tensor) -> tuple[Tensor, ...]:
        """The inputs of ``FourScores.combine`` for one tile of texts (``frame_rows``: the frames ``[F B, D]``,
        frame-major): video-sentence ``[A, B]``, video-word ``[A, B, L]``, sentence-frame ``[A, B, F]``, and the
        frame-word matrix pooled along its frames (``[A, B, L]``) and along its words (``[A, B, F]``).

        The frame-word logits come from one GEMM as ``[F, B, A, L]`` (1/temperature folded into the words) and the
        AOSM pools their last axis (words) and their first (frames, one GEMM with M) in place.
        """
        num_texts, num_words, width = text["words_loc"].shape
        num_videos, num_frames = video["frames"].shape[:2]
        video_sentence = text["sentence_g"] @ video["video"].t()  # [A, B]
        video_word = torch.einsum("atd,bd->abt", text["words"], video["video"])  # [A, B, L]
        sentence_frame = torch.einsum("ad,bfd->abf", text["sentence"], video["frames"])  # [A, B, F]
        queries = text["words_loc"].reshape(-1, width) / self.head.temperature  # [A L, D]
        logits = (frame_rows @ queries.t()).view(num_frames, num_videos, num_texts, num_words)  # [F, B, A, L]
        word_mask = frame_mask = None
        if self.mask_padding:
            word_mask = text["word_mask"]  # [A, L]
            frame_mask = video["frame_mask"].t()[:, :, None, None]  # [F, B, 1, 1]
        per_frame = self.head.word.pool_logits(logits, word_mask, dim=-1)  # [F, B, A]: words pooled
        per_word = self.head.frame.pool_logits(logits, frame_mask, dim=0)  # [B, A, L]: frames pooled
        return video_sentence, video_word, sentence_frame, per_word.transpose(0, 1), per_frame.permute(2, 1, 0)
