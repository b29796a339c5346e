"""GLCCL: X-CLIP's four scores on text-guided visual features, plus a contrastive score-consistency loss.

Paper: Jing, Yang, Yang, "Text-Video Retrieval With Global-Local Contrastive Consistency Learning", arXiv
2605.17959 (CAC 2025). Reference code: github.com/JingXiaolun/GLCCL @abe7659 (``modules/modeling_glccl.py``,
``main_glccl.py``); its helper modules are X-CLIP's (github.com/xuguohai/X-CLIP @6b5344f). Spec:
``reference/glccl.md``. Only the abstract of the paper was available, so the official code is the reference.

Model (z = seqTransf outputs [B, F, D], unnormalised; e = sentence (EOT), h_u = token slot u, both unnormalised):
- GLIM (parameter-free): ``Pool(q, b) = sum_f softmax_f(q . z_bf / 5) z_bf``. The video-level feature is
  ``v_ab = normalise(Pool(e_a, b))`` ([A, B, D]); the L "frame-level" features are the word-guided
  ``g_abu = normalise(Pool(h_au, b))`` ([A, B, L, D]), so every frame axis of X-CLIP has length L here.
- The four X-CLIP scores (``methods.parts.aosm.FourScores``, every matrix identity-initialised, softmax
  temperature 0.01) on (t, w) = normalised (e, h) and (v, g); each is scaled by the logit scale and the
  similarity is their plain mean, in training and at inference.
- Loss: symmetric InfoNCE on the similarity + ``csc_weight`` (0.5, the README value) x CSC, where
  ``CSC = mean_i Var_k(S_k)_ii / (sum_{i != j} Var_k(S_k)_ij / B^2)`` over the four scaled scores, exactly
  as the official ``var_loss`` (B^2, not B^2 - B, in the denominator).
The harness gathers the raw per-item features (e, h, z) before ``training_forward``, as the official code
all-gathers before GLIM.

Computation (not a deviation: the values are the same up to float rounding): g is never materialised. With
``w'_abuf = softmax_f(h_au . z_bf / 5) / ||Pool(h_au, b)||`` and the squared norm from the per-video Gram
matrix (``a^T (z_b z_b^T) a``, cached in ``encode_video``), ``q . g_abu = sum_f w'_abuf (q . z_bf)`` for any
query q: text-token x frame GEMMs and F-sized contractions instead of [A, B, L, D] tensors (reference/glccl.md
section 9; the equality is tested). The official per-word Python loop becomes one batched softmax.

Deviations from the official code:
- CSC guard: the official ratio is 0/0 when the four scores agree on every pair. We divide by
  ``neg + CSC_EPS * mean(S_k^2)`` (``CSC_EPS`` = 1e-7, relative to the scores' scale so the ratio stays
  scale-invariant) and clamp the denominator at the smallest positive float, so that case gives ~0, never NaN.
- ``mask_padding=True`` (off by default) is our addition: padded frames leave the GLIM softmaxes and padded
  token slots leave every word-indexed AOSM softmax and sum. The default is faithful: every frame and token
  slot (SOT, EOT, padding) takes part.
- The F x F ``visual_logit_weight`` (4,096 entries at F = 64) is created but never used by the official
  forward; we **drop** it (it would get no gradient). New matrices: 2D^2 + 6L^2 (548,864 at D=512, L=64).
- Only the text-guided branch exists (``--text_guided_flag`` is mandatory in the official code: without it
  the next einsum fails) and only ``interaction_type="attn"`` (other values leave the scores undefined).
Defects of the released code that are not reproduced (they live outside the model, or crash): the README's
``--csc_loss_flag --csc_loss_weight --aggregation_weights_type`` flags do not exist in the parser (the working
ones are ``--var_loss_flag --var_loss_weight``; the parser default weight is 0.1, the README's 0.5 is ours)
and its MSR-VTT command breaks its line continuation; ``--do_eval`` raises a NameError (undefined ``epoch``);
``main_glccl_inference.py`` cannot build the model (missing arguments), calls a 6-argument function with 4 and
undefined ``save_vatex_*`` helpers; ``metrics.py`` uses ``json`` without importing it; ``set_seed_logger``
deletes the contents of the output, log and visualisation folders at start-up; model selection on the test
split every epoch (the harness selects on val).
"""

from __future__ import annotations

import torch
from torch import Tensor

from methods import register_method
from methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from methods.parts.aosm import FourScores
from methods.parts.losses import symmetric_infonce
from methods.parts.pooling import conditioned_weights, pool
from methods.parts.temporal import SeqTransf

POOL_TEMPERATURE = 5.0
"""GLIM's softmax temperature on raw (unnormalised) CLIP-scale features"""
CSC_EPS = 1e-7
"""the CSC guard, relative to the mean square of the four scores (see the module docstring)"""


@register_method("glccl")
class GLCCL(RetrievalMethod):
    """GLCCL: GLIM text-guided features, X-CLIP's four AOSM scores, InfoNCE + CSC.

    Args:
        temporal_layers: seqTransf blocks (4, as released).
        temporal_heads: seqTransf attention heads (8, as released).
        csc_weight: weight of the CSC loss (0.5, the README value).
        pool_temperature: GLIM's softmax temperature (5).
        mask_padding: exclude padded frames and token slots (off = official).
    """

    cost_class = CostClass.PAIRWISE
    max_eval_block = 64
    """64 x 64 pairs at D=512, L=F=64: 0.32 GiB of intermediates (measured by tests/test_glccl.py)"""

    def __init__(
        self,
        *,
        temporal_layers: int = 4,
        temporal_heads: int = 8,
        csc_weight: float = 0.5,
        pool_temperature: float = POOL_TEMPERATURE,
        mask_padding: bool = False,
        **base,
    ) -> None:
        super().__init__(**base)
        self.csc_weight, self.pool_temperature, self.mask_padding = csc_weight, pool_temperature, mask_padding
        self.temporal = SeqTransf(self.width, layers=temporal_layers, heads=temporal_heads)
        self.head = FourScores(self.width, self.max_words, self.max_words)

    def encode_text(self, batch: FeatureBatch) -> Rep:
        sentence, words = normalize(batch["text_eot"]), normalize(batch["text_tokens"])  # [A, D], [A, L, D]
        return {
            "sentence_raw": batch["text_eot"],  # [A, D]: GLIM queries
            "words_raw": batch["text_tokens"],  # [A, L, D]
            "sentence": sentence,
            "sentence_g": self.head.project_sentence(sentence),  # [A, D]
            "words": words,
            "words_loc": self.head.project_words(words),  # [A, L, D]
            "word_mask": batch["text_mask"],  # [A, L]
        }

    def encode_video(self, batch: FeatureBatch) -> Rep:
        mask = batch["video_mask"]  # [B, F]
        return self.video_features(self.temporal(batch["video_frames"], mask), mask)

    def video_features(self, frames: Tensor, mask: Tensor) -> Rep:
        """The video rep from seqTransf outputs ``[B, F, D]`` (unnormalised) and the frame mask ``[B, F]``."""
        return {"frames": frames, "gram": frames @ frames.transpose(1, 2), "frame_mask": mask}  # gram [B, F, F]

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        return self.logit_scale(self.score_parts(text, video).mean(0))  # [A, B]

    def training_forward(self, text: Rep, video: Rep) -> dict[str, Tensor]:
        return glccl_losses(self.logit_scale(self.score_parts(text, video)), self.csc_weight)

    def loss(self, sim: Tensor, text: Rep, video: Rep) -> dict[str, Tensor]:
        """InfoNCE on ``sim`` + CSC on the four scores, recomputed (``training_forward`` computes them once)."""
        csc = csc_loss(self.logit_scale(self.score_parts(text, video)))
        infonce = symmetric_infonce(sim)
        return {"loss": infonce + self.csc_weight * csc, "infonce": infonce, "csc": csc}

    def score_parts(self, text: Rep, video: Rep) -> Tensor:
        """The four unscaled scores ``[4, A, B]`` (video-sentence, video-word, sentence-frame, frame-word)."""
        frame_mask = video["frame_mask"] if self.mask_padding else None
        video_feat = guided_video(text["sentence_raw"], video["frames"], self.pool_temperature, frame_mask)
        weights = guided_frame_weights(text["words_raw"], video, self.pool_temperature, frame_mask)  # [A, B, L, F]
        video_sentence = torch.einsum("ad,abd->ab", text["sentence_g"], video_feat)  # [A, B]
        video_word = torch.einsum("atd,abd->abt", text["words"], video_feat)  # [A, B, L]
        sentence_frame = guided_frame_scores(text["sentence"][:, None], video["frames"], weights)[:, :, 0]  # [A, B, L]
        frame_word = guided_frame_scores(text["words_loc"], video["frames"], weights)  # [A, B, L, L]
        word_mask = text["word_mask"][:, None] if self.mask_padding else None  # [A, 1, L]: words and guided frames
        return self.head(video_sentence, video_word, sentence_frame, frame_word, word_mask, word_mask)


def guided_video(sentence: Tensor, frames: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """GLIM's video-level feature ``normalise(Pool(e_a, b))``: ``[A, D]`` x ``[B, F, D]`` -> ``[A, B, D]``.

    ``mask`` (``[B, F]``, optional) drops padded frames from the softmax; ``None`` keeps every slot.
    """
    weights = conditioned_weights(sentence, frames, temperature, mask, "none" if mask is None else "exclude")
    return normalize(pool(weights, frames))  # [A, B, D]


def guided_frame_weights(words: Tensor, video: Rep, temperature: float, mask: Tensor | None = None) -> Tensor:
    """Normalised GLIM weights ``[A, B, L, F]``: ``g_abu = sum_f w_abuf z_bf`` is the unit word-guided frame.

    Args:
        words: raw token features ``[A, L, D]`` (the guiding queries, one per slot).
        video: a rep with ``frames`` z ``[B, F, D]`` and their Gram matrices ``gram`` ``[B, F, F]``.
        temperature: GLIM's softmax temperature.
        mask: optional frame mask ``[B, F]`` (padded frames leave the softmax).
    """
    num_texts, num_words = words.shape[:2]
    mode = "none" if mask is None else "exclude"
    weights = conditioned_weights(words.flatten(0, 1), video["frames"], temperature, mask, mode)  # [A*L, B, F]
    weights = weights.unflatten(0, (num_texts, num_words)).transpose(1, 2)  # [A, B, L, F]
    sq_norm = (torch.einsum("abuf,bfg->abug", weights, video["gram"]) * weights).sum(-1)  # [A, B, L]
    return weights / sq_norm.clamp_min(1e-24).sqrt().unsqueeze(-1)  # same epsilon as ``normalize``


def guided_frame_scores(queries: Tensor, frames: Tensor, weights: Tensor) -> Tensor:
    """``q_at . g_abu``: queries ``[A, T, D]``, frames ``[B, F, D]``, weights ``[A, B, U, F]`` -> ``[A, B, T, U]``."""
    query_frame = torch.einsum("atd,bfd->abtf", queries, frames)  # [A, B, T, F]
    return query_frame @ weights.transpose(-1, -2)  # [A, B, T, U]


def csc_loss(scores: Tensor) -> Tensor:
    """Contrastive score consistency on the four scaled scores ``[4, B, B]`` (diagonal = positives).

    Mean variance (over the four scores) on positive pairs, divided by the off-diagonal variances summed and
    divided by B^2 (the official denominator), guarded by ``CSC_EPS`` (module docstring).
    """
    variance = scores.var(dim=0)  # [B, B]
    diagonal = torch.eye(variance.shape[0], dtype=torch.bool, device=variance.device)
    positive = variance.diagonal().mean()
    negative = variance.masked_fill(diagonal, 0.0).mean()
    guard = CSC_EPS * scores.square().mean()
    return positive / (negative + guard).clamp_min(torch.finfo(scores.dtype).tiny)


def glccl_losses(scores: Tensor, csc_weight: float) -> dict[str, Tensor]:
    """The GLCCL loss from the four scaled scores ``[4, B, B]``: InfoNCE on their mean + ``csc_weight`` x CSC."""
    infonce, csc = symmetric_infonce(scores.mean(0)), csc_loss(scores)
    return {"loss": infonce + csc_weight * csc, "infonce": infonce, "csc": csc}
