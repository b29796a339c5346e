"""The proxy's knobs, defined once: the fields of ``ProxySettings`` are the ``data:`` keys of a proxy config (the
data module adds only ``regime``, ``adapter`` and ``cache_dir``), with their types and defaults.

``key()`` hashes the settings (and the annotation file's bytes, and ``GENERATOR_VERSION``) into the name of the
feature cache; bump the version whenever the generator's output changes for the same settings. The patch-token knobs
(``PATCH_KNOBS``) change only the patch tokens, so they are left out of ``key()`` and hashed, with
``PATCH_GENERATOR_VERSION``, into ``patch_key()``, the name of the patch cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tvr_convbench.core.errors import UnknownNameError
from tvr_convbench.core.registry import suggest
from tvr_convbench.datasets.proxy.annotations import FREQUENT_CONTENT, FUNCTION_WORDS

GENERATOR_VERSION = 2
PATCH_GENERATOR_VERSION = 1
"""bump whenever the patch tokens change for the same settings"""
PATCH_KNOBS = ("patches", "patch_noise")
"""knobs that only the patch tokens read (not part of the frame/text feature cache's key)"""
POSITIVE = (
    "train_videos",
    "val_videos",
    "test_videos",
    "width",
    "frames_per_segment",
    "max_frames",
    "vocab_size",
    "patches",
)


@dataclass(frozen=True)
class ProxySettings:
    """Every knob of the proxy (the ``data:`` section of a config minus the module-only fields)."""

    seed: int = 0
    """seed of the generator (the features are a pure function of the settings)"""
    train_videos: int = 4000
    """videos in the train split"""
    val_videos: int = 500
    """videos in the val split"""
    test_videos: int = 500
    """videos in the test split"""
    width: int = 64
    """feature width D of frames, tokens and sentences"""
    frames_per_segment: int = 1
    """frames rendered per five-second segment"""
    max_frames: int = 8
    """frame slots F per video (real frames beyond F are cut, missing ones hold the blank frame)"""
    max_words: int = 40
    """token slots L per paragraph: SOT, up to L - 2 words, EOT, pads"""
    vocab_size: int = 3000
    """words in the procedural vocabulary (function words included; a real annotation file brings its own)"""
    alignment: float = 0.8
    """cosine of the rotation between a concept and its visual view (the domain shift adaptation can undo)"""
    view_noise: float = 0.3
    """noise of each word's text and visual view around its concept"""
    image_mean: float = 0.5
    """weight of the modality-wide image mean direction in every frame (CLIP's modality gap)"""
    text_mean: float = 0.6
    """weight of the modality-wide text mean direction in every token and sentence"""
    scene: float = 0.6
    """weight of the video's scene (a shared scene type plus per-video variation) in its frames"""
    num_scenes: int = 40
    """shared scene types"""
    content: float = 0.5
    """weight of the persistent content (the paragraph's objects that stay in view) in every frame"""
    persistence: float = 0.4
    """probability that a distinct content word of a paragraph is persistent content"""
    grounded: float = 0.8
    """weight of the words of the descriptions grounded at a frame's segment"""
    distractors: int = 3
    """undescribed content words whose visual views appear in each segment"""
    distractor: float = 0.6
    """weight of the distractor content in a segment's frames"""
    noise: float = 0.6
    """weight of the AR(1) temporally correlated frame noise"""
    noise_corr: float = 0.7
    """AR(1) correlation of the frame noise between consecutive frames"""
    context_mix: float = 0.3
    """weight of the causal running context mixed into each word's token"""
    token_noise: float = 0.3
    """noise weight of each token and of the sentence (EOT) feature"""
    frame_norm: float = 10.0
    """norm of every frame feature"""
    text_norm: float = 8.0
    """norm of every token and sentence feature"""
    patches: int = 16
    """patch tokens P per frame, for methods that work below the frame level (ViT-B/32 has 49)"""
    patch_noise: float = 1.0
    """weight of each patch token's own noise (a patch holds at most a few words, on the frame's background)"""
    annotations: str = ""
    """a real DiDeMo annotation JSON to take paragraphs and moments from ("" = procedural); its videos fill val,
    then test, then train"""

    @classmethod
    def from_knobs(cls, knobs: dict[str, Any]) -> ProxySettings:
        """Settings from keyword knobs; an unknown name raises ``UnknownNameError`` with close matches."""
        names = [f.name for f in fields(cls)]
        for key in knobs:
            if key not in names:
                raise UnknownNameError(f"data: unknown key {key!r}{suggest(key, names)} (valid: {', '.join(names)})")
        return cls(**knobs)

    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        """Every knob as a keyword-only ``inspect.Parameter`` with its resolved type and default."""
        hints = typing.get_type_hints(cls)
        kind = inspect.Parameter.KEYWORD_ONLY
        return {
            f.name: inspect.Parameter(f.name, kind, default=f.default, annotation=hints[f.name]) for f in fields(cls)
        }

    def key(self) -> str:
        """The frame/text feature cache's name: every knob but ``PATCH_KNOBS``, the annotation bytes, the version."""
        source = _file_digest(self.annotations) if self.annotations else ""
        knobs = {k: v for k, v in asdict(self).items() if k not in PATCH_KNOBS}
        blob = json.dumps({**knobs, "source": source, "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def patch_key(self) -> str:
        """The patch cache's name: the feature key, the patch knobs and ``PATCH_GENERATOR_VERSION``."""
        knobs = {k: getattr(self, k) for k in PATCH_KNOBS}
        blob = json.dumps({"features": self.key(), **knobs, "version": PATCH_GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first knob (``data.<knob>``) whose value the generator cannot use."""
        for key in POSITIVE:
            if getattr(self, key) <= 0:
                raise ValueError(f"data.{key} must be positive, got {getattr(self, key)}")
        if self.max_words < 4:
            raise ValueError(f"data.max_words must be at least 4 (SOT, a word, EOT), got {self.max_words}")
        if self.vocab_size <= len(FUNCTION_WORDS) + len(FREQUENT_CONTENT):
            raise ValueError(f"data.vocab_size must exceed {len(FUNCTION_WORDS) + len(FREQUENT_CONTENT)}")
        if not 0.0 < self.alignment <= 1.0:
            raise ValueError(f"data.alignment must be in (0, 1], got {self.alignment}")
        if self.patch_noise < 0.0:
            raise ValueError(f"data.patch_noise must be non-negative, got {self.patch_noise}")
        if not 0.0 <= self.noise_corr < 1.0:
            raise ValueError(f"data.noise_corr must be in [0, 1), got {self.noise_corr}")
        if self.annotations and not Path(self.annotations).is_file():
            raise ValueError(f"data.annotations: {self.annotations} is not a file")


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
