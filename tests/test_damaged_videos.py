"""Damaged videos (issue 16, item 2): copies of healthy 20 s AVI and MP4 clips truncated at 60 % of their bytes or
with garbage written into their middle are undecodable, with the frames decoded and the frames expected in the
problem, in problems.json and in the undecodable counts (feature store and live regime); healthy clips (shorter than
the window, an MP4 with an edit list, an AVI with null frames) decode fully and are never flagged.

Before the completeness check, the truncated AVI and MP4 copies and the AVI with garbage decoded as short clips
(12 and 18 of their 20 one-per-second samples) without a word."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from tests.test_didemo_fixtures import write_tiny_clip
from tvr_convbench.bench.data_cmd import main
from tvr_convbench.datasets.didemo_module import DidemoDataModule
from tvr_convbench.datasets.video import (
    PROBE_VERSION,
    FrameSampling,
    VideoError,
    VideoIndex,
    decode_clip,
    frames_short,
    probe_video,
)

FPS, SECONDS = 5, 20
FRAMES = FPS * SECONDS
"""frames of every healthy clip: 100, i.e. 20 one-per-second samples, all inside the 31 s window"""
CONTAINERS = {
    "avi-mpeg4": ("avi", "mpeg4", {}),
    "avi-mjpeg": ("avi", "mjpeg", {}),
    "mp4-h264": ("mp4", "libx264", {"movflags": "faststart"}),  # index first: a truncated copy still opens
    "mp4-h264-moovlast": ("mp4", "libx264", {}),  # index last: a truncated copy has no index, it cannot be opened
}
DAMAGES = ("truncated", "garbage")
COUNTS = re.compile(r"decoded (\d+) of (\d+) frames")


def write_clip(path: Path, fmt: str, codec: str, options: dict, frames: int = FRAMES) -> None:
    """A ``frames``-frame clip at ``FPS`` fps, 64 x 48, of seeded noise (so every frame takes real bytes)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.bit_rate = 400_000
        for _ in range(frames):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def damage(data: bytes, kind: str) -> bytes:
    """``truncated``: the first 60 % of the bytes; ``garbage``: a tenth of the file overwritten at its middle."""
    if kind == "truncated":
        return data[: int(0.6 * len(data))]
    middle, size = len(data) // 2, len(data) // 10
    junk = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    return data[:middle] + junk + data[middle + size :]


def write_trimmed_mp4(source: Path, path: Path, cut_s: float = 1.4) -> None:
    """``source`` remuxed with its first ``cut_s`` seconds before time 0, as ``ffmpeg -ss 1.4 -c copy`` (or a phone's
    trim) writes it: an edit list hides those frames, which the demuxer flags as discarded."""
    with av.open(str(source)) as src, av.open(str(path), "w", format="mp4") as out:
        video = src.streams.video[0]
        stream = out.add_stream_from_template(video)
        shift = int(round(cut_s / video.time_base))
        for packet in src.demux(video):
            if packet.dts is None:
                continue
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, stream
            out.mux(packet)


def write_null_frames_avi(source: Path, path: Path) -> None:
    """``source`` (an AVI) remuxed with every tenth frame replaced by an empty chunk: the null frames of
    variable-rate AVIs, counted by the header and skipped by the demuxer (10 of 100 frames here)."""
    with av.open(str(source)) as src, av.open(str(path), "w", format="avi") as out:
        video = src.streams.video[0]
        stream = out.add_stream_from_template(video)
        for k, packet in enumerate(src.demux(video)):
            if packet.dts is None:
                continue
            if k % 10 == 5:
                empty = av.Packet(0)
                empty.pts, empty.dts, empty.time_base = packet.pts, packet.dts, packet.time_base
                packet = empty
            packet.stream = stream
            out.mux(packet)


HEALTHY_EXTRA = {"trimmed.mp4": 93, "nulls.avi": 90, "short.avi": 35}
"""healthy clips beside the four sources, with the frames they decode"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{container}-{healthy|truncated|garbage}.{ext}`` for every container, plus ``HEALTHY_EXTRA``."""
    folder = tmp_path_factory.mktemp("damaged") / "videos"
    folder.mkdir()
    paths = {}
    for name, (fmt, codec, options) in CONTAINERS.items():
        healthy = folder / f"{name}-healthy.{fmt}"
        write_clip(healthy, fmt, codec, options)
        paths[healthy.name] = healthy
        for kind in DAMAGES:
            copy = folder / f"{name}-{kind}.{fmt}"
            copy.write_bytes(damage(healthy.read_bytes(), kind))
            paths[copy.name] = copy
    write_trimmed_mp4(paths["mp4-h264-healthy.mp4"], folder / "trimmed.mp4")
    write_null_frames_avi(paths["avi-mpeg4-healthy.avi"], folder / "nulls.avi")
    write_clip(folder / "short.avi", "avi", "mpeg4", {}, frames=35)  # 7 s
    paths.update({name: folder / name for name in HEALTHY_EXTRA})
    return paths


HEALTHY = {**{f"{name}-healthy.{fmt}": FRAMES for name, (fmt, _, _) in CONTAINERS.items()}, **HEALTHY_EXTRA}
"""every healthy clip, with the frames it decodes"""
DAMAGED = sorted(f"{name}-{kind}.{fmt}" for name, (fmt, _, _) in CONTAINERS.items() for kind in DAMAGES)


def test_the_clips_are_what_the_tests_assume(clips: dict[str, Path]) -> None:
    for name, frames in HEALTHY.items():
        with av.open(str(clips[name])) as container:
            assert sum(1 for _ in container.decode(video=0)) == frames, name
    with av.open(str(clips["trimmed.mp4"])) as container:
        assert container.streams.video[0].frames == FRAMES  # the header counts the 7 frames hidden by the edit list
    with av.open(str(clips["nulls.avi"])) as container:
        assert container.streams.video[0].frames == FRAMES  # and the 10 null frames
    assert sorted(clips) == sorted([*HEALTHY, *DAMAGED])


def test_healthy_clips_decode_fully(clips: dict[str, Path]) -> None:
    for name, frames in HEALTHY.items():
        path = clips[name]
        assert probe_video(path) is None, name
        assert len(decode_clip(path, FrameSampling())) == -(-frames // FPS), name  # one frame per started second
        assert len(decode_clip(path, FrameSampling("uniform", max_frames=12))) == 12, name


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_copies_are_undecodable(clips: dict[str, Path], container: str, kind: str) -> None:
    path = clips[f"{container}-{kind}.{CONTAINERS[container][0]}"]
    for sampling in (FrameSampling(), FrameSampling("uniform", max_frames=12)):
        with pytest.raises(VideoError) as info:
            decode_clip(path, sampling)
        message = str(info.value)
        assert message.startswith(f"{path}: undecodable") and "\n" not in message
        if container == "mp4-h264-moovlast" and kind == "truncated":
            continue  # no index: PyAV cannot open it, there is nothing to count
        decoded, expected = map(int, COUNTS.search(message).groups())
        assert expected == FRAMES and decoded <= FRAMES - FPS, message
    assert probe_video(path).startswith("undecodable")


def test_the_last_second_is_tolerated() -> None:
    """A stream may miss less than one second of the frames expected of it: a last partial second."""
    assert not frames_short(96, 100, 5.0) and frames_short(95, 100, 5.0)
    assert not frames_short(901, 930, 29.97) and frames_short(900, 930, 29.97)
    assert not frames_short(120, 100, 5.0) and not frames_short(0, 0, 25.0)


def test_damaged_videos_reach_problems_json_and_the_counts(clips: dict[str, Path], tmp_path: Path) -> None:
    """Through ``bench data features`` (problems.json, manifest counts, the frozen module's describe = data.json)
    and through the live regime's probes (its describe)."""
    videos = next(iter(clips.values())).parent
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    entries = [
        {"video": name, "description": "the man and the dog", "times": [[0, 0], [1, 1]], "annotation_id": i,
         "num_segments": 6, "dl_link": "https://example.invalid"}
        for i, name in enumerate(sorted(clips))
    ]  # fmt: skip
    (annotations / "val_data.json").write_text(json.dumps(entries))
    clip, store, cache = write_tiny_clip(tmp_path / "clip"), tmp_path / "store", tmp_path / "cache"
    argv = [
        "data", "features", "--annotations", str(annotations), "--videos", str(videos), "--clip", str(clip),
        "--out", str(store), "--splits", "val", "--max-frames", "32", "--max-words", "16", "--batch-size", "4",
        "--workers", "0", "--chunk-items", "8", "--device", "cpu", "--cache-dir", str(cache),
    ]  # fmt: skip
    assert main(argv) == 0
    problems = json.loads((store / "problems.json").read_text())
    assert [(p["video"], p["kind"]) for p in problems] == [(name, "undecodable") for name in DAMAGED]
    for row in problems:
        assert "undecodable" in row["detail"]
        if row["video"] != "mp4-h264-moovlast-truncated.mp4":
            assert f"of {FRAMES} frames" in row["detail"], row
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["splits"]["val"]["undecodable"] == len(DAMAGED)
    assert manifest["splits"]["val"]["items"] == len(HEALTHY)
    items = json.loads((store / "val" / "items.json").read_text())
    assert sorted(item["video"] for item in items) == sorted(HEALTHY)

    frozen = DidemoDataModule(store=str(store), max_frames=32, max_words=16, cache_dir=str(cache))
    facts = frozen.describe()
    assert facts["counts"]["val"]["undecodable"] == len(DAMAGED)
    assert sorted(p["video"] for p in facts["problems"]) == DAMAGED

    live = DidemoDataModule(
        regime="partial", annotations=str(annotations), videos=str(videos), clip=str(clip), max_frames=32,
        max_words=16, cache_dir=str(cache),
    )  # fmt: skip
    assert len(live.split("val")) == len(HEALTHY)
    facts = live.describe()
    assert facts["counts"]["val"]["undecodable"] == len(DAMAGED)
    assert sorted(p["video"] for p in facts["problems"]) == DAMAGED


def test_cached_probes_of_the_older_check_are_not_trusted(clips: dict[str, Path], tmp_path: Path) -> None:
    """An index cache written before the completeness check says the truncated AVI is usable; it is probed again."""
    videos, cache = next(iter(clips.values())).parent, tmp_path / "cache"
    index = VideoIndex.build(videos, cache)
    path = index.resolve("avi-mpeg4-truncated.avi")
    stale = {"listing": index.listing, "files": index.files, "probes": {path.name: None}}  # no probe_version
    index.cache_path.write_text(json.dumps(stale))
    again = VideoIndex.build(videos, cache)
    verdict = again.probe([path])[path]
    assert verdict.startswith("undecodable: decoded") and int(COUNTS.search(verdict).group(2)) == FRAMES
    assert json.loads(again.cache_path.read_text())["probe_version"] == PROBE_VERSION
