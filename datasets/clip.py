"""CLIP through ``transformers``: loading, tokenisation, token / sentence / frame features, and ``ClipBackbone``.

Spec: ``reference/baselines-and-didemo.md`` 1.1 (the CLIP4Clip family's use of OpenAI CLIP; reference code
ArrowLuo/CLIP4Clip @508ffa3 ``modules/module_clip.py``, ``modules/modeling.py``,
``dataloaders/dataloader_didemo_retrieval.py``), here on ``transformers.CLIPModel`` (a local folder or a hub id).

- Text: SOT + BPE tokens truncated to ``max_words - 2`` + EOT, right-padded with id 0; mask True on SOT..EOT. The
  text tower runs with its causal mask only (no padding mask), as CLIP's ``encode_text`` does, so pad positions see
  the real tokens before them and EOT never sees a pad. Token features = ``text_projection(final_layer_norm(h))`` at
  every position; the sentence feature is the row at EOT (the last True of the mask, which is where the reference's
  argmax of the ids points).
- Frames: ``visual_projection(post_layernorm(CLS))`` per frame (``get_image_features``). Padded frame slots hold the
  encoding of an all-zero *normalised* image, the blank frame the official loaders feed CLIP; ``ClipBackbone``
  encodes that blank once per batch and broadcasts it to every padded slot (the same function of the same input,
  its gradient the sum over the slots; about half the frames on DiDeMo are padding).
- Regimes: ``frozen`` (nothing trains), ``partial`` (the last ``trainable_blocks`` blocks of each tower plus the
  final norms and both projections), ``full`` (every parameter except CLIP's own ``logit_scale``, which the methods
  replace with theirs). All at the backbone learning rate (``Backbone.param_groups``: role ``backbone``).

Deviations: (1) the tokenizer is ``transformers.CLIPTokenizer`` (NFC, whitespace collapse, lowercase, CLIP's split
regex, byte-level BPE) after ``html.unescape`` twice; OpenAI's ``basic_clean`` also runs ``ftfy.fix_text``, which is
not available here, so text with mojibake can tokenise differently. (2) The reference casts CLIP's conv / linear /
attention weights to fp16 (``convert_weights(self.clip)`` in ``modeling.py``); CLIP runs in float32 here (the store
keeps float16 features).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from tvr_convbench.core.errors import DataError, one_line
from tvr_convbench.datasets.base import Backbone
from tvr_convbench.datasets.video import normalize_pixels

Regime = Literal["frozen", "partial", "full"]
REGIMES = ("frozen", "partial", "full")


class ClipLoadError(DataError):
    """A CLIP checkpoint or tokenizer that cannot be loaded or used."""


def load_clip(source: str | Path):  # noqa: ANN201 - (CLIPModel, CLIPTokenizer); transformers is imported lazily
    """Load ``CLIPModel`` + ``CLIPTokenizer`` from a local folder or a hub id, in eval mode, float32."""
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    if str(source).startswith(("/", ".", "~")) and not Path(source).expanduser().is_dir():
        raise ClipLoadError(source, "no such folder (give a CLIP checkpoint folder or a hub id)")
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar on stderr
    try:
        model = CLIPModel.from_pretrained(str(source), dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, KeyError) as exc:
        raise ClipLoadError(source, f"cannot load a CLIP model + tokenizer: {one_line(exc)}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    for token in ("bos_token_id", "eos_token_id"):
        if getattr(tokenizer, token) is None:
            raise ClipLoadError(source, "the tokenizer has no such token", field=token)
    return model.eval(), tokenizer


def checkpoint_hash(model: nn.Module, tokenizer) -> str:  # noqa: ANN001 - a transformers tokenizer
    """sha256 over every state-dict tensor (name, dtype, shape, bytes, sorted by name) and the tokenizer's
    serialisation: the identity of the weights and vocabulary actually used, wherever they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    digest.update(tokenizer.backend_tokenizer.to_str().encode())
    return digest.hexdigest()


def tokenize(tokenizer, texts: Sequence[str], max_words: int) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """Token ids ``[N, max_words]`` (SOT + BPE[: max_words - 2] + EOT, zero-padded) and the mask (True on SOT..EOT)."""
    if max_words < 3:
        raise ValueError(f"tokenize: max_words must be >= 3, got {max_words}")
    clean = [html.unescape(html.unescape(t)).strip() for t in texts]
    encoded = tokenizer(clean, add_special_tokens=False)["input_ids"]
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for row, bpe in enumerate(encoded):
        seq = [tokenizer.bos_token_id, *bpe[: max_words - 2], tokenizer.eos_token_id]
        ids[row, : len(seq)] = torch.tensor(seq)
        lengths[row] = len(seq)
    mask = torch.arange(max_words)[None] < lengths[:, None]  # [N, L]
    return ids, mask


def encode_text(model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Projected token features ``[B, L, D]`` (every position) and the EOT feature ``[B, D]``."""
    hidden = model.text_model(input_ids=ids).last_hidden_state  # [B, L, W], after final_layer_norm
    tokens = model.text_projection(hidden)  # [B, L, D]
    eot = tokens[torch.arange(len(ids), device=ids.device), mask.sum(1) - 1]  # [B, D]
    return tokens, eot


def encode_frames(model: nn.Module, pixels: Tensor) -> Tensor:
    """Projected CLS features ``[N, D]`` of normalised images ``[N, 3, S, S]``."""
    pooled = model.vision_model(pixel_values=pixels).pooler_output  # [N, W], post_layernorm(CLS)
    return model.visual_projection(pooled)  # [N, D]


def trainable_prefixes(model: nn.Module, regime: Regime, blocks: int) -> tuple[str, ...]:
    """Parameter-name prefixes that train in ``regime`` (empty for ``frozen``, ``""`` = everything)."""
    if regime == "frozen":
        return ()
    if regime == "full":
        return ("text_model.", "vision_model.", "text_projection.", "visual_projection.")
    text_layers = len(model.text_model.encoder.layers)
    vision_layers = len(model.vision_model.encoder.layers)
    if not 0 <= blocks <= min(text_layers, vision_layers):
        raise DataError(
            "clip", f"must be in 0..{min(text_layers, vision_layers)}, got {blocks}", field="trainable_blocks"
        )
    last_text = tuple(f"text_model.encoder.layers.{i}." for i in range(text_layers - blocks, text_layers))
    last_vision = tuple(f"vision_model.encoder.layers.{i}." for i in range(vision_layers - blocks, vision_layers))
    heads = ("text_model.final_layer_norm.", "vision_model.post_layernorm.", "text_projection.", "visual_projection.")
    return last_text + last_vision + heads


class ClipBackbone(Backbone):
    """Raw batch -> ``FeatureBatch`` through CLIP.

    The raw batch (``datasets.didemo_module``): ``text_ids`` [B, L] long, ``text_mask`` [B, L] bool, ``pixels``
    [N, 3, S, S] uint8 (the real frames of the batch, video after video), ``video_mask`` [B, F] bool, ``index`` [B].

    Args:
        model: a ``transformers.CLIPModel`` (owned by the backbone from now on).
        regime: ``frozen``, ``partial`` or ``full`` (module docstring).
        trainable_blocks: k, the last blocks of each tower that train in ``partial``.
    """

    def __init__(self, model: nn.Module, *, regime: Regime = "frozen", trainable_blocks: int = 2) -> None:
        super().__init__()
        if regime not in REGIMES:
            raise DataError("clip", f"unknown regime {regime!r} (one of {', '.join(REGIMES)})", field="regime")
        self.clip = model
        self.regime = regime
        prefixes = trainable_prefixes(model, regime, trainable_blocks)
        for name, param in model.named_parameters():
            param.requires_grad_(bool(prefixes) and name.startswith(prefixes))

    @property
    def text_model(self) -> nn.Module:  # type: ignore[override]
        return self.clip.text_model

    @property
    def width(self) -> int:
        return self.clip.config.projection_dim

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens, eot = encode_text(self.clip, batch["text_ids"], batch["text_mask"])
        return {
            "text_tokens": tokens,
            "text_mask": batch["text_mask"],
            "text_eot": eot,
            "video_frames": self.encode_video(batch["pixels"], batch["video_mask"]),
            "video_mask": batch["video_mask"],
            "index": batch["index"],
        }

    def encode_video(self, pixels: Tensor, mask: Tensor) -> Tensor:
        """uint8 real frames ``[N, 3, S, S]`` + mask ``[B, F]`` -> frame features ``[B, F, D]`` (blank in pads)."""
        if int(mask.sum()) != len(pixels):
            raise ValueError(f"ClipBackbone: {len(pixels)} frames for a mask with {int(mask.sum())} real slots")
        images = normalize_pixels(pixels)  # [N, 3, S, S]
        blank = torch.zeros_like(images[:1])  # [1, 3, S, S]: an all-zero normalised image
        features = encode_frames(self.clip, torch.cat([images, blank]))  # [N + 1, D]
        slots = features[-1].expand(mask.numel(), features.shape[-1])  # [B * F, D]
        slots = slots.index_put((mask.flatten().nonzero().squeeze(1),), features[:-1])  # [B * F, D]
        return slots.view(*mask.shape, -1)  # [B, F, D]

    def blank_frame(self) -> Tensor:
        """The feature of the all-zero normalised image ``[D]``."""
        size = self.image_size
        zeros = torch.zeros(1, 3, size, size, device=self.clip.visual_projection.weight.device)
        return encode_frames(self.clip, zeros)[0]
