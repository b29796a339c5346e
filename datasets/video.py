"""DiDeMo videos: one file-name rule for every method, PyAV decoding, the two frame samplers, CLIP preprocessing.

Spec: ``reference/baselines-and-didemo.md`` 4.4-4.5. Reference code: ArrowLuo/CLIP4Clip @508ffa3
``dataloaders/rawvideo_util.py`` (``fps1``) and Jiamian-Wang/T-MASS-text-video-retrieval @417fdf1567
``datasets/rawvideo_util.py::video_to_tensor_xpool`` (``uniform``, the X-Pool family on DiDeMo).

**File names.** A split-list entry is the original Flickr file name with its extension (``X.mov``, ``X.avi``, ...,
sometimes a bare ``X.``). Copies in the wild keep that name, append an extension after compression (``X.mov.mp4``)
or replace it (``X.mp4``). Both the entry and every file reduce to a *key*: the name without trailing dots and known
video extensions, stripped repeatedly (``X.mov.mp4`` -> ``X``). Among the files of one key the exact name wins, then
``<entry>.<ext>``, then any other, ties broken by path. The folder index is cached as JSON keyed by a hash of the
folder listing (relative path, size, mtime), together with the verdicts of ``probe_video`` (``PROBE_VERSION``).

**fps1** (the protocol, exactly the OpenCV extractor's rule): ``rate = int(frame rate)`` (OpenCV's
``int(CAP_PROP_FPS)``; we read PyAV's ``guessed_rate``, i.e. ``av_guess_frame_rate``, which OpenCV's FFmpeg backend
also uses). Decoded frame ``i`` (presentation order) is kept iff ``i = s * rate`` for a second ``s`` in ``0..31``.
That equals the reference loop over seconds ``0..min(31, ceil(frames / rate))`` that reads frame ``int(s * rate)``
and stops at the first failed read: the first frame of each second, at most 32 frames. More frames than
``max_frames`` are subsampled at ``linspace(0, n - 1, max_frames)`` (``slice_framepos 2``; never with 64 slots).

**uniform** (T-MASS / X-Pool): ``stop = min(31, frames / fps) * fps`` with the float frame rate;
``k = min(uniform_frames, floor(stop))`` segments ``linspace(0, stop, k + 1)`` cut to int; the middle frame
``(a + b - 1) // 2`` of each. Deviations: the frame count is the number of demuxed video packets (OpenCV's
``CAP_PROP_FRAME_COUNT`` may be a container estimate); ``floor(stop)`` where the reference passes a float count to
``linspace`` (NumPy rejects it); X-Pool repeats the last frame of a video shorter than ``k`` frames, here the slots
are padded and masked like every other video (the harness rule).

**Preprocessing** (torchvision ``Resize(224, BICUBIC)`` + ``CenterCrop(224)`` on PIL, re-done with PIL only): shorter
side 224, longer ``int(224 * long / short)``, PIL bicubic; crop offsets ``int(round((h - 224) / 2))``. Frames travel as
uint8 ``[3, 224, 224]`` (150 KB each) and become float32 ``(x / 255 - mean) / std`` only where CLIP consumes them.

**Failures** are never zero clips: a missing file or a file PyAV cannot open or decode raises ``VideoError`` (one
line, naming the file) and is reported by the loaders as a ``VideoProblem``.

**Completeness** (issue 16): a damaged file often decodes *partly* without any error. A truncated AVI simply ends (its
index is gone, the demuxer stops where the bytes stop), an MPEG-4 part 2 decoder conceals mid-file garbage; both used
to become short clips. Every decode of the window (``window_frames``: ``int(window_s * fps) + 1`` frames) counts:

- ``decoded``: frames delivered intact (not flagged ``is_corrupt`` by the decoder), stopping at the first decoding
  error (the reference's "stop at the first failed read"; decoding on after an error would shift later indices);
- ``expected``: the frames the sampler stopped at when the stream reached them (fps1 stops at its last sample), else
  ``min(window, packets + missing)``. ``packets`` are the non-empty demuxed packets not flagged discard (an edit list
  hides frames that way); ``missing = max(0, declared - round((end - start_time) * fps))`` are the frames the header
  declares beyond the end of the last packet; ``declared`` is the larger of the stream's frame count (AVI
  ``dwLength``, MP4 sample count; minus the discarded packets) and its duration times the frame rate, the container's
  duration (which also covers audio) only when the stream has neither. The container's duration alone would not do:
  for a truncated AVI FFmpeg recomputes it from the surviving bytes. Measuring the end in time keeps AVI null frames
  (counted by the header, skipped by the demuxer) and variable frame rates from reading as missing frames.

The video is undecodable when a decoding error stopped it, or when ``expected - decoded >= fps``
(``frames_short``): less than one second (a header's rounded-up duration, a decoder delay, leading frames of an open
GOP) is tolerated, i.e. at most the last 1-fps sample. The problem reads ``decoded N of M frames expected in [0, W] s``
and why (an error, the file holding fewer, frames dropped or flagged corrupt). A stream with no frame count or
duration at all is held to its packets: dropped frames are still caught, a truncation is indistinguishable from a
shorter video, and refusing such files would drop healthy ones for lack of a header. Known blind spots (no header
states what is lost): a truncated MPEG-PS/TS (``.mpg``, ``.mts``) or WMV (its duration is lost with its tail), and
garbage the MPEG-PS/TS, ASF or FLV demuxer resyncs past (a gap in time, like a variable frame rate) when the decoder
keeps the frames around it intact. ``probe_video`` runs the same check over the window [0, 31] s, so the live
regimes drop such videos before training (counted in ``describe()``); the feature store records them in problems.json.

Threaded decoding (``THREAD_TYPE``) changes none of this: the counts are taken with the threads, and PyAV 18 drains
the frame threads at the end of the stream. Never enable PyAV's Python logging (``av.logging.set_level``) with frame
threads: a worker thread logging through the GIL deadlocks the close of a damaged file (PyAV issues #751, #909).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tvr_convbench.core.errors import DataError, one_line
from tvr_convbench.core.files import atomic_write_json

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {"mov", "avi", "mp4", "m4v", "mpg", "mpeg", "mpe", "3gp", "3g2", "wmv", "mts", "m2ts", "ts", "mkv", "webm"}
    | {"flv", "ogv", "ogg", "asf", "dv", "vob"}
)
WINDOW_SECONDS = 31
"""the protocol's window: seconds [0, 31] (DiDeMo annotations cover the first 30 s)"""
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
Sampler = Literal["fps1", "uniform"]
SHORTFALL_TOLERANCE_S = 1.0
"""how much shorter than expected a stream may decode (a last partial second) before it is undecodable"""
THREAD_TYPE = "AUTO"
"""PyAV decoder threading (frame + slice threads): faster on real resolutions, same counts (module docstring)"""
PROBE_VERSION = 2
"""bumped when ``probe_video`` changes its verdicts; cached probes of another version are discarded (2: complete)"""
PROBE_SAVE_EVERY = 64


class VideoError(DataError):
    """A video folder, file or frame that cannot be used."""


@dataclass(frozen=True)
class VideoProblem:
    """A listed video that was not loaded: ``kind`` is ``missing`` (no file) or ``undecodable``."""

    split: str
    video: str
    kind: Literal["missing", "undecodable"]
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def write_problems(path: str | Path, problems: Sequence[VideoProblem]) -> None:
    """Write the problem list (sorted by split, then video) as JSON, atomically."""
    rows = sorted((p.as_dict() for p in problems), key=lambda r: (r["split"], r["video"]))
    atomic_write_json(path, rows)


# --- file names -------------------------------------------------------------------------------------------------
def video_key(name: str) -> str:
    """The id a list entry and a file share: ``name`` without trailing dots and video extensions (repeatedly)."""
    stem = name
    while True:
        stem = stem.rstrip(".")
        head, dot, ext = stem.rpartition(".")
        if not (dot and head and ext.lower() in VIDEO_EXTENSIONS):
            return stem
        stem = head


def folder_listing(folder: Path) -> list[tuple[str, int, int]]:
    """``(relative posix path, size, mtime_ns)`` of every non-hidden file under ``folder``, sorted."""
    if not folder.is_dir():
        raise VideoError(folder, "video folder not found")
    rows = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith("."):
                stat = os.stat(os.path.join(root, name))
                rows.append((Path(root, name).relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return sorted(rows)


def listing_hash(rows: Sequence[tuple[str, int, int]]) -> str:
    digest = hashlib.sha256()
    for rel, size, mtime in rows:
        digest.update(f"{rel}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


class VideoIndex:
    """Maps list entries to files of one folder (the rule in the module docstring)."""

    def __init__(self, folder: Path, listing: str, files: dict[str, list[str]], probes: dict[str, str | None]) -> None:
        self.folder = folder
        self.listing = listing
        self.files = files
        self.probes = probes
        self.cache_path: Path | None = None

    @classmethod
    def build(cls, folder: str | Path, cache_dir: str | Path | None = None) -> VideoIndex:
        """Index ``folder``; with ``cache_dir`` reuse (or write) the cached index of the same listing."""
        folder = Path(folder).resolve()
        rows = folder_listing(folder)
        listing = listing_hash(rows)
        cache = None if cache_dir is None else Path(cache_dir) / f"video-index-{listing[:24]}.json"
        index = cls._from_cache(folder, listing, cache)
        if index is None:
            files: dict[str, list[str]] = {}
            for rel, _, _ in rows:
                files.setdefault(video_key(Path(rel).name), []).append(rel)
            index = cls(folder, listing, files, {})
            index.cache_path = cache
            index.save()
        return index

    @classmethod
    def _from_cache(cls, folder: Path, listing: str, cache: Path | None) -> VideoIndex | None:
        if cache is None or not cache.is_file():
            return None
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("listing") != listing:
            return None
        probes = data.get("probes", {}) if data.get("probe_version") == PROBE_VERSION else {}  # stale verdicts go
        index = cls(folder, listing, data["files"], probes)
        index.cache_path = cache
        return index

    def save(self) -> None:
        if self.cache_path is not None:
            data = {"listing": self.listing, "files": self.files, "probes": self.probes, "probe_version": PROBE_VERSION}
            atomic_write_json(self.cache_path, data)

    def resolve(self, name: str) -> Path | None:
        """The file for list entry ``name`` (``None`` when no file has its key)."""
        candidates = self.files.get(video_key(name))
        if not candidates:
            return None
        return self.folder / min(candidates, key=lambda rel: (_tier(Path(rel).name, name), rel))

    def probe(self, paths: Sequence[Path]) -> dict[Path, str | None]:
        """``probe_video`` for each path (cached with the index): ``None`` when usable, else the reason. A probe
        decodes the window, so the cache is saved every ``PROBE_SAVE_EVERY`` fresh probes: an interrupted first
        scan of a large folder resumes where it stopped."""
        fresh = 0
        for path in paths:
            rel = path.relative_to(self.folder).as_posix()
            if rel not in self.probes:
                self.probes[rel] = probe_video(path)
                fresh += 1
                if fresh % PROBE_SAVE_EVERY == 0:
                    self.save()
        if fresh % PROBE_SAVE_EVERY:
            self.save()
        return {path: self.probes[path.relative_to(self.folder).as_posix()] for path in paths}


def _tier(file_name: str, entry: str) -> int:
    if file_name == entry:
        return 0
    return 1 if file_name.startswith(entry.rstrip(".") + ".") else 2


# --- samplers ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSampling:
    """Which frames a video contributes and how they are laid out.

    Args:
        sampler: ``fps1`` (the protocol: first frame of each second over [0, 31] s) or ``uniform`` (X-Pool family).
        max_frames: frame slots F per video (padding is masked).
        uniform_frames: frames taken by ``uniform`` (12 in X-Pool / T-MASS).
        image_size: CLIP input resolution.
        window_s: last second of the window.
    """

    sampler: Sampler = "fps1"
    max_frames: int = 64
    uniform_frames: int = 12
    image_size: int = 224
    window_s: int = WINDOW_SECONDS

    def __post_init__(self) -> None:
        if self.sampler not in ("fps1", "uniform"):
            raise DataError("frame sampling", f"unknown sampler {self.sampler!r} (fps1 or uniform)", field="sampler")
        for field in ("max_frames", "uniform_frames", "image_size", "window_s"):
            if getattr(self, field) <= 0:
                raise DataError("frame sampling", f"must be positive, got {getattr(self, field)}", field=field)
        if self.sampler == "uniform" and self.uniform_frames > self.max_frames:
            problem = f"uniform_frames {self.uniform_frames} exceeds the {self.max_frames} frame slots"
            raise DataError("frame sampling", problem, field="max_frames")

    def settings(self) -> dict[str, int | str]:
        return asdict(self)


def fps1_indices(fps: float, frame_count: int, window_s: int = WINDOW_SECONDS) -> list[int]:
    """Frame indices of the OpenCV 1-fps extractor for a video of ``frame_count`` frames at ``fps``."""
    rate = int(fps)
    if rate < 1:
        raise ValueError(f"frame rate {fps} is below 1 fps")
    return [s * rate for s in range(window_s + 1) if s * rate < frame_count]


def uniform_indices(fps: float, frame_count: int, frames: int, window_s: int = WINDOW_SECONDS) -> list[int]:
    """Middle frames of ``frames`` equal segments of the first ``min(window_s, duration)`` seconds (T-MASS rule)."""
    stop = min(window_s, frame_count / fps) * fps  # the reference's float expression, kept for identical edges
    count = min(frames, int(stop))
    if count < 1:
        return []
    edges = np.linspace(0, stop, count + 1).astype(int)
    return ((edges[:-1] + edges[1:] - 1) // 2).tolist()


def subsample(count: int, max_frames: int) -> list[int]:
    """Positions kept when a video has more than ``max_frames`` frames (CLIP4Clip ``slice_framepos 2``)."""
    if count <= max_frames:
        return list(range(count))
    return np.linspace(0, count - 1, num=max_frames, dtype=int).tolist()


# --- decoding ---------------------------------------------------------------------------------------------------
def decode_clip(path: str | Path, sampling: FrameSampling) -> np.ndarray:
    """The sampled, preprocessed frames of one video: uint8 ``[T, 3, S, S]`` with ``1 <= T <= max_frames``.

    Raises:
        VideoError: the file is missing, has no video stream, a frame rate below 1 fps, cannot be decoded, decodes
            short of what it holds or declares in the window (module docstring, *Completeness*), or yields no frame
            in the window.
    """
    path = Path(path)
    try:
        frames = _decode(path, sampling)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        raise VideoError(path, f"undecodable: {one_line(exc)}") from None
    if not frames:
        raise VideoError(path, "no frame decoded in the window")
    keep = subsample(len(frames), sampling.max_frames)
    return np.stack([frames[i] for i in keep])  # [T, 3, S, S]


def frames_short(decoded: int, expected: int, fps: float) -> bool:
    """Whether ``decoded`` frames miss ``SHORTFALL_TOLERANCE_S`` (one second) or more of the ``expected`` ones."""
    return expected - decoded >= SHORTFALL_TOLERANCE_S * fps


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise VideoError(path, "no video stream")
    return container.streams.video[0]


def _frame_rate(stream: av.VideoStream, path: Path) -> float:
    rate = stream.guessed_rate or stream.average_rate
    if rate is None or float(rate) < 1:
        raise VideoError(path, f"frame rate {rate} is missing or below 1 fps")
    return float(rate)


class _Tally:
    """The video packets demuxed so far against the frames the header declares (module docstring)."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, fps: float) -> None:
        self.container = container
        self.stream = stream
        self.fps = fps
        self.packets = 0
        """non-empty packets not flagged discard"""
        self.discarded = 0
        self.end: int | None = None
        """latest ``pts + duration`` of a counted packet (stream time base)"""

    def add(self, packet: av.Packet) -> None:
        if packet.size == 0:  # the closing flush packets PyAV appends
            return
        if packet.is_discard:  # hidden by an edit list: never decoded into a frame
            self.discarded += 1
            return
        self.packets += 1
        if packet.pts is not None:
            end = packet.pts + max(packet.duration or 0, 0)
            self.end = end if self.end is None else max(self.end, end)

    def count_rest(self, packets: Iterator[av.Packet], limit: int) -> None:
        """Demux (no decoding) on, up to ``limit`` counted packets: the window's frames, or what the file still holds
        after a decoding error (a demuxing error ends the count)."""
        try:
            for packet in packets:
                if self.packets >= limit:
                    break
                self.add(packet)
        except av.error.FFmpegError:
            pass

    def declared(self) -> int | None:
        """Frames the header declares for the whole stream, ``None`` when it declares neither count nor duration."""
        stream, candidates = self.stream, []
        if stream.frames and stream.frames > 0:
            candidates.append(stream.frames - self.discarded)
        if stream.duration and stream.time_base:
            candidates.append(round(float(stream.duration * stream.time_base) * self.fps))
        if not candidates and self.container.duration:
            candidates.append(round(self.container.duration / av.time_base * self.fps))
        return max(candidates) if candidates else None

    def covered(self) -> int:
        """Frames' worth of time from the stream's start to the end of its last counted packet."""
        if self.end is None or not self.stream.time_base:
            return self.packets
        start = self.stream.start_time if self.stream.start_time is not None else 0
        return round(float((self.end - start) * self.stream.time_base) * self.fps)

    def expected(self, limit: int) -> int:
        """Frames expected among the first ``limit``: what the file holds plus what its header declares beyond."""
        declared = self.declared()
        missing = 0 if declared is None else max(0, declared - self.covered())
        return min(limit, self.packets + missing)

    def problem(self, decoded: int, corrupt: int, expected: int, window_s: int, error: str | None) -> str | None:
        """``None`` when the ``decoded`` frames (``corrupt`` of them flagged by the decoder) are the ``expected``
        ones within the tolerance, else the reason."""
        intact = decoded - corrupt
        if error is None and not frames_short(intact, expected, self.fps):
            return None
        head = f"undecodable: decoded {intact} of {expected} frames expected in [0, {window_s}] s"
        if corrupt:
            head += f" ({corrupt} more flagged corrupt by the decoder)"
        if error is not None:
            return f"{head} before a decoding error: {error}"
        if frames_short(self.packets, expected, self.fps):
            declared = self.declared()
            return f"{head}; the file holds {self.packets} (its header declares {declared} frames at {self.fps:g} fps)"
        return f"{head}; the decoder dropped the others" if decoded < expected else head


def window_frames(fps: float, window_s: int = WINDOW_SECONDS) -> int:
    """Frames of the window [0, ``window_s``] s at ``fps``: ``int(window_s * fps) + 1`` (both samplers' last index
    is below it)."""
    return int(window_s * fps) + 1


def _decode_window(
    path: Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    fps: float,
    window_s: int,
    stop: int | None = None,
    keep: Callable[[int, av.VideoFrame], None] | None = None,
) -> int:
    """Decode the window's frames (presentation order; the first ``stop`` only), handing each to
    ``keep(index, frame)``; returns the number decoded. The frames expected are ``stop`` when the stream reaches
    it, else those the tally expects in the window; frames the decoder flags corrupt do not count as decoded.

    Raises:
        VideoError: a decoding error, or too few intact frames (``_Tally.problem``).
    """
    window = window_frames(fps, window_s)
    stop = window if stop is None else min(stop, window)
    stream.thread_type = THREAD_TYPE
    tally, packets = _Tally(container, stream, fps), container.demux(stream)
    decoded, corrupt, error = 0, 0, None
    try:
        for frame in _frames(packets, tally):
            if keep is not None:
                keep(decoded, frame)
            decoded += 1
            corrupt += frame.is_corrupt
            if decoded >= stop:
                break
    except av.error.FFmpegError as exc:
        error = one_line(exc)
        tally.count_rest(packets, window)
    expected = stop if decoded >= stop else tally.expected(window)
    problem = tally.problem(decoded, corrupt, expected, window_s, error)
    if problem is not None:
        raise VideoError(path, problem)
    return decoded


def _frames(packets: Iterator[av.Packet], tally: _Tally) -> Iterator[av.VideoFrame]:
    for packet in packets:
        tally.add(packet)
        yield from packet.decode()


def _decode(path: Path, sampling: FrameSampling) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        fps = _frame_rate(stream, path)
        if sampling.sampler == "fps1":
            wanted = fps1_indices(fps, sys.maxsize, sampling.window_s)  # frames past the end are simply not found
            stop = wanted[-1] + 1
        else:
            count = _count_frames(path, window_frames(fps, sampling.window_s))
            wanted = uniform_indices(fps, count, sampling.uniform_frames, sampling.window_s)
            stop = None  # the whole window: the packet count alone would take a truncated file at its word
        if not wanted:
            return []
        targets, frames = set(wanted), []

        def keep(index: int, frame: av.VideoFrame) -> None:
            if index in targets:
                frames.append(preprocess_image(frame.to_image(), sampling.image_size))

        _decode_window(path, container, stream, fps, sampling.window_s, stop, keep)
    return frames


def _count_frames(path: Path, limit: int) -> int:
    """Video packets in the file (= frames; empty ones and those an edit list hides excluded), counted without
    decoding and up to ``limit``."""
    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        tally = _Tally(container, stream, _frame_rate(stream, path))
        tally.count_rest(container.demux(stream), limit)
    return tally.packets


def probe_video(path: str | Path) -> str | None:
    """The usability check of the live regimes: open, find a video stream with a frame rate >= 1, decode the window
    [0, 31] s (no preprocessing) and check it is complete (module docstring); ``None`` when usable, else the one-line
    reason, the one ``decode_clip`` raises for either sampler."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            if not _decode_window(path, container, stream, _frame_rate(stream, path), WINDOW_SECONDS):
                return "no frame decoded"
    except VideoError as exc:
        return exc.problem
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        return f"undecodable: {one_line(exc)}"
    return None


def preprocess_image(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size`` (PIL bicubic), centre crop ``size``: uint8 ``[3, size, size]``."""
    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()  # [3, S, S]


def normalize_pixels(pixels: Tensor) -> Tensor:
    """uint8 ``[..., 3, S, S]`` -> float32 CLIP input ``(x / 255 - mean) / std``."""
    mean = torch.tensor(CLIP_MEAN, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device).view(3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def pack_clips(clips: Sequence[np.ndarray], max_frames: int) -> tuple[Tensor, Tensor]:
    """Concatenate clips: pixels uint8 ``[sum T, 3, S, S]`` (only real frames) and the mask ``[B, max_frames]``."""
    lengths = torch.tensor([len(c) for c in clips])
    if (lengths > max_frames).any() or (lengths < 1).any():
        raise ValueError(f"pack_clips: clip lengths {lengths.tolist()} outside 1..{max_frames}")
    pixels = torch.from_numpy(np.concatenate(clips))  # [N, 3, S, S]
    mask = torch.arange(max_frames)[None] < lengths[:, None]  # [B, F]
    return pixels, mask
