"""UCoFiA: unified coarse-to-fine alignment (video-sentence, sentence-frame, patch-word).

Paper: Wang, Sung, Cheng, Bansal, Bertasius, "Unified Coarse-to-Fine Alignment for Video-Text Retrieval", ICCV'23,
arXiv 2309.10091. Reference code: github.com/Ziyang412/UCoFiA @6098be2, the *training* code
(``train/modules/modeling_ucofia.py::_loose_similarity``, ``train/modules/differential_topk.py``,
``train/modules/modeling.py``) and ``eval_t2v/main_ucofia.py::sinkhorn_knopp`` for SK-norm. Spec:
``reference/baselines-and-didemo.md`` 2.6, with 2.6a (U1-U5, what the code does) taking precedence.

Representations (per item, cached): t, the normalised sentence (EOT), and w_i, every normalised token slot
(pads included); v, the CLIP4Clip-seqTransf video (masked mean of normalised seqTransf outputs, renormalised);
f_j, the normalised frame CLS features before seqTransf, padded slots included; p_k, k = 1..4F, the *unnormalised*
token-selector outputs ``[CLS, 3 selected patches]`` of every frame (TS2-Net's selector,
``tvr_convbench.methods.parts.token_selection``). With the double-softmax pooling (``AttnSum(second_softmax=True)``,
delta = 0.01) ``DS_M(x) = sum_k x_k softmax_k((softmax(x / delta) M) / delta)``::

    S1 = scale (t G1) . (v G2)                                        video-sentence
    S2 = scale DS_{A_f}(t . f_j)                                      sentence-frame
    M_ik = (w_i W_1) . (p_k W_2)                                      patch-word, [L, 4F], no scale
    S3 = 1/2 (DS_{P_2}(DS_{W}(M_{., k}) over words) + DS_{W_2}(DS_{P}(M_{i, .}) over patches))
    logit = (S1 + S2 + S3) / 3                                        training logit = evaluation logit

G1, G2, W_1, W_2 (D x D) and A_f (F x F), W, W_2 (L x L), P, P_2 (4F x 4F) start at the identity. Loss: symmetric
InfoNCE on the logit. The token shift of TS2-Net is part of UCoFiA (U1: its CLIP loader applies it): as for TS2-Net,
``token_shift_layers = 2`` asks a live-CLIP backbone for it, and frozen features cannot have it (``regime_note``).

Official behaviour kept by default, each deviation of the official code a named switch:
- No text mask anywhere (U4): pad tokens enter every word softmax of S3; the video mask is used only in seqTransf
  and S1's masked mean, so padded frames enter S2 and S3 (U5; zero-vector pads would make S2 NaN, the blank-frame
  features the data path gives do not). ``mask_padding=True`` masks pad tokens and padded frames (and their
  selected tokens) out of S2 and S3.
- SK-norm (``sk_norm``, off): inference post-processing with training-set texts, excluded from the protocol's main
  numbers. When on, ``calibrate_videos(video, reference_text)`` (the harness calls it once per evaluation with the
  encoded training-split texts) scores every reference text against every evaluated video at each level (S1, S2,
  S3 separately), runs Sinkhorn-Knopp for ``sk_iterations`` (4) on each exp-matrix, and adds the mean over levels of
  the log video-marginal biases to every score of that video (the official code adds each level's bias to that
  level, then averages: the same sum). Its cost is one extra reference-texts x videos pass of the head.

Deviations from the official code:
- The training code is the reference (U2, U3): the released evaluation code's S3 drops ``local_mat_weight1`` (W_2)
  and its token selector has another architecture, so a train checkpoint does not load into it.
- Nothing unused is built: ``word_logit_weight``, ``frame_mat_weight``, ``frame_mat_weight2`` and
  ``word_mat_weight_for_pixel`` (L^2 + 2F^2 + L^2 parameters the training logit never reads) are left out.
- The perturbed top-k's evaluation noise is one fixed table (deterministic evaluation, a video's tokens independent
  of its batch), officially fresh noise on every call; training noise comes from the device's generator.
- Parameter names: ``global_mat`` = ``global_mat_weight``, ``global_mat_video`` = ``global_mat_weight_1``,
  ``local_mat`` = ``local_mat_weight``, ``local_mat_patch`` = ``local_mat_weight1``, ``sentence_frame`` =
  ``frame_logit_weight``, ``word`` = ``word_mat_weight``, ``patch`` = ``pixel_mat_weight``, ``patch2`` =
  ``pixel_mat_weight2``, ``word2`` = ``word_mat_weight2``.

Computation (the same function up to float32 rounding): the patch-word logits come from one GEMM laid out
``[B, 4F, A, L]`` (1/delta folded into the words), the two first poolings reduce its last axis (words) and its
second (patches, one batched GEMM with P) in place, and evaluation scores the texts in cache-sized tiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.aosm import AOSM_TEMPERATURE, AttnSum, pair_tile, rep_len, split_rep
from tvr_convbench.methods.parts.pooling import masked_mean_of_normalized
from tvr_convbench.methods.parts.temporal import SeqTransf
from tvr_convbench.methods.parts.token_selection import FROZEN_NOTE, TOKEN_SHIFT_LAYERS, TokenSelector


def sinkhorn_video_bias(logits: Tensor, iterations: int = 4) -> Tensor:
    """SK-norm's video bias ``[Nv]`` from reference-text x video logits ``[Nr, Nv]`` (official ``sinkhorn_knopp``).

    ``S = exp(logits - max)``; ``b = 1 / colsum(S)``; ``iterations`` times ``a = 1 / (S b)``, ``b = 1 / (a S)``;
    the bias is ``log_softmax(log b - max)`` over the videos.
    """
    top = logits.max()
    sim = (logits - top).exp()  # [Nr, Nv]
    b = 1 / sim.sum(0)  # [Nv]
    for _ in range(iterations):
        a = 1 / (sim @ b)  # [Nr]
        b = 1 / (a @ sim)  # [Nv]
    return F.log_softmax(b.log() - top, dim=0)


@register_method("ucofia")
class UCoFiA(RetrievalMethod):
    """UCoFiA (Wang et al.) on frame CLS features, their patch tokens and text tokens.

    Args:
        mask_padding: mask pad tokens and padded frames out of S2 and S3 (off = official).
        sk_norm: add SK-norm's video biases at evaluation (needs ``calibrate_videos``; off in the main numbers).
        sk_iterations: Sinkhorn-Knopp iterations of SK-norm (4).
        topk: patches selected per frame (3).
        samples: noise draws of the perturbed top-k (500).
        sigma: noise scale of the perturbed top-k (0.05).
        eval_seed: seed of the fixed evaluation noise.
        token_shift: ask a live-CLIP backbone for the token shift in its last two vision blocks.
        temporal_layers: seqTransf blocks (4).
    """

    cost_class = CostClass.PAIRWISE
    needs_patches = True
    max_eval_block = 64
    """largest evaluation block (texts scored in cache-sized tiles; its memory is bounded in tests/test_ucofia.py)"""
    temperature = AOSM_TEMPERATURE

    def __init__(
        self,
        *,
        mask_padding: bool = False,
        sk_norm: bool = False,
        sk_iterations: int = 4,
        topk: int = 3,
        samples: int = 500,
        sigma: float = 0.05,
        eval_seed: int = 0,
        token_shift: bool = True,
        temporal_layers: int = 4,
        **base,
    ) -> None:
        super().__init__(**base)
        self.mask_padding = mask_padding
        self.sk_norm = sk_norm
        self.sk_iterations = sk_iterations
        self.tokens_per_frame = 1 + topk
        self.token_shift_layers = TOKEN_SHIFT_LAYERS if token_shift else 0
        num_tokens = self.tokens_per_frame * self.max_frames
        self.temporal = SeqTransf(self.width, layers=temporal_layers)
        self.selector = TokenSelector(self.width, topk, samples, sigma, eval_seed)
        self.global_mat = nn.Parameter(torch.eye(self.width))
        self.global_mat_video = nn.Parameter(torch.eye(self.width))
        self.local_mat = nn.Parameter(torch.eye(self.width))
        self.local_mat_patch = nn.Parameter(torch.eye(self.width))
        self.sentence_frame = AttnSum(self.max_frames, second_softmax=True)
        self.word = AttnSum(self.max_words, second_softmax=True)
        self.patch = AttnSum(num_tokens, second_softmax=True)
        self.patch2 = AttnSum(num_tokens, second_softmax=True)
        self.word2 = AttnSum(self.max_words, second_softmax=True)

    @classmethod
    def regime_note(cls, regime: str) -> str | None:
        """Frozen features cannot carry the token shift (it runs inside the vision tower)."""
        return FROZEN_NOTE if regime == "frozen" else None

    # --- per-item representations ---------------------------------------------------------------------------
    def encode_text(self, batch: FeatureBatch) -> Rep:
        sentence, words = normalize(batch["text_eot"]), normalize(batch["text_tokens"])  # [A, D], [A, L, D]
        return {
            "sentence": sentence,
            "sentence_g": sentence @ self.global_mat,  # [A, D]
            "words_loc": words @ self.local_mat,  # [A, L, D]
            "word_mask": batch["text_mask"],  # [A, L]
        }

    def encode_video(self, batch: FeatureBatch) -> Rep:
        frames, mask = batch["video_frames"], batch["video_mask"]  # [B, F, D], [B, F]
        video = masked_mean_of_normalized(self.temporal(frames, mask), mask)  # [B, D]
        tokens = self.selector(frames, batch["video_patches"]).flatten(1, 2)  # [B, 4F, D] unnormalised
        return {
            "video_g": video @ self.global_mat_video,  # [B, D]
            "frames": normalize(frames),  # [B, F, D]: pre-seqTransf, padded slots included
            "tokens_loc": tokens @ self.local_mat_patch,  # [B, 4F, D]
            "frame_mask": mask,  # [B, F]
        }

    # --- pairwise score -------------------------------------------------------------------------------------
    def similarity(self, text: Rep, video: Rep) -> Tensor:
        sim = self.score_levels(text, video).mean(0)  # [A, B]
        if "sk_bias" in video:
            return sim + video["sk_bias"][None]  # [A, B]
        if self.sk_norm and not self.training:
            raise ValueError("ucofia: sk_norm needs calibrate_videos(video, training-split texts) before evaluation")
        return sim

    def score_levels(self, text: Rep, video: Rep) -> Tensor:
        """The three level logits ``[3, A, B]``: scale S1, scale S2, S3 (as the official code scales them)."""
        video_sentence = text["sentence_g"] @ video["video_g"].t()  # [A, B]
        sentence_frame = torch.einsum("ad,bfd->abf", text["sentence"], video["frames"])  # [A, B, F]
        frame_mask = video["frame_mask"][None] if self.mask_padding else None  # [1, B, F]
        scaled = self.logit_scale(torch.stack([video_sentence, self.sentence_frame(sentence_frame, frame_mask)]))
        return torch.cat([scaled, self.patch_word(text, video)[None]])  # [3, A, B]

    def patch_word(self, text: Rep, video: Rep) -> Tensor:
        """S3 ``[A, B]``; without autograd the texts are scored in tiles (``pair_tile``) so the ``[B, 4F, texts, L]``
        temporaries stay in cache."""
        num_words = self.max_words
        if torch.is_grad_enabled():
            return self.patch_word_tile(text, video)
        rows = pair_tile(rep_len(video), num_words * video["tokens_loc"].shape[1], self.width, num_words)
        return torch.cat([self.patch_word_tile(part, video) for part in split_rep(text, rows)])

    def patch_word_tile(self, text: Rep, video: Rep) -> Tensor:
        """S3 of one tile of texts: the patch-word logits ``[B, K, A, L]`` (one GEMM, 1/delta folded into the
        words), pooled over words and over patches in place, then each pooled vector pooled again."""
        (num_texts, num_words, width), (num_videos, num_tokens) = text["words_loc"].shape, video["tokens_loc"].shape[:2]
        queries = text["words_loc"].reshape(-1, width) / self.temperature  # [A L, D]
        logits = video["tokens_loc"].reshape(-1, width) @ queries.t()  # [B K, A L]
        logits = logits.view(num_videos, num_tokens, num_texts, num_words)  # [B, K, A, L]
        word_mask, token_mask = self.padding_masks(text, video)
        per_token = self.word.pool_logits(logits, word_mask, dim=-1)  # [B, K, A]: words pooled
        token_axis_mask = None if token_mask is None else token_mask[:, :, None, None]  # [B, K, 1, 1]
        per_word = self.patch.pool_logits(logits, token_axis_mask, dim=1)  # [B, A, L]: patches pooled
        sentence_token = self.patch2(per_token.permute(2, 0, 1), None if token_mask is None else token_mask[None])
        video_word = self.word2(per_word.transpose(0, 1), None if word_mask is None else word_mask[:, None])
        return (sentence_token + video_word) / 2  # [A, B]

    def padding_masks(self, text: Rep, video: Rep) -> tuple[Tensor | None, Tensor | None]:
        """(word mask ``[A, L]``, selected-token mask ``[B, 4F]``) with ``mask_padding``, else (None, None)."""
        if not self.mask_padding:
            return None, None
        return text["word_mask"], video["frame_mask"].repeat_interleave(self.tokens_per_frame, dim=1)

    # --- SK-norm (evaluation post-processing) ---------------------------------------------------------------
    @property
    def needs_reference_texts(self) -> bool:
        """True when evaluation needs the training split's encoded texts (``calibrate_videos``)."""
        return self.sk_norm

    @torch.no_grad()
    def calibrate_videos(self, video: Rep, reference_text: Rep) -> Rep:
        """The video reps with SK-norm's bias ``sk_bias [Nv]`` (module docstring), from the reference (training
        split) text reps; blocks of ``max_eval_block`` keep the memory bounded."""
        block = self.max_eval_block
        rows = [
            torch.cat([self.score_levels(texts, videos) for videos in split_rep(video, block)], dim=-1)
            for texts in split_rep(reference_text, block)
        ]  # each [3, block, Nv]
        levels = torch.cat(rows, dim=1)  # [3, Nr, Nv]
        bias = torch.stack([sinkhorn_video_bias(level, self.sk_iterations) for level in levels]).mean(0)  # [Nv]
        return {**video, "sk_bias": bias}
