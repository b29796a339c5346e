"""The ``didemo`` data module: real DiDeMo paragraph-to-video retrieval in the three backbone regimes.

Spec: ``DESIGN.md`` 4-5 and ``reference/baselines-and-didemo.md`` 4 (protocol: paragraphs, 1 fps over [0, 31] s,
max_frames 64, max_words 64, loaded counts logged for every split).

- ``frozen``: batches come from a feature store written by ``bench data features`` (``datasets.feature_store``); the
  backbone is ``FeatureBackbone`` (identity, or an identity-initialised adapter). The store's manifest must agree with
  the requested protocol (``StoreError`` naming the field otherwise).
- ``partial`` / ``full``: batches hold token ids and the uint8 frames decoded by PyAV in DataLoader workers
  (``workers``); ``ClipBackbone`` encodes them with the last ``trainable_blocks`` blocks (``partial``) or all of CLIP
  (``full``) trainable.

Patch tokens (``request_patches``, for a method that ``needs_patches``): in ``frozen`` from the store's optional
``video_patches`` array (a store without one is refused with one line, before anything runs); in ``partial`` /
``full`` from ``ClipBackbone(patches=True)``, the same vision forward as the frame features.

Every split is (split list ∩ annotation JSON ∩ usable video files). Videos without a file or whose header does not
decode are reported (logged counts; the full list in ``describe()["problems"]``, which the harness writes next to
the run) and skipped, or stop the run with ``strict=True``. They never become zero clips.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tvr_convbench.core.errors import DataError
from tvr_convbench.datasets.base import (
    SPLITS,
    Backbone,
    FeatureBackbone,
    FeatureDims,
    RetrievalDataModule,
    RetrievalSplit,
    register_dataset,
)
from tvr_convbench.datasets.clip import ClipBackbone, Regime, checkpoint_hash, load_clip, tokenize
from tvr_convbench.datasets.didemo import SplitAnnotations, load_split
from tvr_convbench.datasets.feature_store import FeatureStore, protocol_settings, read_manifest, require_patches
from tvr_convbench.datasets.video import (
    FrameSampling,
    Sampler,
    VideoError,
    VideoIndex,
    VideoProblem,
    decode_clip,
    pack_clips,
)

log = logging.getLogger(__name__)


def resolve_split(annotations: str | Path, name: str, index: VideoIndex) -> tuple[SplitAnnotations, list[Path | None]]:
    """The annotated split ``name`` and the video file of each paragraph (``None`` when no file matches)."""
    split = load_split(annotations, name)
    return split, [index.resolve(p.video) for p in split.paragraphs]


class VideoTextSplit(RetrievalSplit):
    """A trainable-backbone split: a batch decodes its videos (in the calling DataLoader worker).

    Batch keys: ``text_ids`` [B, L] long, ``text_mask`` [B, L] bool, ``pixels`` [N, 3, S, S] uint8 (the real frames
    of the batch, video after video), ``video_mask`` [B, F] bool, ``index`` [B].
    """

    def __init__(self, paths: list[Path], text_ids: Tensor, text_mask: Tensor, sampling: FrameSampling) -> None:
        self.paths = paths
        self.text_ids = text_ids
        self.text_mask = text_mask
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        clips = [decode_clip(self.paths[i], self.sampling) for i in indices]  # each [T, 3, S, S] uint8
        pixels, video_mask = pack_clips(clips, self.sampling.max_frames)
        return {
            "text_ids": self.text_ids[idx],
            "text_mask": self.text_mask[idx],
            "pixels": pixels,
            "video_mask": video_mask,
            "index": idx,
        }


@register_dataset("didemo")
class DidemoDataModule(RetrievalDataModule):
    """Real DiDeMo.

    Args:
        regime: ``frozen`` (feature store), ``partial`` or ``full`` (videos + CLIP).
        store: the feature-store folder (``frozen``).
        annotations: folder with ``{split}_data.json`` and optional ``{split}_list.txt`` (``partial``/``full``).
        videos: the video folder (``partial``/``full``).
        clip: CLIP checkpoint (folder or hub id); required for ``partial``/``full``, and in ``frozen`` checked
            against the store's checkpoint hash when given.
        sampler: ``fps1`` (the protocol) or ``uniform`` (X-Pool family).
        max_frames: frame slots F.
        max_words: token slots L.
        uniform_frames: frames of the ``uniform`` sampler.
        trainable_blocks: last CLIP blocks per tower that train in ``partial``.
        adapter: ``frozen`` only: an identity-initialised linear adapter on the features, at the backbone lr.
        strict: stop on a missing or undecodable video instead of skipping it.
        workers: DataLoader workers (video decoding runs there).
        cache_dir: where the video-folder index is cached.
    """

    title = "DiDeMo"

    def __init__(
        self,
        *,
        regime: Regime = "frozen",
        store: str | None = None,
        annotations: str | None = None,
        videos: str | None = None,
        clip: str | None = None,
        sampler: Sampler = "fps1",
        max_frames: int = 64,
        max_words: int = 64,
        uniform_frames: int = 12,
        trainable_blocks: int = 2,
        adapter: bool = False,
        strict: bool = False,
        workers: int = 0,
        cache_dir: str = ".cache/didemo",
    ) -> None:
        super().__init__()
        if regime not in ("frozen", "partial", "full"):
            raise DataError("data", f"unknown regime {regime!r} (frozen, partial or full)", field="regime")
        given = {"store": store, "annotations": annotations, "videos": videos, "clip": clip}
        for key in ("store",) if regime == "frozen" else ("annotations", "videos", "clip"):
            if given[key] is None:
                raise DataError("data", f"required in the {regime!r} regime", field=key)
        self.regime = regime
        self.store_path = store
        self.clip = clip
        self.annotations = annotations
        self.videos = videos
        self.sampling = FrameSampling(sampler, max_frames, uniform_frames)
        self.max_words = max_words
        self.trainable_blocks = trainable_blocks
        self.adapter = adapter
        self.strict = strict
        self.workers = workers
        self.cache_dir = cache_dir
        self.patches = False
        """whether batches carry ``video_patches`` (``request_patches``)"""
        self._store: FeatureStore | None = None
        self._index: VideoIndex | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._splits: dict[str, RetrievalSplit] = {}
        self._counts: dict[str, dict[str, Any]] = {}
        self._problems: list[VideoProblem] = []

    @property
    def num_workers(self) -> int:
        return self.workers

    def request_patches(self) -> None:
        """Batches carry ``video_patches`` (call before ``setup``); a frozen-regime store without patch tokens is
        refused here, with one line."""
        if self.regime == "frozen":
            manifest_path = Path(self.store_path) / "manifest.json"
            require_patches(manifest_path, read_manifest(manifest_path))
        self.patches = True

    @property
    def dims(self) -> FeatureDims:
        self.setup()
        if self._store is not None:
            width = self._store.settings["width"]
        else:
            width = self._model.config.projection_dim
        return FeatureDims(width, self.sampling.max_frames, self.max_words)

    def setup(self, stage: str | None = None) -> None:
        if self._store is not None or self._model is not None:
            return
        if self.regime == "frozen":
            self._setup_store()
        else:
            self._setup_clip()

    def _setup_store(self) -> None:
        protocol = protocol_settings(self.sampling, self.max_words)
        del protocol["image_size"]  # the checkpoint's resolution, whatever it is (its hash is compared instead)
        expect: dict[str, Any] = {"protocol": protocol}
        if self.clip is not None:
            expect["clip_sha256"] = checkpoint_hash(*load_clip(self.clip))
        self._store = FeatureStore.open(self.store_path, expect=expect, patches=self.patches)
        self._counts = self._store.manifest["splits"]
        problems = Path(self.store_path) / "problems.json"
        if problems.is_file():
            self._problems = [VideoProblem(**row) for row in json.loads(problems.read_text(encoding="utf-8"))]
        for name, counts in self._counts.items():
            log.info("didemo %s (store %s): %s", name, self.store_path, counts)

    def _setup_clip(self) -> None:
        model, tokenizer = load_clip(self.clip)
        limit = model.config.text_config.max_position_embeddings
        if self.max_words > limit:
            raise DataError("data", f"{self.max_words} exceeds CLIP's {limit} text positions", field="max_words")
        size = model.config.vision_config.image_size
        if size != self.sampling.image_size:
            self.sampling = FrameSampling(**{**self.sampling.settings(), "image_size": size})
        self._model = model
        self._tokenizer = tokenizer
        self._index = VideoIndex.build(self.videos, self.cache_dir)

    def split(self, name: str) -> RetrievalSplit:
        """The split ``name``; for ``partial``/``full`` built on first use (annotations, files, probes, tokens)."""
        self.setup()
        if name not in SPLITS:
            raise DataError("data", f"unknown split {name!r} (one of {', '.join(SPLITS)})", field="split")
        if name not in self._splits:
            self._splits[name] = self._store.split(name) if self._store is not None else self._video_split(name)
        return self._splits[name]

    def _video_split(self, name: str) -> VideoTextSplit:
        annotated, paths = resolve_split(self.annotations, name, self._index)
        probes = self._index.probe([p for p in paths if p is not None])
        keep, problems = [], []
        for paragraph, path in zip(annotated.paragraphs, paths, strict=True):
            reason = "no file matches this entry in the video folder" if path is None else probes[path]
            if reason is None:
                keep.append((paragraph, path))
            else:
                kind = "missing" if path is None else "undecodable"
                problems.append(VideoProblem(name, paragraph.video, kind, reason))
        self._report(name, annotated, problems, len(keep))
        ids, mask = tokenize(self._tokenizer, [p.paragraph for p, _ in keep], self.max_words)
        return VideoTextSplit([path for _, path in keep], ids, mask, self.sampling)

    def _report(self, name: str, annotated: SplitAnnotations, problems: list[VideoProblem], loaded: int) -> None:
        kinds = {kind: sum(p.kind == kind for p in problems) for kind in ("missing", "undecodable")}
        self._counts[name] = {**annotated.counts(), "items": loaded, **kinds}
        self._problems += problems
        log.info("didemo %s: %s", name, self._counts[name])
        if problems and self.strict:
            first = problems[0]
            problem = f"{len(problems)} videos not usable (first: {first.video!r}: {first.detail}); strict mode"
            raise VideoError(f"split {name}", problem)

    def backbone(self) -> Backbone:
        self.setup()
        if self._store is not None:
            return FeatureBackbone(self._store.settings["width"], adapter=self.adapter)
        model = copy.deepcopy(self._model)
        return ClipBackbone(model, regime=self.regime, trainable_blocks=self.trainable_blocks, patches=self.patches)

    def describe(self) -> dict[str, Any]:
        self.setup()
        facts = {
            **super().describe(),
            "regime": self.regime,
            "protocol": protocol_settings(self.sampling, self.max_words),
            "counts": self._counts,
            "problems": [p.as_dict() for p in self._problems],
        }
        if self._store is not None:
            facts["store"] = {"path": str(self.store_path), "settings": self._store.settings}
        return facts
