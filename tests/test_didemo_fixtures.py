"""Fixtures shared by the ``test_didemo_*`` files (tiny real videos, a tiny random CLIP with an offline tokenizer),
plus tests that the fixtures are what the other tests assume.

Videos are written with PyAV at test time, named after real entries of the official ``val_data.json`` (read from
the shared data folder, never copied into the repository). Every frame is a flat grey whose level encodes the
frame's index (16 + 3 i), so a decoded frame identifies the source frame it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import pytest
import torch

SHARED_CANDIDATES = (
    *([Path(os.environ["TVR_SHARED_DIR"])] if os.environ.get("TVR_SHARED_DIR") else []),
    Path(__file__).resolve().parents[2] / "shared",  # ../shared beside the checkout (the workspace and CI layout)
    Path("/work/shared"),  # a clone elsewhere on the same machine
)
VAL_JSON = next(
    (p / "data/didemo/val_data.json" for p in SHARED_CANDIDATES if (p / "data/didemo/val_data.json").is_file()),
    SHARED_CANDIDATES[0] / "data/didemo/val_data.json",
)
needs_val_json = pytest.mark.skipif(not VAL_JSON.is_file(), reason=f"{VAL_JSON} (official DiDeMo val) not present")
TINY_WORDS = ("the", "man", "woman", "dog", "camera", "and", "in", "a", "to", "of")


@cache
def val_entries() -> tuple[dict, ...]:
    return tuple(json.loads(VAL_JSON.read_text(encoding="utf-8")))


def first_video(extension: str, skip: int = 0) -> str:
    """The ``skip``-th distinct video of val_data.json whose name ends with ``extension``."""
    names = list(dict.fromkeys(e["video"] for e in val_entries() if e["video"].endswith(extension)))
    return names[skip]


def write_video(path: Path, *, fmt: str, codec: str, fps: Fraction | int, frames: int, size=(64, 48)) -> None:
    """A video whose frame i is a flat grey of level 16 + 3 i (``frames`` <= 75), encoded near-losslessly so that
    adjacent frames stay distinguishable."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps, options={"qp": "0"} if codec == "libx264" else {})
        stream.bit_rate = 4_000_000
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), 16 + 3 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def reference_means(path: Path) -> np.ndarray:
    """Mean RGB level of every decoded frame (the oracle for which source frame a sample came from)."""
    with av.open(str(path)) as container:
        return np.array([f.to_ndarray(format="rgb24").mean() for f in container.decode(video=0)])


@dataclass
class FixtureVideo:
    entry: str
    """the list entry (original file name)"""
    file: str | None
    """the file written for it (None: missing)"""
    fps: Fraction | int = 1
    frames: int = 0
    corrupt: bool = False


@dataclass
class VideoFixture:
    videos: Path
    annotations: Path
    items: list[FixtureVideo] = field(default_factory=list)

    def by_kind(self, kind: str) -> list[str]:
        if kind == "missing":
            return [v.entry for v in self.items if v.file is None]
        if kind == "undecodable":
            return [v.entry for v in self.items if v.corrupt]
        return [v.entry for v in self.items if v.file is not None and not v.corrupt]


def fixture_plan() -> list[tuple[FixtureVideo, dict]]:
    """Six decodable videos in four containers and every naming variant, one missing file, one corrupt file."""
    mov, avi, mpg, avi2 = first_video(".mov"), first_video(".avi"), first_video(".mpg"), first_video(".avi", 1)
    bare, m4v, gp3 = first_video("."), first_video(".m4v"), first_video(".3gp")
    mp4 = first_video(".mp4")
    return [
        (FixtureVideo(mov, mov, 5, 60), {"fmt": "mov", "codec": "mpeg4"}),  # exact name, 12 s
        (FixtureVideo(avi, avi + ".mp4", 2, 70), {"fmt": "mp4", "codec": "libx264"}),  # X.avi.mp4, 35 s
        (FixtureVideo(mpg, mpg[:-4] + ".mp4", Fraction(5, 2), 40), {"fmt": "mp4", "codec": "mpeg4"}),  # X.mp4
        (FixtureVideo(avi2, avi2, 3, 20), {"fmt": "avi", "codec": "mjpeg", "size": (48, 64)}),  # avi, portrait
        (FixtureVideo(bare, bare, 1, 5), {"fmt": "mp4", "codec": "mpeg4"}),  # a name ending in "."
        (FixtureVideo(mp4, mp4, 30, 75), {"fmt": "avi", "codec": "mpeg4"}),  # 2.5 s at 30 fps
        (FixtureVideo(m4v, None), {}),  # missing
        (FixtureVideo(gp3, gp3, corrupt=True), {}),  # corrupt
    ]


def make_video_fixture(root: Path) -> VideoFixture:
    """Write the videos, a ``val_data.json`` with their real entries and a ``val_list.txt``."""
    fixture = VideoFixture(videos=root / "videos", annotations=root / "annotations")
    fixture.videos.mkdir(parents=True)
    fixture.annotations.mkdir(parents=True)
    for video, options in fixture_plan():
        fixture.items.append(video)
        if video.corrupt:
            (fixture.videos / video.file).write_bytes(b"\x00not a video\xff" * 64)
        elif video.file is not None:
            write_video(fixture.videos / video.file, fps=video.fps, frames=video.frames, **options)
    (fixture.videos / "notes.txt").write_text("not a video\n")
    names = [v.entry for v in fixture.items]
    entries = [e for e in val_entries() if e["video"] in set(names)]
    (fixture.annotations / "val_data.json").write_text(json.dumps(entries))
    (fixture.annotations / "val_list.txt").write_text("\n".join(names) + "\n")
    return fixture


def write_tiny_clip(folder: Path, seed: int = 0, layers: int = 3) -> Path:
    """A random-init ``CLIPModel`` (width 32, ``layers`` blocks per tower, projection 16, 224 px, patch 32) and a
    byte-level BPE ``CLIPTokenizer`` (all 256 byte symbols, their ``</w>`` forms and merges for a few words)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab, merges = symbols + [s + "</w>" for s in symbols], []
    for word in TINY_WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1], *parts[2:]]
            if parts[0] not in vocab:
                vocab.append(parts[0])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers, "num_attention_heads": 2}
    text = {**tower, "vocab_size": len(vocab), "max_position_embeddings": 77}
    text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    config = CLIPConfig(
        text_config=text, vision_config={**tower, "image_size": 224, "patch_size": 32}, projection_dim=16
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- tests of the fixtures themselves ---------------------------------------------------------------------------
@needs_val_json
def test_fixture_videos_have_the_planned_frames(tmp_path: Path) -> None:
    fixture = make_video_fixture(tmp_path)
    for video in fixture.items:
        if video.file is None or video.corrupt:
            continue
        means = reference_means(fixture.videos / video.file)
        assert len(means) == video.frames, video.file
        assert np.diff(means).min() > 1.5, "frames must stay increasing and distinguishable after the codec"
        with av.open(str(fixture.videos / video.file)) as container:
            assert float(container.streams.video[0].guessed_rate) == float(video.fps)


@needs_val_json
def test_fixture_names_cover_the_variants(tmp_path: Path) -> None:
    fixture = make_video_fixture(tmp_path)
    files = {v.entry: v.file for v in fixture.items}
    assert any(f == e for e, f in files.items() if f and e.endswith(".mov"))
    assert any(f == e + ".mp4" for e, f in files.items() if f)
    assert any(f and e.endswith(".mpg") and f.endswith(".mp4") and not f.startswith(e) for e, f in files.items())
    assert any(e.endswith(".") and f == e for e, f in files.items())
    assert len(fixture.by_kind("missing")) == 1 and len(fixture.by_kind("undecodable")) == 1
    listed = (fixture.annotations / "val_list.txt").read_text().split()
    assert listed == [v.entry for v in fixture.items]


def test_tiny_tokenizer_is_byte_level_bpe(tmp_path: Path) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    folder = write_tiny_clip(tmp_path / "clip")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = tokenizer("The man, the DOG!", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["the</w>", "man</w>"] and "dog</w>" in tokens
    assert tokenizer.decode(ids).replace(" ", "") == "theman,thedog!"
    model = CLIPModel.from_pretrained(folder)
    assert model.config.projection_dim == 16 and len(model.text_model.encoder.layers) == 3
