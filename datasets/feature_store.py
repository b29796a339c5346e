"""The frozen-regime feature store: CLIP features of every split, memory-mapped, with a manifest; resumable extraction.

Layout of a store folder::

    manifest.json            format, settings (CLIP checkpoint sha256, protocol, annotation hashes, video listing
                             hash, splits, chunk size), per-split counts, array shapes; written last
    problems.json            listed videos that were not loaded (missing / undecodable), with the reason
    <split>/video_frames.npy float16 [N, F, D]  CLIP frame features (padded slots: the blank-frame feature)
    <split>/video_mask.npy   bool    [N, F]
    <split>/text_tokens.npy  float16 [N, L, D]  projected token features at every position
    <split>/text_mask.npy    bool    [N, L]
    <split>/text_eot.npy     float16 [N, D]     sentence (EOT) feature
    <split>/video_patches.npy float16 [N, F, P, D] optional (``bench data features --patches``): every frame's
                             projected patch tokens (padded slots: the blank frame's), ~3.2 MB per video at
                             DiDeMo's shapes (F = 64, P = 49, D = 512); the manifest lists it with its shape
    <split>/items.json       [{"video", "paragraph"}] in store order (= annotation order minus problems)
    .partial/                only while extracting: settings.json + one committed folder per chunk

Extraction walks each split in chunks of ``chunk_items`` annotated videos; a chunk is written to a temporary folder
and renamed into place (atomic), so an interrupted run resumes at the first missing chunk and, batches being
the same, ends byte-identical to an uninterrupted one. The final arrays are assembled from the chunks, each file
through a temporary name and ``os.replace``, the manifest last. A store refuses to be resumed or reused with other
settings (``StoreError`` naming the field), and opening one checks shapes, dtypes and finiteness. The patch tokens
are opened only when asked for (``FeatureStore.open(..., patches=True)``, for a method that ``needs_patches``): a
store without them refuses with one line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tvr_convbench.core.errors import DataError
from tvr_convbench.core.files import atomic_write, atomic_write_json
from tvr_convbench.datasets.base import RetrievalSplit
from tvr_convbench.datasets.clip import ClipBackbone, encode_text, tokenize
from tvr_convbench.datasets.didemo import VideoParagraph
from tvr_convbench.datasets.video import (
    FrameSampling,
    VideoError,
    VideoProblem,
    decode_clip,
    pack_clips,
    write_problems,
)

log = logging.getLogger(__name__)

STORE_FORMAT = 1
FLOAT_ARRAYS = ("video_frames", "text_tokens", "text_eot")
MASK_ARRAYS = ("video_mask", "text_mask")
ARRAYS = FLOAT_ARRAYS + MASK_ARRAYS
PATCH_ARRAY = "video_patches"
"""the optional float16 patch-token array [N, F, P, D]"""
FINITE_CHECK_ROWS = 512
FINITE_CHECK_BYTES = 64 << 20
"""at most this much of an array is read at a time by the finiteness check"""


class StoreError(DataError):
    """A feature store that is incomplete, inconsistent, non-finite or made with other settings."""


def protocol_settings(sampling: FrameSampling, max_words: int) -> dict[str, Any]:
    """The protocol part of a store's settings (what a frozen-regime run must agree with)."""
    return {**sampling.settings(), "max_words": max_words}


# --- reading ----------------------------------------------------------------------------------------------------
class StoreSplit(RetrievalSplit):
    """One split of a store: a batch is one fancy-index per memory-mapped array, returned as float32 (the float16
    arrays) / bool. Pickling (DataLoader workers under ``spawn``) sends the file names, not the arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], items: list[dict[str, str]]) -> None:
        self.arrays = arrays
        self.items = items

    def __getstate__(self) -> dict[str, Any]:
        return {"files": {key: array.filename for key, array in self.arrays.items()}, "items": self.items}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.arrays = {key: np.load(path, mmap_mode="r") for key, path in state["files"].items()}
        self.items = state["items"]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        batch = {key: torch.from_numpy(_as_batch(array[idx])) for key, array in self.arrays.items()}
        batch["index"] = torch.from_numpy(idx)
        return batch


def _as_batch(rows: np.ndarray) -> np.ndarray:
    return rows.astype(np.float32) if rows.dtype == np.float16 else rows


class FeatureStore:
    """A finished store (``open``); ``split(name)`` gives its ``RetrievalSplit``."""

    def __init__(self, path: Path, manifest: dict[str, Any], splits: dict[str, StoreSplit]) -> None:
        self.path = path
        self.manifest = manifest
        self.splits = splits

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        expect: dict[str, Any] | None = None,
        check_finite: bool = True,
        patches: bool = False,
    ) -> FeatureStore:
        """Open the store at ``path``; ``expect`` holds settings (nested keys of the manifest's ``settings``) that
        must match, e.g. ``{"protocol": {"max_frames": 64}}``; ``patches`` opens the patch tokens too (batches then
        carry ``video_patches``).

        Raises:
            StoreError: no manifest, a manifest that disagrees with ``expect``, a missing or misshapen array,
                a non-finite value, or no patch tokens when ``patches`` asks for them (each naming the file and field).
        """
        path = Path(path)
        manifest_path = path / "manifest.json"
        manifest = read_manifest(manifest_path)
        if expect:
            compare_settings(manifest_path, manifest["settings"], expect)
        keys = ARRAYS
        if patches:
            require_patches(manifest_path, manifest)
            keys = (*ARRAYS, PATCH_ARRAY)
        splits = {
            name: _open_split(path / name, manifest, check_finite, keys) for name in manifest["settings"]["splits"]
        }
        return cls(path, manifest, splits)

    @property
    def settings(self) -> dict[str, Any]:
        return self.manifest["settings"]

    def split(self, name: str) -> StoreSplit:
        if name not in self.splits:
            raise StoreError(self.path / "manifest.json", f"the store has no split {name!r}", field="settings.splits")
        return self.splits[name]


def read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        hint = " (extraction interrupted? rerun `bench data features`)" if (path.parent / ".partial").is_dir() else ""
        raise StoreError(path, f"not found: not a finished feature store{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(path, f"unreadable manifest: {exc}") from None
    for field in ("format", "settings", "splits", "arrays"):
        if field not in manifest:
            raise StoreError(path, "missing", field=field)
    if manifest["format"] != STORE_FORMAT:
        raise StoreError(path, f"store format {manifest['format']}, this code reads {STORE_FORMAT}", field="format")
    return manifest


def require_patches(path: Path, manifest: dict[str, Any]) -> None:
    """Raise ``StoreError`` (one line) unless the store at ``path`` (its manifest) holds patch tokens."""
    if PATCH_ARRAY not in manifest["arrays"]:
        problem = "the store has no patch tokens; extract one with `tvr-convbench data features --patches`"
        raise StoreError(path, problem, field=f"arrays.{PATCH_ARRAY}")


def compare_settings(
    path: Path, stored: dict[str, Any], requested: dict[str, Any], *, exact: bool = False, prefix: str = "settings"
) -> None:
    """Raise ``StoreError`` at the first key of ``requested`` whose value differs from ``stored`` (with ``exact``,
    also at a key only ``stored`` has)."""
    for key, want in requested.items():
        field = f"{prefix}.{key}"
        have = stored.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            compare_settings(path, have, want, exact=exact, prefix=field)
        elif have != want:
            raise StoreError(path, f"the store has {have!r}, requested {want!r}", field=field)
    for key in sorted(stored.keys() - requested.keys()) if exact else ():
        raise StoreError(path, f"the store has {stored[key]!r}, requested nothing", field=f"{prefix}.{key}")


def _open_split(folder: Path, manifest: dict[str, Any], check_finite: bool, keys: Sequence[str]) -> StoreSplit:
    count = manifest["splits"][folder.name]["items"]
    arrays = {}
    for key in keys:
        spec = manifest["arrays"][key]
        arrays[key] = _open_array(folder / f"{key}.npy", key, [count, *spec["shape"][1:]], spec["dtype"])
    if check_finite:
        for key in (k for k in keys if k not in MASK_ARRAYS):
            _check_finite(folder / f"{key}.npy", key, arrays[key])
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    if len(items) != count:
        raise StoreError(folder / "items.json", f"{len(items)} items, the manifest says {count}", field="items")
    return StoreSplit(arrays, items)


def _open_array(path: Path, key: str, shape: list[int], dtype: str) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise StoreError(path, f"cannot read: {exc}", field=key) from None
    if list(array.shape) != shape or str(array.dtype) != dtype:
        problem = f"shape {list(array.shape)} {array.dtype}, the manifest says {shape} {dtype}"
        raise StoreError(path, problem, field=key)
    return array


def _check_finite(path: Path, key: str, array: np.ndarray) -> None:
    row_bytes = max(1, array[:1].nbytes)
    rows = max(1, min(FINITE_CHECK_ROWS, FINITE_CHECK_BYTES // row_bytes))
    for start in range(0, len(array), rows):
        block = np.isfinite(array[start : start + rows])
        if not block.all():
            item = start + int(np.argwhere(~block)[0][0])
            raise StoreError(path, f"non-finite value (NaN or inf) in item {item}", field=key)


# --- writing ----------------------------------------------------------------------------------------------------
@dataclass
class SplitSource:
    """What to extract for one split: the annotated items and their resolved video files (``None`` = missing)."""

    name: str
    items: list[VideoParagraph]
    paths: list[Path | None]
    counts: dict[str, Any]
    """annotation counts recorded in the manifest (listed, annotated, ...)"""


class _DecodeItems(Dataset):
    """Decodes the videos at ``positions`` (in DataLoader workers); an item is ``(position, clip, problem)``."""

    def __init__(self, paths: Sequence[Path | None], positions: Sequence[int], sampling: FrameSampling) -> None:
        self.paths = paths
        self.positions = positions
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray | None, str | None]:
        position = self.positions[k]
        path = self.paths[position]
        if path is None:
            return position, None, "missing"
        try:
            return position, decode_clip(path, self.sampling), None
        except VideoError as exc:
            return position, None, str(exc)


def _as_is(sample: Any) -> Any:
    return sample


class FeatureExtractor:
    """Runs a frozen CLIP over every split and writes a store (module docstring).

    Args:
        out: the store folder.
        settings: the identity of the store (compared on resume and reuse); must include ``splits``.
        backbone: a ``ClipBackbone`` (its regime is irrelevant: extraction runs under ``inference_mode``).
        tokenizer: the CLIP tokenizer.
        sampling: frame sampling.
        max_words: token slots L.
        batch_size: videos per CLIP forward.
        workers: DataLoader workers decoding videos.
        strict: fail at the first missing or undecodable video instead of skipping it.
        chunk_items: annotated videos per committed chunk.
        device: where CLIP runs.
        on_chunk: called with ``(split, chunk)`` after each chunk is committed (progress hooks, tests).
        patches: also write every frame's patch tokens (``video_patches``, from the same CLIP forward).
    """

    def __init__(
        self,
        out: str | Path,
        *,
        settings: dict[str, Any],
        backbone: ClipBackbone,
        tokenizer: Any,
        sampling: FrameSampling,
        max_words: int,
        batch_size: int = 16,
        workers: int = 0,
        strict: bool = False,
        chunk_items: int = 256,
        device: str = "cpu",
        on_chunk: Callable[[str, int], None] | None = None,
        patches: bool = False,
    ) -> None:
        if batch_size < 1 or chunk_items < 1 or workers < 0:
            raise DataError("extraction", "batch_size and chunk_items must be >= 1, workers >= 0", field="batch_size")
        self.out = Path(out)
        self.settings = json.loads(json.dumps(settings))  # as stored: lists, not tuples
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.max_words = max_words
        self.batch_size = batch_size
        self.workers = workers
        self.strict = strict
        self.chunk_items = chunk_items
        self.device = torch.device(device)
        self.on_chunk = on_chunk
        self.keys = (*ARRAYS, PATCH_ARRAY) if patches else ARRAYS
        """the arrays written"""
        self.partial = self.out / ".partial"

    def run(self, sources: Sequence[SplitSource], sources_info: dict[str, str] | None = None) -> dict[str, Any]:
        """Extract (or resume) every split and assemble the store; returns the manifest."""
        manifest_path = self.out / "manifest.json"
        if manifest_path.exists():
            manifest = read_manifest(manifest_path)
            compare_settings(manifest_path, manifest["settings"], self.settings, exact=True)
            log.info("feature store %s is complete with these settings: nothing to do", self.out)
            return manifest
        self._fail_on_missing(sources)
        self._start()
        self.backbone.to(self.device).eval()
        for source in sources:
            self._extract_split(source)
        return self._assemble(sources, sources_info or {})

    def _start(self) -> None:
        settings_path = self.partial / "settings.json"
        if settings_path.exists():
            started = json.loads(settings_path.read_text(encoding="utf-8"))
            compare_settings(settings_path, started, self.settings, exact=True)
            log.info("resuming the extraction into %s", self.out)
        else:
            atomic_write_json(settings_path, self.settings)

    def _fail_on_missing(self, sources: Sequence[SplitSource]) -> None:
        if not self.strict:
            return
        missing = [_problem(s, i, "missing") for s in sources for i, p in enumerate(s.paths) if p is None]
        if missing:
            write_problems(self.out / "problems.json", missing)
            first = missing[0]
            problem = f"{len(missing)} listed videos have no file (first: {first.video!r}, split {first.split})"
            raise VideoError(self.out / "problems.json", f"{problem}; strict mode stops here")

    def _chunk_dir(self, split: str, chunk: int) -> Path:
        return self.partial / split / f"chunk-{chunk:05d}"

    def _extract_split(self, source: SplitSource) -> None:
        chunks = range(-(-len(source.items) // self.chunk_items))
        pending = [c for c in chunks if not self._chunk_dir(source.name, c).is_dir()]
        positions = [i for c in pending for i in self._chunk_range(source, c)]
        done = len(source.items) - len(positions)
        bar = tqdm(total=len(source.items), initial=done, desc=f"features {source.name}", unit="video", leave=False)
        decoded = iter(self._loader(source, positions))
        try:
            for chunk in pending:
                results = [next(decoded) for _ in self._chunk_range(source, chunk)]
                self._commit(source, chunk, results)
                bar.update(len(results))
                if self.on_chunk is not None:
                    self.on_chunk(source.name, chunk)
        finally:
            bar.close()

    def _chunk_range(self, source: SplitSource, chunk: int) -> range:
        return range(chunk * self.chunk_items, min((chunk + 1) * self.chunk_items, len(source.items)))

    def _loader(self, source: SplitSource, positions: list[int]) -> DataLoader:
        dataset = _DecodeItems(source.paths, positions, self.sampling)
        workers = self.workers if positions else 0
        return DataLoader(dataset, batch_size=None, collate_fn=_as_is, num_workers=workers)

    def _commit(self, source: SplitSource, chunk: int, results: list[tuple]) -> None:
        problems, kept, clips = [], [], []
        for position, clip, problem in results:
            if problem is None:
                kept.append(position)
                clips.append(clip)
                continue
            kind = "missing" if problem == "missing" else "undecodable"
            problems.append(_problem(source, position, kind, problem))
            if self.strict:
                write_problems(self.out / "problems.json", problems)
                raise VideoError(f"split {source.name}", f"{problem}; strict mode stops here")
        arrays = self._encode(source, kept, clips)
        self._write_chunk(source.name, chunk, arrays, [source.items[i] for i in kept], problems)

    @torch.inference_mode()
    def _encode(self, source: SplitSource, kept: list[int], clips: list[np.ndarray]) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {key: [] for key in self.keys}
        for start in range(0, len(kept), self.batch_size):
            stop = start + self.batch_size
            batch = self._encode_batch(source, kept[start:stop], clips[start:stop])
            for key in self.keys:
                parts[key].append(batch[key])
        return {key: self._concat(key, parts[key]) for key in self.keys}

    def _encode_batch(self, source: SplitSource, kept: list[int], clips: list[np.ndarray]) -> dict[str, np.ndarray]:
        ids, text_mask = tokenize(self.tokenizer, [source.items[i].paragraph for i in kept], self.max_words)
        pixels, video_mask = pack_clips(clips, self.sampling.max_frames)
        clip = self.backbone.clip
        tokens, eot = encode_text(clip, ids.to(self.device), text_mask.to(self.device))
        batch = {"text_tokens": tokens, "text_eot": eot, **self._encode_frames(pixels, video_mask)}
        out = {key: value.float().cpu().numpy().astype(np.float16) for key, value in batch.items()}
        for key, value in out.items():
            if not np.isfinite(value).all():
                raise StoreError(self.out, f"CLIP produced a non-finite feature for split {source.name}", field=key)
        return {**out, "text_mask": text_mask.numpy(), "video_mask": video_mask.numpy()}

    def _encode_frames(self, pixels: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``video_frames`` (and ``video_patches``) of one batch, from one vision forward."""
        pixels, mask = pixels.to(self.device), mask.to(self.device)
        if PATCH_ARRAY not in self.keys:
            return {"video_frames": self.backbone.encode_video(pixels, mask)}
        tokens = self.backbone.encode_video_tokens(pixels, mask)  # [B, F, 1 + P, D]
        return {"video_frames": tokens[:, :, 0], PATCH_ARRAY: tokens[:, :, 1:]}

    def _concat(self, key: str, parts: list[np.ndarray]) -> np.ndarray:
        if parts:
            return np.concatenate(parts)
        return np.zeros((0, *self._shape(key)[1:]), dtype=bool if key in MASK_ARRAYS else np.float16)

    def _shape(self, key: str) -> list[int]:
        width, frames, words = self.backbone.width, self.sampling.max_frames, self.max_words
        return {
            "video_frames": [-1, frames, width],
            "video_mask": [-1, frames],
            "text_tokens": [-1, words, width],
            "text_mask": [-1, words],
            "text_eot": [-1, width],
            PATCH_ARRAY: [-1, frames, self.backbone.num_patches, width],
        }[key]

    def _write_chunk(self, split: str, chunk: int, arrays: dict, items: list[VideoParagraph], problems: list) -> None:
        target = self._chunk_dir(split, chunk)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            for key, value in arrays.items():
                np.save(tmp / f"{key}.npy", value)
            atomic_write_json(tmp / "items.json", [_item(p) for p in items])
            atomic_write_json(tmp / "problems.json", [p.as_dict() for p in problems])
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _assemble(self, sources: Sequence[SplitSource], sources_info: dict[str, str]) -> dict[str, Any]:
        problems, split_counts = [], {}
        for source in sources:
            chunk_dirs = [self._chunk_dir(source.name, c) for c in range(-(-len(source.items) // self.chunk_items))]
            count = self._assemble_split(source.name, chunk_dirs)
            found = [VideoProblem(**row) for d in chunk_dirs for row in _read_json(d / "problems.json")]
            problems += found
            split_counts[source.name] = {**source.counts, "items": count, **_problem_counts(found)}
            log.info("didemo %s: %s", source.name, split_counts[source.name])
        write_problems(self.out / "problems.json", problems)
        manifest = {
            "format": STORE_FORMAT,
            "kind": "tvr-convbench feature store",
            "settings": self.settings,
            "splits": split_counts,
            "arrays": {
                key: {"dtype": "bool" if key in MASK_ARRAYS else "float16", "shape": self._shape(key)}
                for key in self.keys
            },
            "sources": sources_info,
        }
        atomic_write_json(self.out / "manifest.json", manifest)
        shutil.rmtree(self.partial)
        return manifest

    def _assemble_split(self, split: str, chunk_dirs: list[Path]) -> int:
        folder = self.out / split
        folder.mkdir(parents=True, exist_ok=True)
        chunk_items = [_read_json(d / "items.json") for d in chunk_dirs]
        rows = [len(items) for items in chunk_items]
        for key in self.keys:
            empty = self._concat(key, [])
            _write_npy_atomic(folder / f"{key}.npy", [d / f"{key}.npy" for d in chunk_dirs], rows, empty)
        atomic_write_json(folder / "items.json", [item for items in chunk_items for item in items])
        return sum(rows)


def _write_npy_atomic(path: Path, parts: list[Path], rows: list[int], empty: np.ndarray) -> None:
    """Concatenate the ``.npy`` files ``parts`` (``rows`` each) into ``path`` through a memory-mapped temporary file,
    one part in memory at a time."""

    def write(tmp: Path) -> None:
        shape = (sum(rows), *empty.shape[1:])
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=empty.dtype, shape=shape)
        start = 0
        for part, count in zip(parts, rows, strict=True):
            target[start : start + count] = np.load(part)
            start += count
        target.flush()
        del target

    atomic_write(path, write)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _item(paragraph: VideoParagraph) -> dict[str, str]:
    return {"video": paragraph.video, "paragraph": paragraph.paragraph}


def _problem(source: SplitSource, position: int, kind: str, detail: str | None = None) -> VideoProblem:
    detail = detail if detail not in (None, "missing") else "no file matches this entry in the video folder"
    return VideoProblem(source.name, source.items[position].video, kind, detail)  # type: ignore[arg-type]


def _problem_counts(problems: Sequence[VideoProblem]) -> dict[str, int]:
    return {kind: sum(p.kind == kind for p in problems) for kind in ("missing", "undecodable")}
