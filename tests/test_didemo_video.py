"""DiDeMo videos: the name rule and its cached index, the samplers against literal re-implementations of the reference
loops, PyAV decoding of real containers (frames identified by their grey level), preprocessing, failure reports."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_didemo_fixtures import VAL_JSON, make_video_fixture, reference_means
from tvr_convbench.datasets import video as video_mod
from tvr_convbench.datasets.video import (
    CLIP_MEAN,
    CLIP_STD,
    FrameSampling,
    VideoError,
    VideoIndex,
    decode_clip,
    fps1_indices,
    normalize_pixels,
    pack_clips,
    preprocess_image,
    probe_video,
    subsample,
    uniform_indices,
    video_key,
)

RATES = (1, 2, 2.5, 3, 5, 6, 7.5, 12, 12.5, 14.985, 15, 23.976, 24, 25, 29.97, 30, 50, 59.94, 60)


def opencv_fps1(fps: float, frame_count: int, start: int = 0, end: int = 31) -> list[int]:
    """CLIP4Clip ``RawVideoExtractorCV2.video_to_tensor`` with ``sample_fp=1``, start 0, end 31, re-done literally:
    frame indices it reads before the first failed read."""
    fps = int(fps)
    total_duration = (frame_count + fps - 1) // fps
    end_sec = end if end <= total_duration else total_duration
    read = []
    for sec in np.arange(start, end_sec + 1):
        for ind in list(np.arange(0, fps, fps // 1))[:1]:
            index = int(sec * fps) + ind
            if index >= frame_count:  # cap.read() fails past the last frame; the loop stops
                return read
            read.append(index)
    return read


def tmass_uniform(fps: float, frame_count: int, num_frames: int, end_time: int = 31) -> list[int]:
    """T-MASS ``video_to_tensor_xpool`` (sample "uniform", start 0, end 31) re-done literally, except
    ``int(acc_samples)`` (the reference passes a float to linspace when the window holds fewer than ``num_frames``
    frames, which NumPy rejects)."""
    total_duration = frame_count / fps
    end_time = min(end_time, total_duration)
    vlen = end_time * fps
    acc_samples = min(num_frames, vlen)
    intervals = np.linspace(start=0, stop=end_time * fps, num=int(acc_samples) + 1).astype(int)
    ranges = [(interval, intervals[i + 1] - 1) for i, interval in enumerate(intervals[:-1])]
    return [(x[0] + x[1]) // 2 for x in ranges]


# --- samplers ---------------------------------------------------------------------------------------------------
def test_fps1_indices_match_the_opencv_loop() -> None:
    for fps in RATES:
        for count in range(1, 2200, 13):
            assert fps1_indices(fps, count) == opencv_fps1(fps, count), (fps, count)
    assert len(fps1_indices(30, 10_000)) == 32  # seconds 0..31
    with pytest.raises(ValueError, match="below 1 fps"):
        fps1_indices(0.5, 100)


def test_uniform_indices_match_tmass() -> None:
    for fps in RATES:
        for count in range(1, 2200, 13):
            for frames in (1, 12):
                assert uniform_indices(fps, count, frames) == tmass_uniform(fps, count, frames), (fps, count, frames)
    indices = uniform_indices(30, 3000, 12)  # a long video: 12 middles of [0, 930)
    assert len(indices) == 12 and indices[0] == 38 and indices[-1] == 890


def test_subsample_is_slice_framepos_2() -> None:
    assert subsample(5, 64) == [0, 1, 2, 3, 4]
    assert subsample(32, 8) == np.linspace(0, 31, num=8, dtype=int).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]


def test_frame_sampling_validates() -> None:
    with pytest.raises(ValueError, match="field 'max_frames'"):
        FrameSampling(max_frames=0)
    with pytest.raises(ValueError, match="uniform_frames 12 exceeds the 8 frame slots"):
        FrameSampling("uniform", max_frames=8)
    with pytest.raises(ValueError, match="field 'sampler'"):
        FrameSampling("every-frame")  # type: ignore[arg-type]


# --- names ------------------------------------------------------------------------------------------------------
def test_video_key_strips_extensions_and_dots() -> None:
    assert video_key("1@N0_2_ab.mov") == "1@N0_2_ab"
    assert video_key("1@N0_2_ab.mov.mp4") == "1@N0_2_ab"
    assert video_key("1@N0_2_ab.") == "1@N0_2_ab"
    assert video_key("1@N0_2_ab..mp4") == "1@N0_2_ab"
    assert video_key("1@N0_2_ab.MTS") == "1@N0_2_ab"
    assert video_key("notes.txt") == "notes.txt"


def test_resolution_prefers_exact_then_appended_then_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mov", "a.mov.mp4", "a.mp4", "b.avi.mp4", "sub/b.mp4", "c.", ".hidden.mp4"):
        (folder / name).write_bytes(b"x")
    index = VideoIndex.build(folder)
    assert index.resolve("a.mov") == folder.resolve() / "a.mov"
    assert index.resolve("b.avi") == folder.resolve() / "b.avi.mp4"
    assert index.resolve("c.") == folder.resolve() / "c."
    assert index.resolve("hidden.mp4") is None and index.resolve("d.mov") is None
    (folder / "a.mov").unlink()
    assert VideoIndex.build(folder).resolve("a.mov") == folder.resolve() / "a.mov.mp4"
    (folder / "a.mov.mp4").unlink()
    assert VideoIndex.build(folder).resolve("a.mov") == folder.resolve() / "a.mp4"
    with pytest.raises(VideoError, match="video folder not found"):
        VideoIndex.build(tmp_path / "nowhere")


def test_index_is_cached_by_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, cache = tmp_path / "v", tmp_path / "cache"
    folder.mkdir()
    (folder / "a.mov").write_bytes(b"x")
    first = VideoIndex.build(folder, cache)
    assert [p.name for p in cache.iterdir()] == [first.cache_path.name]
    with monkeypatch.context() as patch:
        patch.setattr(video_mod, "video_key", lambda name: pytest.fail("rebuilt although the listing is unchanged"))
        again = VideoIndex.build(folder, cache)
    assert again.files == first.files and again.listing == first.listing
    (folder / "b.avi.mp4").write_bytes(b"xy")
    changed = VideoIndex.build(folder, cache)
    assert changed.listing != first.listing and changed.resolve("b.avi") is not None
    assert len(list(cache.iterdir())) == 2


# --- decoding ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory):
    if not VAL_JSON.is_file():
        pytest.skip(f"{VAL_JSON} (official DiDeMo val) not present")
    return make_video_fixture(tmp_path_factory.mktemp("didemo-video"))


def _decodable(fixture):
    return [v for v in fixture.items if v.file is not None and not v.corrupt]


def _assert_frames_are(clip: np.ndarray, path: Path, expected: list[int]) -> None:
    """Each decoded frame is flat and its grey level is that of source frame ``expected[k]`` (nearest of all)."""
    reference = reference_means(path)
    assert clip.dtype == np.uint8 and clip.shape == (len(expected), 3, 224, 224)
    for frame, index in zip(clip, expected, strict=True):
        level = frame.astype(np.float32).mean()
        assert frame.max() - frame.min() <= 2, "a flat frame stays flat through resize and crop"
        assert abs(level - reference[index]) < 0.75
        assert int(np.abs(reference - level).argmin()) == index


def test_fps1_decoding_picks_the_first_frame_of_each_second(fixture) -> None:
    for video in _decodable(fixture):
        path = fixture.videos / video.file
        clip = decode_clip(path, FrameSampling())
        _assert_frames_are(clip, path, opencv_fps1(float(video.fps), video.frames))
    lengths = {v.file: len(opencv_fps1(float(v.fps), v.frames)) for v in _decodable(fixture)}
    assert sorted(lengths.values()) == [3, 5, 7, 12, 20, 32]


def test_uniform_decoding_takes_segment_middles(fixture) -> None:
    sampling = FrameSampling("uniform", max_frames=12, uniform_frames=12)
    for video in _decodable(fixture):
        path = fixture.videos / video.file
        _assert_frames_are(decode_clip(path, sampling), path, tmass_uniform(float(video.fps), video.frames, 12))


def test_more_frames_than_slots_are_subsampled(fixture) -> None:
    video = max(_decodable(fixture), key=lambda v: len(opencv_fps1(float(v.fps), v.frames)))
    path = fixture.videos / video.file
    all_frames = opencv_fps1(float(video.fps), video.frames)
    clip = decode_clip(path, FrameSampling(max_frames=8))
    _assert_frames_are(clip, path, [all_frames[i] for i in subsample(len(all_frames), 8)])


def test_missing_and_corrupt_files_raise_and_probe(fixture) -> None:
    corrupt = next(v for v in fixture.items if v.corrupt)
    for path in (fixture.videos / corrupt.file, fixture.videos / "absent.mov"):
        with pytest.raises(VideoError) as info:
            decode_clip(path, FrameSampling())
        message = str(info.value)
        assert message.startswith(str(path)) and "undecodable" in message and "\n" not in message
        assert probe_video(path).startswith("undecodable")
    assert all(probe_video(fixture.videos / v.file) is None for v in _decodable(fixture))
    index = VideoIndex.build(fixture.videos)
    resolved = {v.entry: index.resolve(v.entry) for v in fixture.items}
    assert {e for e, p in resolved.items() if p is None} == set(fixture.by_kind("missing"))
    assert all(resolved[v.entry].name == v.file for v in fixture.items if v.file is not None)


# --- preprocessing ----------------------------------------------------------------------------------------------
def test_preprocess_resizes_the_short_side_and_crops_the_centre() -> None:
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (224, 301, 3), dtype=np.uint8)  # short side already 224: no resize
    out = preprocess_image(Image.fromarray(wide), 224)
    left = int(round((301 - 224) / 2.0))  # 38
    np.testing.assert_array_equal(out, wide[:, left : left + 224].transpose(2, 0, 1))
    tall = rng.integers(0, 256, (300, 150, 3), dtype=np.uint8)  # -> 224 x 448, crop rows 112..336
    out = preprocess_image(Image.fromarray(tall), 224)
    resized = np.asarray(Image.fromarray(tall).resize((224, 448), Image.BICUBIC))
    np.testing.assert_array_equal(out, resized[112:336].transpose(2, 0, 1))


def test_normalize_pixels_is_clip_mean_std() -> None:
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    expected = (pixels.double() / 255 - torch.tensor(CLIP_MEAN).double().view(3, 1, 1)) / torch.tensor(
        CLIP_STD
    ).double().view(3, 1, 1)
    out = normalize_pixels(pixels)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=0)


def test_pack_clips_keeps_only_real_frames() -> None:
    clips = [np.full((n, 3, 2, 2), n, dtype=np.uint8) for n in (2, 1, 3)]
    pixels, mask = pack_clips(clips, max_frames=4)
    assert pixels.shape == (6, 3, 2, 2) and pixels[:, 0, 0, 0].tolist() == [2, 2, 1, 3, 3, 3]
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False], [True, True, True, False]]
    with pytest.raises(ValueError, match="outside 1..2"):
        pack_clips(clips, max_frames=2)


def test_decoding_throughput(fixture) -> None:
    """Not a timed assertion: prints frames/s of fps1 decoding + preprocessing on the fixture (2 CPU cores)."""
    videos = _decodable(fixture)
    start, frames = time.perf_counter(), 0
    for _ in range(3):
        for video in videos:
            frames += len(decode_clip(fixture.videos / video.file, FrameSampling()))
    seconds = time.perf_counter() - start
    assert frames == 3 * (3 + 5 + 7 + 12 + 20 + 32)
    print(f"\nfps1 decode + preprocess: {frames / seconds:.0f} frames/s ({3 * len(videos) / seconds:.1f} videos/s)")
