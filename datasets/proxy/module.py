"""The proxy as a data module: generation of the three splits, the on-disk feature cache, and
``ProxyDataModule`` (registered as ``proxy``), whose keywords are the ``ProxySettings`` knobs plus ``regime``,
``adapter`` and ``cache_dir``. Patch tokens are generated only for a method that asks (``request_patches``), from
their own random stream, and cached in a file of their own: the frame and token features and their cache stay
the same.

``describe()`` records the dataset-intrinsic difficulty figures of the val split (word view cosines,
sentence-frame cosines, real frames and tokens); the zero-shot meanP figures need a retrieval method and the
metrics, so the harness adds them (``tvr_convbench.bench.calibration.describe_data``).
"""

from __future__ import annotations

import inspect
import os
import typing
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tvr_convbench.core.files import atomic_write
from tvr_convbench.datasets.base import (
    SPLITS,
    Backbone,
    FeatureBackbone,
    FeatureDims,
    RetrievalDataModule,
    RetrievalSplit,
    register_dataset,
)
from tvr_convbench.datasets.proxy.annotations import (
    SEGMENTS_PER_VIDEO,
    Annotation,
    annotations_from_didemo,
    generate_annotations,
)
from tvr_convbench.datasets.proxy.settings import ProxySettings
from tvr_convbench.datasets.proxy.world import (
    PATCH_CHUNK,
    FrameParts,
    World,
    compose_frames,
    frame_parts,
    render_patches,
    render_text,
    word_view_cosines,
)
from tvr_convbench.datasets.proxy.worlds import world_knobs

REAL_FILE_ORDER = ("val", "test", "train")
"""the order a real annotation file's videos fill the splits (val and test first, the rest trains)"""


# --- generation, cache --------------------------------------------------------------------------------------
PATCH_STREAM = 0x9A7C
"""the patch tokens draw from ``default_rng([seed, PATCH_STREAM])``, a stream of their own: the frame and token
features (``default_rng(seed)``) are the same whether patches are generated or not"""


def generate(s: ProxySettings) -> dict[str, dict[str, Tensor]]:
    """All three splits' feature tensors (deterministic in ``s``)."""
    return _generate(s, patches=False)[0]


def generate_patches(s: ProxySettings) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
    """The features of ``generate(s)`` and every split's patch tokens ``[n, F, P, D]`` (float16)."""
    return _generate(s, patches=True)


def _generate(s: ProxySettings, patches: bool) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
    sizes = {"train": s.train_videos, "val": s.val_videos, "test": s.test_videos}
    anns, order = None, SPLITS
    if s.annotations:
        anns, s = _real_annotations(s)
        order = REAL_FILE_ORDER
        if sum(sizes.values()) > len(anns):
            raise ValueError(f"{s.annotations}: {len(anns)} videos, fewer than the {sum(sizes.values())} requested")
    check_memory(s, patches)
    rng = np.random.default_rng(s.seed)
    patch_rng = np.random.default_rng([s.seed, PATCH_STREAM])
    world = World.sample(rng, s)
    if anns is None:
        anns = generate_annotations(rng, sum(sizes.values()), s.vocab_size)
    out, patch_out, start = {}, {}, 0
    for split in order:
        split_anns = anns[start : start + sizes[split]]
        out[split], parts = _render_split(rng, world, split_anns, s)
        if patches:
            patch_out[split] = torch.from_numpy(render_patches(patch_rng, world, split_anns, parts, s))
        start += sizes[split]
    return out, patch_out


def generation_bytes(s: ProxySettings, patches: bool) -> int:
    """An upper estimate of the peak memory (bytes) of ``generate`` (``generate_patches``), before anything is
    allocated: the larger of its two phases, each a model fitted to measured peaks (tracemalloc, 1,200 to 16,500
    videos; D 64 and 256; 8 slots at 1 frame per segment and 32 at 5; 8 to 49 patches): 2-18% above them from
    1,000 videos on, more for smaller splits.

    - features: about six float64 ``[n, L, D]`` text arrays and the frame arrays, ``8 D (6 L + S fps + F)`` per
      video;
    - patches: every split's float16 patch tokens ``2 F P D``, the float32 features and the frame noise per video,
      plus about five float64 temporaries of one ``PATCH_CHUNK`` of videos.
    """
    videos = s.train_videos + s.val_videos + s.test_videos
    steps, D = SEGMENTS_PER_VIDEO * s.frames_per_segment, s.width
    features = videos * 8 * D * (6 * s.max_words + steps + s.max_frames)
    if not patches:
        return features
    per_video = 2 * s.max_frames * s.patches * D + 4 * D * (s.max_words + s.max_frames) + 8 * D * steps
    chunk = 5 * 8 * min(videos, PATCH_CHUNK) * min(s.max_frames, steps) * s.patches * D
    return max(features, videos * per_video + chunk)


def check_memory(s: ProxySettings, patches: bool, available: int | None = None) -> None:
    """Raise ``ValueError`` naming the split sizes when ``generation_bytes`` exceeds the memory available (the
    machine's ``MemAvailable`` unless given)."""
    need = generation_bytes(s, patches)
    have = available if available is not None else available_memory()
    if have is None or need <= have:
        return
    sizes = ", ".join(f"data.{k} {getattr(s, k):,}" for k in ("train_videos", "val_videos", "test_videos"))
    raise ValueError(
        f"the proxy needs about {need / 2**30:.1f} GiB to generate ({sizes}; width {s.width}, {s.max_words} token "
        f"slots, {s.max_frames} frame slots{f', {s.patches} patches' if patches else ''}), more than the "
        f"{have / 2**30:.1f} GiB available: lower the split sizes"
    )


def available_memory() -> int | None:
    """Bytes a new allocation can get (``MemAvailable`` on Linux, else the free physical pages; ``None`` when
    unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _real_annotations(s: ProxySettings) -> tuple[list[Annotation], ProxySettings]:
    """The annotation file's videos, and the settings with the file's own vocabulary size."""
    anns, vocab_size = annotations_from_didemo(s.annotations)
    return anns, replace(s, vocab_size=vocab_size)


def _render_split(
    rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings
) -> tuple[dict[str, Tensor], FrameParts]:
    """A split's feature tensors, and the frames' draws (for its patch tokens)."""
    parts = frame_parts(rng, world, anns, s)
    frames, video_mask = compose_frames(world, anns, s, parts)
    tokens, text_mask, eot = render_text(rng, world, anns, s)
    as_float = lambda x: torch.from_numpy(x.astype(np.float32))  # noqa: E731
    features = {
        "text_tokens": as_float(tokens),
        "text_mask": torch.from_numpy(text_mask),
        "text_eot": as_float(eot),
        "video_frames": as_float(frames),
        "video_mask": torch.from_numpy(video_mask),
        "index": torch.arange(len(anns)),
    }
    return features, parts


def load_or_generate(s: ProxySettings, cache_dir: Path) -> dict[str, dict[str, Tensor]]:
    """Generated features, cached on disk under the settings' hash (written atomically)."""
    path = cache_dir / f"proxy-{s.key()}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    data = generate(s)
    atomic_write(path, lambda tmp: torch.save(data, tmp))
    return data


def load_or_generate_patches(s: ProxySettings, cache_dir: Path) -> dict[str, Tensor]:
    """Every split's patch tokens, cached beside the features under ``patch_key()`` (generating them writes the
    feature cache too when it is missing: the same features ``load_or_generate`` would write)."""
    path = cache_dir / f"proxy-{s.key()}-patches-{s.patch_key()}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    data, patches = generate_patches(s)
    features = cache_dir / f"proxy-{s.key()}.pt"
    if not features.exists():
        atomic_write(features, lambda tmp: torch.save(data, tmp))
    atomic_write(path, lambda tmp: torch.save(patches, tmp))
    return patches


# --- the data module ----------------------------------------------------------------------------------------
class FeatureSplit(RetrievalSplit):
    """An in-memory split of frozen features: a batch is one fancy-index per tensor (float16 tensors, the patch
    tokens, come out as float32)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors["index"].shape[0]

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {key: value[idx] for key, value in self.tensors.items()}
        return {key: value.float() if value.dtype == torch.float16 else value for key, value in batch.items()}


@register_dataset("proxy")
class ProxyDataModule(RetrievalDataModule):
    """The synthetic DiDeMo proxy (frozen regime); its knobs are the fields of ``ProxySettings``, as keywords.

    Args:
        regime: always ``frozen`` (the proxy is a feature store); recorded for reports.
        adapter: train an identity-initialised linear adapter on frames and text features (at the backbone lr),
            standing in for backbone adaptation; without it parameter-free heads (meanP) cannot learn.
        cache_dir: where generated features are cached.
        world: a named preset of knobs (``tvr_convbench.datasets.proxy.worlds``); a knob given explicitly wins.
        **knobs: ``ProxySettings`` fields (an unknown name raises ``UnknownNameError``, a bad value
            ``ValueError`` naming ``data.<knob>``).
    """

    synthetic = True
    title = "synthetic DiDeMo proxy"
    settings_class = ProxySettings
    """the dataclass whose fields are this module's knobs (their docs are its attribute docstrings)"""

    def __init__(
        self,
        *,
        regime: Literal["frozen"] = "frozen",
        adapter: bool = True,
        cache_dir: str = ".cache/proxy",
        world: str = "default",
        **knobs: Any,
    ) -> None:
        super().__init__()
        self.world = world
        self.settings = ProxySettings.from_knobs({**world_knobs(world), **knobs})
        self.settings.validate()
        self.regime = regime
        self.adapter = adapter
        self.cache_dir = Path(cache_dir)
        self.patches = False
        """whether batches carry ``video_patches`` (``request_patches``)"""
        self._splits: dict[str, FeatureSplit] = {}

    @classmethod
    def config_parameters(cls) -> dict[str, inspect.Parameter]:
        """Every ``ProxySettings`` knob, then the module's own keywords (``regime``, ``adapter``, ``cache_dir``)."""
        hints = typing.get_type_hints(cls.__init__)
        own = inspect.signature(cls.__init__).parameters.values()
        module_only = [p.replace(annotation=hints[p.name]) for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
        return {**cls.settings_class.parameters(), **{p.name: p for p in module_only}}

    @classmethod
    def resolve_config(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults, then the named world's knobs, then the knobs given explicitly."""
        resolved = super().resolve_config(given)
        return {**resolved, **world_knobs(resolved["world"]), **given}

    @property
    def dims(self) -> FeatureDims:
        s = self.settings
        return FeatureDims(s.width, s.max_frames, s.max_words)

    def request_patches(self) -> None:
        """Batches carry ``video_patches [B, F, P, D]`` (P = ``patches``), generated on first use and cached beside
        the features (whose values and cache key do not change); call before ``setup``."""
        self.patches = True

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        patches = load_or_generate_patches(self.settings, self.cache_dir) if self.patches else {}
        data = load_or_generate(self.settings, self.cache_dir)
        for name, tokens in patches.items():
            data[name]["video_patches"] = tokens  # [n, F, P, D] float16
        self._splits = {name: FeatureSplit(data[name]) for name in SPLITS}

    def split(self, name: str) -> FeatureSplit:
        self.setup()
        return self._splits[name]

    def backbone(self) -> Backbone:
        return FeatureBackbone(self.settings.width, adapter=self.adapter)

    def describe(self) -> dict:
        self.setup()
        counts = {name: len(split) for name, split in self._splits.items()}
        return {
            **super().describe(),
            "regime": self.regime,
            "world": self.world,
            "counts": counts,
            "settings": asdict(self.settings),
            "calibration": intrinsic_figures(self.settings, self._splits["val"].tensors),
        }


# --- difficulty figures -------------------------------------------------------------------------------------
def intrinsic_figures(s: ProxySettings, val: dict[str, Tensor]) -> dict[str, float]:
    """The difficulty figures of a generated val split that need no retrieval method."""
    text = _normalize(val["text_eot"])  # [N, D]
    frames = _normalize(val["video_frames"])  # [N, F, D]
    mask = val["video_mask"].float()  # [N, F]
    per_frame = torch.einsum("nd,mfd->nmf", text, frames)  # [N, N, F] sentence x frame cosines
    frame_cos = (per_frame * mask[None]).sum(-1) / mask.sum(-1)[None].clamp_min(1)  # [N, N] mean over real frames
    off = ~torch.eye(len(text), dtype=torch.bool)  # [N, N] the unmatched pairs
    world_settings = _real_annotations(s)[1] if s.annotations else s
    return {
        **word_view_cosines(World.sample(np.random.default_rng(s.seed), world_settings)),
        "sentence_frame_cosine_matched": float(frame_cos.diagonal().mean()),
        "sentence_frame_cosine_unmatched": float(frame_cos[off].mean()),
        "real_frames_mean": float(mask.sum(1).mean()),
        "real_tokens_mean": float(val["text_mask"].float().sum(1).mean()),
    }


def _normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
