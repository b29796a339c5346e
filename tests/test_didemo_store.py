"""Tiny random CLIP end to end: tokenisation and features against the ``transformers`` API, ``bench data features``
into the store, the ``didemo`` module in the frozen regime (store) and the partial regime (videos + ClipBackbone,
gradients reaching exactly the trainable blocks), resumable byte-identical extraction, and every refusal."""

from __future__ import annotations

import json
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_didemo_fixtures import VAL_JSON, VideoFixture, make_video_fixture, write_tiny_clip
from tests.test_didemo_video import opencv_fps1
from tvr_convbench.bench.data_cmd import build_parser, extract_features, main
from tvr_convbench.datasets.base import FeatureBackbone, FeatureDims
from tvr_convbench.datasets.clip import (
    ClipBackbone,
    encode_frames,
    encode_text,
    load_clip,
    tokenize,
    trainable_prefixes,
)
from tvr_convbench.datasets.didemo import read_annotations
from tvr_convbench.datasets.didemo_module import DidemoDataModule
from tvr_convbench.datasets.feature_store import ARRAYS, FeatureStore, StoreError, compare_settings

MAX_FRAMES, MAX_WORDS = 32, 16


@dataclass
class World:
    fixture: VideoFixture
    clip: Path
    store: Path
    cache: Path
    extraction_s: float

    def argv(self, out: Path, *extra: str) -> list[str]:
        return [
            "data", "features", "--annotations", str(self.fixture.annotations), "--videos", str(self.fixture.videos),
            "--clip", str(self.clip), "--out", str(out), "--splits", "val", "--max-frames", str(MAX_FRAMES),
            "--max-words", str(MAX_WORDS), "--batch-size", "2", "--workers", "0", "--chunk-items", "2",
            "--device", "cpu", "--cache-dir", str(self.cache), *extra,
        ]  # fmt: skip

    def module(self, **overrides) -> DidemoDataModule:
        kwargs = {"max_frames": MAX_FRAMES, "max_words": MAX_WORDS, "cache_dir": str(self.cache)}
        if overrides.get("regime", "frozen") == "frozen":
            kwargs["store"] = str(self.store)
        else:
            kwargs.update(
                annotations=str(self.fixture.annotations), videos=str(self.fixture.videos), clip=str(self.clip)
            )
        return DidemoDataModule(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    if not VAL_JSON.is_file():
        pytest.skip(f"{VAL_JSON} (official DiDeMo val) not present")
    root = tmp_path_factory.mktemp("didemo-store")
    fixture = make_video_fixture(root)
    world = World(fixture, write_tiny_clip(root / "clip"), root / "store", root / "cache", 0.0)
    start = time.perf_counter()
    assert main(world.argv(world.store)) == 0
    world.extraction_s = time.perf_counter() - start
    return world


def stored_order(world: World) -> list[str]:
    """Usable fixture videos in annotation order (first appearance in the JSON)."""
    usable = set(world.fixture.by_kind("usable"))
    entries = read_annotations(world.fixture.annotations / "val_data.json")
    return [v for v in dict.fromkeys(e.video for e in entries) if v in usable]


def frame_counts(world: World) -> dict[str, int]:
    return {v.entry: len(opencv_fps1(float(v.fps), v.frames)) for v in world.fixture.items if v.frames}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys: pytest.CaptureFixture) -> str:
    """The last stderr line (progress bars may precede it), which must be the whole one-line error."""
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".chunk")]


# --- CLIP pieces against the transformers API -------------------------------------------------------------------
def test_tokenize_is_sot_bpe_eot_zero_padded(world: World) -> None:
    _, tokenizer = load_clip(world.clip)
    texts = ["the man and the dog", "the camera &amp; a woman in the dog and the man of a camera to the man"]
    ids, mask = tokenize(tokenizer, texts, max_words=8)
    bpe = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("the man and the dog", texts[1])]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert ids[0].tolist() == [bos, *bpe[0], eos, 0]
    assert ids[1].tolist() == [bos, *tokenizer(texts[1].replace("&amp;", "&"))["input_ids"][1:7], eos]
    assert len(bpe[1]) > 6 and mask.tolist() == [[True] * 7 + [False], [True] * 8]


def test_text_and_frame_features_match_transformers(world: World) -> None:
    model, tokenizer = load_clip(world.clip)
    ids, mask = tokenize(tokenizer, ["the man", "a dog in the camera and a woman"], MAX_WORDS)
    pixels = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        tokens, eot = encode_text(model, ids, mask)
        torch.testing.assert_close(eot, model.get_text_features(input_ids=ids).pooler_output)
        hidden = model.text_model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(tokens, hidden @ model.text_projection.weight.t())
        torch.testing.assert_close(
            encode_frames(model, pixels), model.get_image_features(pixel_values=pixels).pooler_output
        )
    assert tokens.shape == (2, MAX_WORDS, 16) and eot.shape == (2, 16)


# --- the store --------------------------------------------------------------------------------------------------
def test_store_counts_items_and_problem_report(world: World) -> None:
    manifest = json.loads((world.store / "manifest.json").read_text())
    counts = manifest["splits"]["val"]
    assert counts["listed"] == 8 and counts["annotated"] == 8
    assert (counts["items"], counts["missing"], counts["undecodable"]) == (6, 1, 1)
    problems = json.loads((world.store / "problems.json").read_text())
    assert {(p["video"], p["kind"]) for p in problems} == {
        (world.fixture.by_kind("missing")[0], "missing"),
        (world.fixture.by_kind("undecodable")[0], "undecodable"),
    }
    items = json.loads((world.store / "val" / "items.json").read_text())
    assert [i["video"] for i in items] == stored_order(world)
    descriptions: dict[str, list[str]] = {}
    for entry in json.loads((world.fixture.annotations / "val_data.json").read_text()):
        descriptions.setdefault(entry["video"], []).append(entry["description"])
    assert all(i["paragraph"] == " ".join(descriptions[i["video"]]) for i in items)
    assert (
        manifest["settings"]["protocol"]["max_frames"] == MAX_FRAMES and len(manifest["settings"]["clip_sha256"]) == 64
    )
    assert not (world.store / ".partial").exists() and no_leftovers(world.store)
    rate = 8 / world.extraction_s
    print(f"\nbench data features, whole command (tiny CLIP, 8 listed videos, 2 cores): {rate:.2f} videos/s")


def test_frozen_module_yields_feature_batches(world: World) -> None:
    module = world.module()
    assert module.dims == FeatureDims(16, MAX_FRAMES, MAX_WORDS)
    split = module.split("val")
    assert len(split) == 6
    batch = split[[0, 2, 5]]
    assert batch["video_frames"].shape == (3, MAX_FRAMES, 16) and batch["video_frames"].dtype == torch.float32
    assert batch["text_tokens"].shape == (3, MAX_WORDS, 16) and batch["text_eot"].shape == (3, 16)
    assert batch["index"].tolist() == [0, 2, 5]
    counts, order = frame_counts(world), stored_order(world)
    assert batch["video_mask"].sum(1).tolist() == [counts[order[i]] for i in (0, 2, 5)]
    model, tokenizer = load_clip(world.clip)
    paragraphs = [json.loads((world.store / "val" / "items.json").read_text())[i]["paragraph"] for i in (0, 2, 5)]
    assert torch.equal(batch["text_mask"], tokenize(tokenizer, paragraphs, MAX_WORDS)[1])
    with torch.no_grad():
        blank = ClipBackbone(model).blank_frame().half().float()
    padded = batch["video_frames"][~batch["video_mask"]]  # [P, D]
    torch.testing.assert_close(padded, blank.expand_as(padded), atol=2e-3, rtol=2e-3)
    last = batch["text_mask"].sum(1) - 1
    torch.testing.assert_close(batch["text_eot"], batch["text_tokens"][torch.arange(3), last])
    shipped = pickle.dumps(split)  # what a spawned DataLoader worker receives: file names, not arrays
    assert len(shipped) < 10_000 and all(torch.equal(pickle.loads(shipped)[[0, 2, 5]][k], v) for k, v in batch.items())
    assert isinstance(module.backbone(), FeatureBackbone)
    facts = module.describe()
    assert facts["counts"]["val"]["items"] == 6 and len(facts["problems"]) == 2
    with pytest.raises(StoreError, match="the store has no split 'train'"):
        module.split("train")


def test_partial_module_batches_give_the_stored_features(world: World) -> None:
    module = world.module(regime="partial", trainable_blocks=1, workers=1)
    split = module.split("val")
    assert len(split) == 6
    facts = module.describe()
    assert {p["video"] for p in facts["problems"]} == set(
        world.fixture.by_kind("missing") + world.fixture.by_kind("undecodable")
    )
    raw = next(iter(module.loader("val", [[0, 1, 2, 3, 4, 5]])))  # decoded in a DataLoader worker
    counts, order = frame_counts(world), stored_order(world)
    assert raw["pixels"].dtype == torch.uint8 and raw["pixels"].shape == (sum(counts[v] for v in order), 3, 224, 224)
    assert raw["video_mask"].sum(1).tolist() == [counts[v] for v in order]
    assert raw["text_ids"].dtype == torch.long and raw["text_ids"].shape == (6, MAX_WORDS)
    backbone = module.backbone()
    with torch.no_grad():
        features = backbone(raw)
    stored = world.module().split("val")[list(range(6))]
    for key in ("video_frames", "text_tokens", "text_eot"):
        scale = stored[key].abs().max()
        torch.testing.assert_close(features[key], stored[key], atol=2e-3 * scale, rtol=2e-3)
    for key in ("video_mask", "text_mask", "index"):
        assert torch.equal(features[key], stored[key])


def test_partial_regime_gradients_reach_exactly_the_trainable_blocks(world: World) -> None:
    module = world.module(regime="partial", trainable_blocks=1)
    raw = module.split("val")[[0, 3]]
    backbone = module.backbone().train()
    expected = {
        name
        for name, _ in backbone.clip.named_parameters()
        if name.startswith(("text_model.encoder.layers.2.", "vision_model.encoder.layers.2."))
        or name.split(".")[0] in ("text_projection", "visual_projection")
        or name.startswith(("text_model.final_layer_norm.", "vision_model.post_layernorm."))
    }
    assert len(expected) == 2 * 16 + 4 + 2
    features = backbone(raw)
    loss = sum(features[key].square().mean() for key in ("text_tokens", "text_eot", "video_frames"))
    loss.backward()
    for name, param in backbone.clip.named_parameters():
        assert param.requires_grad == (name in expected), name
        if name in expected:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    groups = backbone.param_groups(weight_decay=0.2)
    assert {g["role"] for g in groups} == {"backbone"}
    assert sum(len(g["params"]) for g in groups) == len(expected)
    assert backbone.text_model is backbone.clip.text_model and len(backbone.text_model.encoder.layers) == 3


def test_regimes_choose_the_trainable_parameters(world: World) -> None:
    model, _ = load_clip(world.clip)
    names = [n for n, _ in model.named_parameters()]
    assert trainable_prefixes(model, "frozen", 2) == ()
    full = [n for n in names if n.startswith(trainable_prefixes(model, "full", 0))]
    assert set(names) - set(full) == {"logit_scale"}
    backbone = ClipBackbone(model, regime="frozen")
    assert not any(p.requires_grad for p in backbone.parameters())
    with pytest.raises(ValueError, match="field 'trainable_blocks': must be in 0..3, got 4"):
        ClipBackbone(model, regime="partial", trainable_blocks=4)


# --- resuming and refusing --------------------------------------------------------------------------------------
class Interrupted(Exception):
    pass


def interrupt_after_first_chunk(split: str, chunk: int) -> None:
    raise Interrupted(f"{split} chunk {chunk}")


def test_interrupted_extraction_resumes_byte_identical(world: World, tmp_path: Path) -> None:
    out = tmp_path / "store"
    with pytest.raises(Interrupted):
        extract_features(build_parser().parse_args(world.argv(out)), on_chunk=interrupt_after_first_chunk)
    assert sorted(p.name for p in (out / ".partial" / "val").iterdir()) == ["chunk-00000"]
    assert not (out / "manifest.json").exists()
    with pytest.raises(StoreError, match=r"manifest\.json: not found: .*interrupted"):
        FeatureStore.open(out)
    assert main(world.argv(out)) == 0
    assert tree(out) == tree(world.store)
    assert set(tree(out)) == {"manifest.json", "problems.json", "val/items.json", *(f"val/{k}.npy" for k in ARRAYS)}


def test_store_refuses_other_settings(world: World, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = tree(world.store)
    assert main(world.argv(world.store, "--max-words", "20")) == 2
    err = error_line(capsys)
    assert "manifest.json" in err and "field 'settings.protocol.max_words'" in err
    assert tree(world.store) == before
    out = tmp_path / "partial"
    with pytest.raises(Interrupted):
        extract_features(build_parser().parse_args(world.argv(out)), on_chunk=interrupt_after_first_chunk)
    assert main(world.argv(out, "--sampler", "uniform")) == 2
    err = error_line(capsys)
    assert ".partial/settings.json" in err and "field 'settings.protocol.sampler'" in err


def test_compare_settings_names_the_first_differing_field(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    stored = {"protocol": {"max_frames": 64, "sampler": "fps1"}, "splits": ["val"]}
    compare_settings(path, stored, {"protocol": {"max_frames": 64}})  # a subset is enough without exact
    with pytest.raises(StoreError, match=r"'settings.protocol.sampler': the store has 'fps1', requested 'uniform'$"):
        compare_settings(path, stored, {"protocol": {"sampler": "uniform"}})
    with pytest.raises(StoreError, match=r"field 'settings.splits': the store has \['val'\], requested nothing$"):
        compare_settings(path, stored, {"protocol": {"max_frames": 64, "sampler": "fps1"}}, exact=True)


def test_frozen_module_rejects_a_disagreeing_store(world: World, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"manifest\.json: field 'settings\.protocol\.max_frames': the store has 32"):
        world.module(max_frames=64).setup()
    other = write_tiny_clip(tmp_path / "other-clip", seed=1)
    with pytest.raises(StoreError, match="field 'settings.clip_sha256'"):
        world.module(clip=str(other)).setup()
    world.module(clip=str(world.clip)).setup()  # the same checkpoint passes


def test_non_finite_store_is_refused(world: World, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(world.store, store)
    eot = np.load(store / "val" / "text_eot.npy", mmap_mode="r+")
    eot[4, 3] = np.nan
    eot.flush()
    del eot
    with pytest.raises(StoreError) as info:
        FeatureStore.open(store)
    assert str(info.value) == f"{store}/val/text_eot.npy: field 'text_eot': non-finite value (NaN or inf) in item 4"


def test_strict_extraction_fails_on_the_missing_video(world: World, tmp_path: Path, capsys) -> None:
    out = tmp_path / "strict"
    assert main(world.argv(out, "--strict")) == 2
    err = error_line(capsys)
    assert world.fixture.by_kind("missing")[0] in err and "strict" in err
    problems = json.loads((out / "problems.json").read_text())
    assert [(p["video"], p["kind"]) for p in problems] == [(world.fixture.by_kind("missing")[0], "missing")]
    assert not (out / "manifest.json").exists() and no_leftovers(out)
    with pytest.raises(ValueError, match="split val: 2 videos not usable"):
        world.module(regime="partial", strict=True).split("val")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("--splits", "val,dev"), "--splits: field 'splits'"),
        (("--max-words", "100"), "--max-words: must be in 3..77"),
        (("--clip", "/nonexistent/clip"), "/nonexistent/clip: no such folder"),
        (("--videos", "/nonexistent/videos"), "/nonexistent/videos: video folder not found"),
        (("--splits", "test"), "test_data.json: file not found"),
        (("--max-frames", "0"), "frame sampling: field 'max_frames'"),
    ],
)
def test_bad_feature_inputs_exit_2(world: World, tmp_path: Path, capsys, change: tuple, fragment: str) -> None:
    argv = world.argv(tmp_path / "out")
    flag, value = change
    argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    assert fragment in error_line(capsys)
    assert not (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / "val").exists()


# --- patch tokens -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def patch_store(world: World) -> Path:
    out = world.store.parent / "patch-store"
    assert main(world.argv(out, "--patches")) == 0
    return out


def test_patch_store_holds_the_projected_patch_tokens(world: World, patch_store: Path) -> None:
    manifest = json.loads((patch_store / "manifest.json").read_text())
    assert manifest["arrays"]["video_patches"] == {"dtype": "float16", "shape": [-1, MAX_FRAMES, 49, 16]}
    assert manifest["settings"]["patch_tokens"] is True
    assert "patch_tokens" not in json.loads((world.store / "manifest.json").read_text())["settings"]
    assert "video_patches" not in world.module(store=str(patch_store)).split("val")[[0, 2, 5]]  # only on request
    module = world.module(store=str(patch_store))
    module.request_patches()
    batch = module.split("val")[[0, 2, 5]]
    assert batch["video_patches"].shape == (3, MAX_FRAMES, 49, 16) and batch["video_patches"].dtype == torch.float32
    stored = world.module().split("val")[[0, 2, 5]]
    scale = stored["video_frames"].abs().max()
    torch.testing.assert_close(batch["video_frames"], stored["video_frames"], atol=2e-3 * scale, rtol=2e-3)
    live = world.module(regime="partial", trainable_blocks=1)
    live.request_patches()
    with torch.no_grad():
        features = live.backbone()(live.split("val")[[0, 2, 5]])  # the same tokens from the live tower
    for key in ("video_frames", "video_patches"):
        torch.testing.assert_close(features[key], batch[key], atol=2e-3 * scale, rtol=2e-3)


def test_a_store_without_patches_is_refused_for_patch_methods(world: World) -> None:
    from tvr_convbench.bench.trainer import build_data, needs_patches

    expected = (
        f"{world.store}/manifest.json: field 'arrays.video_patches': the store has no patch tokens; extract one with "
        "`tvr-convbench data features --patches`"
    )
    with pytest.raises(StoreError) as info:
        world.module().request_patches()
    assert str(info.value) == expected
    data = {"name": "didemo", "store": str(world.store), "max_frames": MAX_FRAMES, "max_words": MAX_WORDS}
    with pytest.raises(StoreError, match="no patch tokens"):
        build_data({**data, "cache_dir": str(world.cache)}, needs_patches("ts2net"))
    with pytest.raises(StoreError, match="no patch tokens"):
        FeatureStore.open(world.store, patches=True)
    assert "video_patches" not in build_data({**data, "cache_dir": str(world.cache)}).split("val")[[0]]
