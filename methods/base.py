"""The retrieval-method contract. Every method in ``methods/`` implements exactly this, nothing more.

A method turns backbone features into a text x video score matrix and a loss::

    text  = method.encode_text(batch)     # Rep: per-item tensors, dim 0 = texts   (independent per item)
    video = method.encode_video(batch)    # Rep: per-item tensors, dim 0 = videos  (independent per item)
    sim   = method.similarity(text, video)            # [Nt, Nv] logits (logit scale applied)
    parts = method.training_forward(text, video)      # Losses {"loss": total, "<part>": ...}, and
                                                      #   parts.similarity: the [B, B] logits they came from;
                                                      #   by default loss(similarity(text, video), text, video)

Batch keys (``FeatureBatch``, built by ``tvr_convbench.datasets`` + the backbone; masks are bool, True = real item)::

    text_tokens [B, L, D]  every token position (SOT, words, EOT, padding), unnormalised
    text_mask   [B, L]     True on SOT..EOT
    text_eot    [B, D]     the sentence (EOT) feature, unnormalised
    video_frames [B, F, D] per-frame CLS projections (padded slots hold the blank-frame feature), unnormalised
    video_mask  [B, F]     True on real frames (and on the patches of real frames)
    index       [B]        dataset index of the (paragraph, video) pair

Optional, present only for a method whose class sets ``needs_patches`` (the harness then asks the data module with
``request_patches()``; no other method pays for them)::

    video_patches [B, F, P, D] the patch tokens of every frame, projected like the CLS (through the vision tower's
                               final LayerNorm and the visual projection; P = 49 for ViT-B/32 at 224 px), in
                               patch order, unnormalised; the frame's CLS is ``video_frames``, its mask
                               ``video_mask`` (padded slots hold the blank frame's patch tokens)

Rules (what a method must not do): it never touches metrics, logging, data splits, model selection, the
optimizer or the clock; it never encodes a split itself. The harness (``tvr_convbench.bench``) encodes each split
once per evaluation, concatenates the reps, and calls ``similarity`` on text x video blocks, so ``similarity`` must
give the same numbers for a block as for the corresponding slice of the whole matrix. ``training_forward`` is the
one way the harness computes a training loss (the base version calls ``similarity`` and then ``loss``; a method
may override it to share work between the two, and may call ``loss`` from it). Before calling it the harness
gathers the reps of all processes (with gradients), so every loss sees the global batch.

Why a ``LightningModule`` (and not a plain ``nn.Module``): methods get Lightning's device/dtype handling and
``all_gather``, and a stock ``lightning.Trainer`` fits one paired with its backbone through
``tvr_convbench.bench.lightning.RetrievalModule`` (the same numbers as the harness loop, tests/test_lightning.py).
A method is not fitted on its own (it has no ``training_step``): what trains is the pairing of a backbone with a
method. The harness loop is ``tvr_convbench.bench.trainer`` (on ``lightning.Fabric``), because the protocol needs
things the stock ``Trainer`` loop does not give cheaply: validation at step 0, a training clock paused during
evaluation, and bit-exact mid-epoch resume.
"""

from __future__ import annotations

import abc
import enum
import math
import warnings
from typing import ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from tvr_convbench.methods.parts.losses import symmetric_infonce

Rep = dict[str, Tensor]
FeatureBatch = dict[str, Tensor]


class Losses(dict):
    """A training loss and its named parts (``{"loss": total, "<part>": ...}``), together with the in-batch
    similarity ``[B, B]`` (row i = text i, pair i positive) they were computed from, so the harness can log the
    in-batch recall of every step without another forward."""

    def __init__(self, parts: dict[str, Tensor], similarity: Tensor) -> None:
        super().__init__(parts)
        self.similarity = similarity


class CostClass(enum.StrEnum):
    """How the score of one (text, video) pair is computed at inference."""

    INDEPENDENT = "independent"
    """dot product of cached per-item embeddings: one GEMM for the whole matrix"""
    PARTLY_PAIRWISE = "partly-pairwise"
    """part of the score factorises into per-item embeddings, another part needs per-pair work"""
    PAIRWISE = "pairwise"
    """every pair needs its own non-factorisable computation"""


class LogitScale(nn.Module):
    """CLIP's temperature: ``logits = exp(log_scale) * scores``.

    Fixed at ``value`` by default: in every official recipe the CLIP ``logit_scale`` trains at lr 1e-7 and is
    clamped at ln 100, so it stays at 100. ``learnable=True`` makes it a parameter (in the backbone lr group,
    clamped to <= ln ``value`` after every step by ``clamp_``).
    """

    def __init__(self, value: float = 100.0, learnable: bool = False) -> None:
        super().__init__()
        self.max_log = math.log(value)
        log_scale = torch.tensor(self.max_log)
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, scores: Tensor) -> Tensor:
        return self.log_scale.exp() * scores

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(max=self.max_log)


class RetrievalMethod(L.LightningModule, abc.ABC):
    """Abstract base of every registered method. Subclasses register with ``@register_method(name)``.

    Args:
        width: feature width D of the backbone (512 for CLIP ViT-B/32).
        max_frames: F, frame slots per video (after padding).
        max_words: L, token slots per text (after padding).
        logit_scale: the fixed (initial) logit scale.
        learnable_logit_scale: train the logit scale (at the backbone learning rate, clamped).
    """

    cost_class: ClassVar[CostClass]
    needs_patches: ClassVar[bool] = False
    """True for a method that works below the frame level: only then does the harness load ``video_patches``"""
    token_shift_layers: int = 0
    """> 0 asks a live-CLIP backbone for TS2-Net's token shift in its last ``token_shift_layers`` vision blocks (the
    harness passes it to ``Backbone.enable_token_shift``; a backbone without a vision tower cannot have it)"""
    max_eval_block: ClassVar[int] = 1024
    """largest text/video block the harness should feed ``similarity`` (bounds evaluation memory)"""
    method_name: str = "?"
    """the registered name this instance was built under (set by ``tvr_convbench.methods.build_method``)"""

    def __init__(
        self,
        *,
        width: int,
        max_frames: int,
        max_words: int,
        logit_scale: float = 100.0,
        learnable_logit_scale: bool = False,
    ) -> None:
        super().__init__()
        for key, value in (("width", width), ("max_frames", max_frames), ("max_words", max_words)):
            if value <= 0:
                raise ValueError(f"{type(self).__name__}: {key} must be positive, got {value}")
        self.width = width
        self.max_frames = max_frames
        self.max_words = max_words
        self.logit_scale = LogitScale(logit_scale, learnable_logit_scale)

    # --- the contract -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_text(self, batch: FeatureBatch) -> Rep:
        """Per-text representation; every tensor has the texts on dim 0."""

    @abc.abstractmethod
    def encode_video(self, batch: FeatureBatch) -> Rep:
        """Per-video representation; every tensor has the videos on dim 0."""

    @abc.abstractmethod
    def similarity(self, text: Rep, video: Rep) -> Tensor:
        """Logits ``[Nt, Nv]`` (the logit scale applied): row i = text i, column j = video j."""

    def loss(self, sim: Tensor, text: Rep, video: Rep) -> dict[str, Tensor]:
        """Training loss on a square in-batch matrix (pair i is the positive of row/column i).

        Returns ``{"loss": total, ...named parts}``; the harness logs the total as ``loss`` and every part as
        ``loss/<part>``.
        """
        return {"loss": symmetric_infonce(sim)}

    def training_forward(self, text: Rep, video: Rep) -> Losses:
        """Similarity + loss for one (gathered) training batch: the harness's only way to a training loss.

        Override only to share work between the two (the result must equal ``loss(similarity(text, video), ...)``,
        and its ``similarity`` the matrix ``similarity`` gives).
        """
        sim = self.similarity(text, video)  # [B, B]
        return Losses(self.loss(sim, text, video), sim)

    # --- harness hooks ------------------------------------------------------------------------------------
    def forward(self, batch: FeatureBatch) -> tuple[Rep, Rep]:
        """Encode both modalities (called by the harness's backbone + method module, the unit a DDP wrapper sees)."""
        return self.encode_text(batch), self.encode_video(batch)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups of the method's own parameters.

        Follows the CLIP4Clip-family rule: decay everything except biases (LayerNorm weights do decay). Each
        group carries ``role``: ``"head"`` trains at the new-module lr, ``"backbone"`` at the backbone lr (the
        learnable logit scale lives there, as CLIP's ``logit_scale`` does).
        """
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            role = "backbone" if name.startswith("logit_scale.") else "head"
            groups.setdefault((role, name.endswith("bias")), []).append(param)
        return [
            {"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "role": role}
            for (role, no_decay), params in sorted(groups.items())
        ]

    def after_optimizer_step(self) -> None:
        """Called by the harness after every optimizer step (clamps the logit scale)."""
        self.logit_scale.clamp_()

    @property
    def needs_reference_texts(self) -> bool:
        """True when evaluation post-processes with the training split's encoded texts (``calibrate_videos``;
        UCoFiA's opt-in SK-norm). The protocol's main numbers use no post-processing."""
        return False

    def calibrate_videos(self, video: Rep, reference_text: Rep) -> Rep:
        """The evaluated videos' reps adjusted with reference (training-split) text reps; identity by default."""
        return video

    @classmethod
    def regime_note(cls, regime: str) -> str | None:
        """One line on what this method cannot do in backbone ``regime`` (``frozen``/``partial``/``full``), for the
        report's method table; ``None`` when it runs as specified."""
        return None

    def init_from_clip_text(self, text_model: nn.Module) -> None:
        """Initialise temporal modules from a CLIP text tower, as the CLIP4Clip family does.

        Real CLIP checkpoints have a text width equal to their projection width (512 for ViT-B/32). A toy config
        whose widths differ cannot be copied: the temporal modules then keep their CLIP-style random init, with a
        warning.
        """
        from tvr_convbench.methods.parts.temporal import SeqTransf

        text_width = text_model.embeddings.position_embedding.weight.shape[1]
        for module in self.modules():
            if not isinstance(module, SeqTransf):
                continue
            if text_width != self.width:
                warnings.warn(
                    f"{type(self).__name__}: CLIP text width {text_width} != feature width {self.width}; "
                    "seqTransf keeps its random init instead of CLIP text blocks 0-3",
                    stacklevel=2,
                )
                return
            module.init_from_clip_text(text_model)


def normalize(x: Tensor, dim: int = -1, eps: float = 1e-12) -> Tensor:
    """L2-normalise along ``dim`` (the same epsilon as ``torch.nn.functional.normalize``)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)
