"""GLCCL: X-CLIP's four scores on text-guided visual features, plus a contrastive score-consistency loss.

Paper: Jing, Yang, Yang, "Text-Video Retrieval With Global-Local Contrastive Consistency Learning", arXiv
2605.17959 (CAC 2025). Reference code: github.com/JingXiaolun/GLCCL @abe7659 (``modules/modeling_glccl.py``,
``main_glccl.py``); its helper modules are X-CLIP's (github.com/xuguohai/X-CLIP @6b5344f). Spec:
``reference/glccl.md``. Only the abstract of the paper was available, so the official code is the reference.

Model (z = seqTransf outputs [B, F, D], unnormalised; e = sentence (EOT), h_u = token slot u, both unnormalised):
- GLIM (parameter-free): ``Pool(q, b) = sum_f softmax_f(q . z_bf / 5) z_bf``. The video-level feature is
  ``v_ab = normalise(Pool(e_a, b))`` ([A, B, D]); the L "frame-level" features are the word-guided
  ``g_abu = normalise(Pool(h_au, b))`` ([A, B, L, D]), so every frame axis of X-CLIP has length L here.
- The four X-CLIP scores (``tvr_convbench.methods.parts.aosm.FourScores``, every matrix identity-initialised, softmax
  temperature 0.01) on (t, w) = normalised (e, h) and (v, g); each is scaled by the logit scale and the
  similarity is their plain mean, in training and at inference.
- Loss: symmetric InfoNCE on the similarity + ``csc_weight`` (0.5, the README value; the official parser's
  ``--var_loss_weight`` defaults to 0.1) x CSC, where
  ``CSC = mean_i Var_k(S_k)_ii / (sum_{i != j} Var_k(S_k)_ij / B^2)`` over the four scaled scores, exactly
  as the official ``var_loss`` (B^2, not B^2 - B, in the denominator).
The harness gathers the raw per-item features (e, h, z) before ``training_forward``, as the official code
all-gathers before GLIM.

Computation (not a deviation: the values are the same up to float rounding): g is never materialised. With
``w'_abuf = softmax_f(h_au . z_bf / 5) / ||Pool(h_au, b)||`` and the squared norm from the per-video Gram
matrix (``a^T (z_b z_b^T) a``, cached in ``encode_video``), ``q . g_abu = sum_f w'_abuf (q . z_bf)`` for any
query q: text-token x frame GEMMs and F-sized contractions instead of [A, B, L, D] tensors (reference/glccl.md
section 9; the equality is tested). The official per-word Python loop becomes one batched softmax.
Evaluation lays the text x frame products out frame-major (``[F, B, A, L]``: the softmax over frames and the Gram
products run on long inner axes), scores the texts in cache-sized tiles, and, when 2F < L, folds the AOSM
matrices into the factors of the [L, L] logits (``GLCCL.aosm_pools``; tests/test_perf.py checks the fold).

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
"""

from __future__ import annotations

import torch
from torch import Tensor

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Losses, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.aosm import FourScores, pair_tile, rep_len, split_rep
from tvr_convbench.methods.parts.losses import symmetric_infonce
from tvr_convbench.methods.parts.pooling import conditioned_weights, pool
from tvr_convbench.methods.parts.temporal import SeqTransf

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
    """largest evaluation block (texts scored in cache-sized tiles; its memory is bounded in tests/test_glccl.py)"""

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
        self.csc_weight = csc_weight
        self.pool_temperature = pool_temperature
        self.mask_padding = mask_padding
        self.temporal = SeqTransf(self.width, layers=temporal_layers, heads=temporal_heads)
        self.head = FourScores(self.width, self.max_words, self.max_words)

    def encode_text(self, batch: FeatureBatch) -> Rep:
        raw = {"sentence_raw": batch["text_eot"], "words_raw": batch["text_tokens"]}  # [A, D], [A, L, D]: GLIM queries
        return {**raw, **self.head.text_rep(batch)}

    def encode_video(self, batch: FeatureBatch) -> Rep:
        mask = batch["video_mask"]  # [B, F]
        return self.video_features(self.temporal(batch["video_frames"], mask), mask)

    def video_features(self, frames: Tensor, mask: Tensor) -> Rep:
        """The video rep from seqTransf outputs ``[B, F, D]`` (unnormalised) and the frame mask ``[B, F]``."""
        return {"frames": frames, "gram": frames @ frames.transpose(1, 2), "frame_mask": mask}  # gram [B, F, F]

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        return self.logit_scale(self.score_parts(text, video).mean(0))  # [A, B]

    def training_forward(self, text: Rep, video: Rep) -> Losses:
        scores = self.logit_scale(self.score_parts(text, video))  # [4, B, B]
        return Losses(glccl_losses(scores, self.csc_weight), scores.mean(0))  # the mean is ``similarity``

    def loss(self, sim: Tensor, text: Rep, video: Rep) -> dict[str, Tensor]:
        """InfoNCE on ``sim`` + CSC on the four scores, recomputed (``training_forward`` computes them once)."""
        csc = csc_loss(self.logit_scale(self.score_parts(text, video)))
        infonce = symmetric_infonce(sim)
        return {"loss": infonce + self.csc_weight * csc, "infonce": infonce, "csc": csc}

    def score_parts(self, text: Rep, video: Rep) -> Tensor:
        """The four unscaled scores ``[4, A, B]`` (video-sentence, video-word, sentence-frame, frame-word).

        Without autograd the texts are scored in tiles (``pair_tile``) so the [pairs, L, L] temporaries stay in
        cache; every text's row is computed the same way in any tile.
        """
        if torch.is_grad_enabled():
            parts = self.score_tile(text, video)
        else:
            pair_elements = self.max_words * max(self.max_words, self.max_frames)  # [L, L] logits, [F, L] factors
            rows = pair_tile(rep_len(video), pair_elements, self.width, self.max_words)
            parts = [torch.cat(part) for part in zip(*(self.score_tile(t, video) for t in split_rep(text, rows)))]
        word_mask = text["word_mask"][:, None] if self.mask_padding else None  # [A, 1, L]: words and guided frames
        return self.head.combine(*parts, word_mask, word_mask)

    def score_tile(self, text: Rep, video: Rep) -> tuple[Tensor, ...]:
        """The inputs of ``FourScores.combine`` for one tile of texts: video-sentence ``[A, B]``, video-word,
        sentence-frame, and the frame-word matrix pooled along its guided frames and along its words (``[A, B, L]``
        each). Pair-level tensors are computed video-major, ``[B, A, ...]``."""
        frame_mask = video["frame_mask"] if self.mask_padding else None
        video_feat = guided_video(text["sentence_raw"], video["frames"], self.pool_temperature, frame_mask)
        video_sentence = torch.einsum("ad,abd->ab", text["sentence_g"], video_feat)  # [A, B]
        video_word = torch.einsum("atd,abd->abt", text["words"], video_feat)  # [A, B, L]
        weights = pair_factor(frame_major_weights(text["words_raw"], video, self.pool_temperature, frame_mask))
        sentence_frame = frame_major_dots(text["sentence"][:, None], video["frames"])  # [F, B, A, 1]
        sentence_frame = (pair_factor(sentence_frame).mT @ weights)[:, 0]  # [B A, L]
        queries = pair_factor(frame_major_dots(text["words_loc"] / self.head.temperature, video["frames"]))
        per_word, per_frame = self.aosm_pools(queries, weights, text["word_mask"] if self.mask_padding else None)
        num_texts, num_videos = video_sentence.shape
        text_major = lambda x: x.view(num_videos, num_texts, -1).transpose(0, 1)  # noqa: E731  [A, B, L]
        return video_sentence, video_word, text_major(sentence_frame), text_major(per_word), text_major(per_frame)

    def aosm_pools(self, queries: Tensor, weights: Tensor, word_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The word x guided-frame AOSM pools, ``([P, L], [P, L])`` (guided frames pooled, words pooled), of the logits
        ``x = q^T g`` per pair (``queries`` q, ``weights`` g: ``[P, F, L]``; ``word_mask`` ``[A, L]``; P = B x A).

        When 2F < L, M is folded into the factors instead of multiplying every softmax row:
        ``sum_j s_tj (x M^T)_tj = sum_f q_ft (s (g M^T)^T)_tf`` (and the same over words), 4 F L^2 multiply-adds per
        pair instead of 2 L^3, with no [P, L, L] tensor but the logits and the two softmaxes.
        """
        num_pairs, num_frames, num_words = queries.shape
        logits = queries.mT @ weights  # [P, L (words t), L (guided frames u)]
        pair_mask = None if word_mask is None else word_mask.repeat(num_pairs // word_mask.shape[0], 1)[:, None]
        t_mask, u_mask = (None, None) if pair_mask is None else (pair_mask.mT, pair_mask)  # [P, L, 1], [P, 1, L]
        frame, word = self.head.frame, self.head.word
        if 2 * num_frames >= num_words:
            return frame.pool_logits(logits, u_mask, dim=-1), word.pool_logits(logits, t_mask, dim=-2)
        masked_weights = weights if pair_mask is None else weights * pair_mask  # masked guided frames -> 0
        masked_queries = queries if pair_mask is None else queries * pair_mask  # masked words -> 0
        per_frame_row = frame.softmax(logits, u_mask, dim=-1) @ (masked_weights @ frame.weight.t()).mT  # [P, L, F]
        per_word = frame.temperature * (per_frame_row * queries.mT).sum(-1)  # [P, L]
        per_word_col = (masked_queries @ word.weight.t()) @ word.softmax(logits, t_mask, dim=-2)  # [P, F, L]
        per_frame = word.temperature * (per_word_col * weights).sum(1)  # [P, L]
        return per_word, per_frame


def guided_video(sentence: Tensor, frames: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """GLIM's video-level feature ``normalise(Pool(e_a, b))``: ``[A, D]`` x ``[B, F, D]`` -> ``[A, B, D]``.

    ``mask`` (``[B, F]``, optional) drops padded frames from the softmax; ``None`` keeps every slot.
    """
    weights = conditioned_weights(sentence, frames, temperature, mask, "none" if mask is None else "exclude")
    return normalize(pool(weights, frames))  # [A, B, D]


def frame_major_dots(queries: Tensor, frames: Tensor) -> Tensor:
    """``q_at . z_bf`` of queries ``[A, T, D]`` and frames ``[B, F, D]`` as ``[F, B, A, T]`` (one GEMM)."""
    (num_texts, num_queries, width), (num_videos, num_frames) = queries.shape, frames.shape[:2]
    frame_rows = frames.transpose(0, 1).reshape(-1, width)  # [F B, D]
    return (frame_rows @ queries.reshape(-1, width).t()).view(num_frames, num_videos, num_texts, num_queries)


def frame_major_weights(words: Tensor, video: Rep, temperature: float, mask: Tensor | None = None) -> Tensor:
    """``guided_frame_weights`` laid out frame-major, ``[F, B, A, L]`` (contiguous; the layout ``pair_factor`` and
    the softmax over frames want)."""
    logits = frame_major_dots(words / temperature, video["frames"])  # [F, B, A, L]
    if mask is not None:
        logits = logits.masked_fill(~mask.t()[:, :, None, None], float("-inf"))
    weights = logits.softmax(dim=0)  # [F, B, A, L]
    num_frames, num_videos = weights.shape[:2]
    per_video = weights.transpose(0, 1).reshape(num_videos, num_frames, -1)  # [B, F, A L] (a view)
    sq_norm = (torch.bmm(video["gram"], per_video) * per_video).sum(1)  # [B, A L]  w^T (z_b z_b^T) w
    return weights / sq_norm.clamp_min(1e-24).sqrt().view(1, *weights.shape[1:])  # same epsilon as ``normalize``


def guided_frame_weights(words: Tensor, video: Rep, temperature: float, mask: Tensor | None = None) -> Tensor:
    """Normalised GLIM weights ``[A, B, L, F]``: ``g_abu = sum_f w_abuf z_bf`` is the unit word-guided frame.

    A view of ``frame_major_weights`` (the layout the similarity computes in).

    Args:
        words: raw token features ``[A, L, D]`` (the guiding queries, one per slot).
        video: a rep with ``frames`` z ``[B, F, D]`` and their Gram matrices ``gram`` ``[B, F, F]``.
        temperature: GLIM's softmax temperature.
        mask: optional frame mask ``[B, F]`` (padded frames leave the softmax).
    """
    return frame_major_weights(words, video, temperature, mask).permute(2, 1, 3, 0)


def pair_factor(x: Tensor) -> Tensor:
    """A frame-major ``[F, B, A, T]`` tensor as per-pair matrices ``[B A, F, T]`` (video-major pairs, contiguous)."""
    num_frames, num_videos, num_texts = x.shape[:3]
    return x.reshape(num_frames, num_videos * num_texts, -1).transpose(0, 1).contiguous()


def guided_frame_scores(queries: Tensor, frames: Tensor, weights: Tensor) -> Tensor:
    """``q_at . g_abu``: queries ``[A, T, D]``, frames ``[B, F, D]``, weights ``[A, B, U, F]`` -> ``[A, B, T, U]``."""
    num_texts, num_videos = weights.shape[:2]
    frame_major = weights.permute(3, 1, 0, 2)  # [F, B, A, U]
    scores = pair_factor(frame_major_dots(queries, frames)).mT @ pair_factor(frame_major)  # [B A, T, U]
    return scores.view(num_videos, num_texts, *scores.shape[1:]).transpose(0, 1)


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
