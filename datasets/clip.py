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
- Patch tokens (``patches=True``, for a method that ``needs_patches``): the vision tower's every output token goes
  through ``post_layernorm`` and ``visual_projection``, as the official TS2-Net / UCoFiA ``encode_image`` does; the
  CLS row is the frame feature and the other rows are ``video_patches [B, F, P, D]``, from the same forward.
- Token shift (``enable_token_shift(layers)``, TS2-Net's, also used by UCoFiA; reference yuqi657/ts2_net @1d9d4d5
  ``modules/until_module.py::PatchShiftModule``, spec 2.5 and 2.6a T6): in the last ``layers`` vision blocks the
  output of ``layer_norm1`` (the self-attention's q = k = v) is shifted along each video's frame axis before the
  attention; the residual stream is not. With fold = T // 7 for T tokens per frame (50 // 7 = 7), the whole token
  vectors at positions 1, 1 + fold, ... come from frame t - 1 and those at 4, 4 + fold, ... from frame t + 1 (the
  official hard-coded 1 + 3; where both apply the t + 1 one wins, as in the official order); the first frame keeps
  its own tokens at the first set and the last frame at the second (no zero fill); the CLS is never shifted; padded
  frames take part. The official code runs the tower on all B x F frames; here padded slots are still encoded once
  per batch, plus the first ``layers`` padded slots of each video, whose shifted tokens differ from the blank's:
  with ``layers`` shifted blocks a slot's output depends only on the slots within ``layers`` frames of it, so every
  later padded slot equals the blank frame's encoding exactly (the same function, ``tests/test_patches.py``).
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


def encode_frame_tokens(model: nn.Module, pixels: Tensor) -> Tensor:
    """Every projected output token ``[N, T, D]`` (row 0 the CLS, then the patches) of images ``[N, 3, S, S]``."""
    hidden = model.vision_model(pixel_values=pixels).last_hidden_state  # [N, T, W], before post_layernorm
    return model.visual_projection(model.vision_model.post_layernorm(hidden))  # [N, T, D]


SHIFT_DIVISOR = 7
"""the official ``n_div``: fold = tokens per frame // 7"""
SHIFT_BACK_OFFSET = 3
"""the official offset of the t + 1 positions after the t - 1 ones (``1 + 3``)"""


def shift_tokens(x: Tensor, previous: Tensor, following: Tensor) -> Tensor:
    """TS2-Net's token shift of ``x [N, T, W]`` (one row per frame): rows ``previous[n]`` / ``following[n]`` are
    frame n's neighbours t - 1 / t + 1 (itself at a video's ends); module docstring."""
    tokens = x.shape[1]
    fold = tokens // SHIFT_DIVISOR
    if fold < 1:
        raise ValueError(f"token shift: {tokens} tokens per frame, fewer than {SHIFT_DIVISOR}")
    from_previous = torch.arange(1, tokens, fold, device=x.device)  # 1, 1 + fold, ...
    from_following = torch.arange(1 + SHIFT_BACK_OFFSET, tokens, fold, device=x.device)  # 4, 4 + fold, ...
    out = x.clone()
    out[:, from_previous] = x[previous[:, None], from_previous[None]]  # [N, |prev|, W]
    out[:, from_following] = x[following[:, None], from_following[None]]  # [N, |next|, W]
    return out


class TokenShift:
    """A forward hook on a vision block's ``layer_norm1``: shifts its output when ``neighbours`` (the t - 1 and t + 1
    row of every encoded frame, set by ``ClipBackbone`` around each video forward) is set, else passes it on."""

    def __init__(self) -> None:
        self.neighbours: tuple[Tensor, Tensor] | None = None

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        if self.neighbours is None:
            return output
        return shift_tokens(output, *self.neighbours)


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
        patches: also return ``video_patches [B, F, P, D]`` (every projected patch token, same forward).
    """

    def __init__(
        self, model: nn.Module, *, regime: Regime = "frozen", trainable_blocks: int = 2, patches: bool = False
    ) -> None:
        super().__init__()
        if regime not in REGIMES:
            raise DataError("clip", f"unknown regime {regime!r} (one of {', '.join(REGIMES)})", field="regime")
        self.clip = model
        self.regime = regime
        self.patches = patches
        self.shift = TokenShift()
        self.shift_layers = 0
        """vision blocks (the last ones) with the token shift installed (``enable_token_shift``)"""
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

    @property
    def num_patches(self) -> int:
        """P, patch tokens per frame (49 for ViT-B/32 at 224 px)."""
        vision = self.clip.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    def enable_token_shift(self, layers: int) -> bool:
        """Install the token shift (module docstring) in the last ``layers`` vision blocks; True."""
        blocks = self.clip.vision_model.encoder.layers
        if not 0 < layers <= len(blocks) or self.shift_layers not in (0, layers):
            problem = f"must be in 1..{len(blocks)} (installed: {self.shift_layers or 'none'}), got {layers}"
            raise DataError("clip", problem, field="token_shift_layers")
        if not self.shift_layers:
            for block in blocks[len(blocks) - layers :]:
                block.layer_norm1.register_forward_hook(self.shift)
        self.shift_layers = layers
        return True

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens, eot = encode_text(self.clip, batch["text_ids"], batch["text_mask"])
        out = {"text_tokens": tokens, "text_mask": batch["text_mask"], "text_eot": eot}
        if self.patches:
            video = self.encode_video_tokens(batch["pixels"], batch["video_mask"])  # [B, F, 1 + P, D]
            out.update(video_frames=video[:, :, 0], video_patches=video[:, :, 1:])
        else:
            out["video_frames"] = self.encode_video(batch["pixels"], batch["video_mask"])
        return {**out, "video_mask": batch["video_mask"], "index": batch["index"]}

    def encode_video(self, pixels: Tensor, mask: Tensor) -> Tensor:
        """uint8 real frames ``[N, 3, S, S]`` + mask ``[B, F]`` -> frame features ``[B, F, D]`` (blank in pads)."""
        return self._encode_slots(pixels, mask, encode_frames)

    def encode_video_tokens(self, pixels: Tensor, mask: Tensor) -> Tensor:
        """As ``encode_video``, every projected token: ``[B, F, 1 + P, D]`` (the CLS first)."""
        return self._encode_slots(pixels, mask, encode_frame_tokens)

    def _encode_slots(self, pixels: Tensor, mask: Tensor, encode) -> Tensor:  # noqa: ANN001 - encode_frame*
        """Encode the real frames, the padded slots the token shift reaches, and one blank; fill the [B, F] grid."""
        if int(mask.sum()) != len(pixels):
            raise ValueError(f"ClipBackbone: {len(pixels)} frames for a mask with {int(mask.sum())} real slots")
        extra, slots, previous, following = slot_plan(mask, self.shift_layers)
        images = normalize_pixels(pixels)  # [N, 3, S, S]
        blanks = images.new_zeros((extra + 1, *images.shape[1:]))  # all-zero normalised images
        self.shift.neighbours = (previous, following) if self.shift_layers else None
        try:
            features = encode(self.clip, torch.cat([images, blanks]))  # [N + extra + 1, ...]
        finally:
            self.shift.neighbours = None
        return features[slots].view(*mask.shape, *features.shape[1:])  # [B, F, ...]

    def blank_frame(self) -> Tensor:
        """The feature of the all-zero normalised image ``[D]``."""
        size = self.image_size
        zeros = torch.zeros(1, 3, size, size, device=self.clip.visual_projection.weight.device)
        return encode_frames(self.clip, zeros)[0]


def slot_plan(mask: Tensor, pads: int) -> tuple[int, Tensor, Tensor, Tensor]:
    """How the ``[B, F]`` slots of a batch are encoded: (``extra``, ``slots [B F]``, ``previous``, ``following``).

    The encoded images are the N real frames (video after video), then the first ``pads`` padded slots of every
    video (``extra`` in all), then one blank frame; ``slots`` gives each slot's image (every other padded slot
    reads the blank), ``previous`` / ``following`` each image's t - 1 / t + 1 image (itself at a video's ends, the
    blank's are the blank).
    """
    videos, frames = mask.shape
    position = torch.arange(frames, device=mask.device)[None]  # [1, F]
    extra = ~mask & (position < mask.sum(1, keepdim=True) + pads)  # [B, F]: padded slots encoded on their own
    real, extra_count = int(mask.sum()), int(extra.sum())
    blank = real + extra_count
    slots = torch.full((videos, frames), blank, dtype=torch.long, device=mask.device)
    slots[mask] = torch.arange(real, device=mask.device)
    slots[extra] = torch.arange(real, blank, device=mask.device)
    own = mask | extra
    neighbours = []
    for grid in (torch.cat([slots[:, :1], slots[:, :-1]], 1), torch.cat([slots[:, 1:], slots[:, -1:]], 1)):
        of_image = torch.full((blank + 1,), blank, dtype=torch.long, device=mask.device)
        of_image[slots[own]] = grid[own]
        neighbours.append(of_image)
    return extra_count, slots.flatten(), *neighbours
