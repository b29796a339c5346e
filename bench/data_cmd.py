"""``bench data``: fetch the DiDeMo annotations, print annotation statistics, extract the frozen CLIP feature store.

    python -m bench data fetch didemo --dest DIR
    python -m bench data stats --dataset didemo --annotations FILE [--split-list FILE]
    python -m bench data features --dataset didemo --annotations DIR --videos DIR --clip PATH --out STORE
        [--splits train,val,test] [--sampler fps1|uniform] [--max-frames 64] [--max-words 64] [--batch-size N]
        [--workers N] [--strict] [--patches]

``--patches`` also writes every frame's projected patch tokens (``video_patches``, for the methods that need them:
TS2-Net, UCoFiA), from the same CLIP forward; a store without them is refused for those methods.

``add_parser(subparsers)`` adds the ``data`` command to the harness CLI and ``run(args)`` executes it: exit code 0 on
success, 2 on bad input (a ``DataError``: one line on stderr naming the file and field; every file is written
through a temporary name and ``os.replace``, so nothing half-written remains). Heavy imports (torch, PyAV,
transformers) happen only in the subcommand that needs them.

Checksums (``fetch``): ``val_data.json`` is verified against the sha256 of the copy the reference spec was checked
with. For the other five files no trusted hash was available when this was written, so the first download is
validated by content (the JSON parses as DiDeMo annotations, the lists have their documented lengths), its sha256
is recorded in ``DEST/checksums.json`` and reported as *recorded, not verified*; later runs verify against it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tvr_convbench.core.errors import DataError
from tvr_convbench.core.files import atomic_write_bytes, atomic_write_json
from tvr_convbench.datasets.didemo import (
    build_paragraphs,
    paragraph_stats,
    read_annotations,
    read_split_list,
)

SPLITS = ("train", "val", "test")
ANNOTATIONS_URL = "https://raw.githubusercontent.com/LisaAnne/LocalizingMoments/master/data/{name}"
SPLIT_LISTS_URL = "https://raw.githubusercontent.com/albanie/collaborative-experts/master/misc/datasets/didemo/{name}"
KNOWN_SHA256 = {"val_data.json": "b0364cc256553332feb19d46bcc4cd2b09774949fe6c0b25e7ed0ff3c6aefebb"}
"""sha256 of files checked against a trusted copy (``val_data.json``: the copy the reference spec used)"""
EXPECTED_COUNTS = {
    "val_data.json": 4180,
    "test_data.json": 4021,
    "train_list.txt": 8392,
    "val_list.txt": 1065,
    "test_list.txt": 1004,
}
"""entries (JSON) or lines (lists) documented in the reference spec and the collaborative-experts README"""
FETCH_TIMEOUT_S = 10.0


class FetchError(DataError):
    """A download that failed or does not match its checksum or documented content."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data`` (with ``fetch``, ``stats``, ``features``) to the harness CLI's subcommands."""
    parser = subparsers.add_parser("data", help="DiDeMo annotations, statistics and the CLIP feature store")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="{fetch,stats,features}")
    _add_fetch(commands)
    _add_stats(commands)
    _add_features(commands)
    return parser


def _add_fetch(commands: argparse._SubParsersAction) -> None:
    fetch = commands.add_parser("fetch", help="download the official annotation files and split lists")
    fetch.add_argument("dataset", choices=["didemo"])
    fetch.add_argument("--dest", required=True, type=Path, help="folder to write the six files into")
    fetch.add_argument("--timeout", type=float, default=FETCH_TIMEOUT_S, help="seconds per connection attempt")
    fetch.add_argument("--force", action="store_true", help="download again even if the files are present")


def _add_stats(commands: argparse._SubParsersAction) -> None:
    stats = commands.add_parser("stats", help="print one JSON object of annotation statistics")
    stats.add_argument("--dataset", choices=["didemo"], default="didemo")
    stats.add_argument("--annotations", required=True, type=Path, help="an annotation JSON ({split}_data.json)")
    stats.add_argument("--split-list", type=Path, help="keep only the videos of this list ({split}_list.txt)")


def _add_features(commands: argparse._SubParsersAction) -> None:
    feats = commands.add_parser("features", help="run the frozen CLIP over every split and write the feature store")
    feats.add_argument("--dataset", choices=["didemo"], default="didemo")
    feats.add_argument("--annotations", required=True, type=Path, help="folder of {split}_data.json [+ _list.txt]")
    feats.add_argument("--videos", required=True, type=Path, help="the video folder")
    feats.add_argument("--clip", required=True, help="CLIP checkpoint: a local folder or a hub id")
    feats.add_argument("--out", required=True, type=Path, help="the store folder (created, or resumed)")
    feats.add_argument("--splits", default="train,val,test", help="comma-separated splits")
    feats.add_argument("--sampler", choices=["fps1", "uniform"], default="fps1")
    feats.add_argument("--max-frames", type=int, default=64)
    feats.add_argument("--uniform-frames", type=int, default=12, help="frames of the uniform sampler")
    feats.add_argument("--max-words", type=int, default=64)
    feats.add_argument("--batch-size", type=int, default=16, help="videos per CLIP forward")
    feats.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding videos")
    feats.add_argument("--chunk-items", type=int, default=256, help="videos per resumable chunk")
    feats.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    feats.add_argument("--cache-dir", type=Path, default=Path(".cache/didemo"), help="video-index cache")
    feats.add_argument("--strict", action="store_true", help="fail on a missing or undecodable video")
    feats.add_argument(
        "--patches",
        action="store_true",
        help="also store every frame's projected patch tokens (TS2-Net, UCoFiA; ~3.2 MB a video at 64 x 49 x 512)",
    )


def run(args: argparse.Namespace) -> int:
    """Execute ``bench data <command>``; returns the exit code (2 on bad input)."""
    handlers = {"fetch": run_fetch, "stats": run_stats, "features": run_features}
    try:
        return handlers[args.data_command](args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser holding only ``data`` (the same one the harness CLI mounts)."""
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m bench.data_cmd data ...``."""
    return run(build_parser().parse_args(argv))


# --- stats ------------------------------------------------------------------------------------------------------
def run_stats(args: argparse.Namespace) -> int:
    entries = read_annotations(args.annotations)
    videos = read_split_list(args.split_list) if args.split_list else None
    paragraphs = build_paragraphs(entries, videos)
    if not paragraphs:
        raise DataError(args.split_list, f"no listed video has an annotation in {args.annotations}", field="video")
    print(json.dumps(paragraph_stats(paragraphs)))
    return 0


# --- fetch ------------------------------------------------------------------------------------------------------
def fetch_sources() -> dict[str, str]:
    """File name -> URL of the six official files."""
    sources = {f"{s}_data.json": ANNOTATIONS_URL.format(name=f"{s}_data.json") for s in SPLITS}
    sources.update({f"{s}_list.txt": SPLIT_LISTS_URL.format(name=f"{s}_list.txt") for s in SPLITS})
    return sources


def run_fetch(args: argparse.Namespace) -> int:
    dest: Path = args.dest
    record_path = dest / "checksums.json"
    recorded = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    for name, url in fetch_sources().items():
        target = dest / name
        if target.is_file() and not args.force:
            data, fresh = target.read_bytes(), False
        else:
            data, fresh = _download(url, name, dest, args.timeout), True
        digest = hashlib.sha256(data).hexdigest()
        status = _check_digest(target, digest, recorded.get(name, {}).get("sha256"))
        if fresh:
            _validate_content(target, data)
            atomic_write_bytes(target, data)
        recorded[name] = {"sha256": digest, "source": url, "verified": status != "recorded, not verified"}
        atomic_write_json(record_path, recorded)
        print(f"{name}: sha256 {digest} ({status})")
    return 0


def _download(url: str, name: str, dest: Path, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        place = (
            f"offline? place train_data.json, val_data.json, test_data.json (github.com/LisaAnne/LocalizingMoments, "
            f"data/) and train_list.txt, val_list.txt, test_list.txt (github.com/albanie/collaborative-experts, "
            f"misc/datasets/didemo/) in {dest}, then rerun"
        )
        raise FetchError(url, f"cannot download {name} ({reason}); {place}") from None


def _check_digest(target: Path, digest: str, recorded: str | None) -> str:
    known = KNOWN_SHA256.get(target.name)
    for expected, kind in ((known, "known"), (recorded, "recorded")):
        if expected is not None and expected != digest:
            raise FetchError(target, f"sha256 {digest} differs from the {kind} {expected}", field="sha256")
    if known is not None:
        return "verified against the known sha256"
    return "matches the recorded sha256" if recorded is not None else "recorded, not verified"


def _validate_content(target: Path, data: bytes) -> None:
    """Parse the downloaded bytes as what they should be (through a temporary file that is then removed)."""
    tmp = target.with_name(f".{target.name}.check")
    atomic_write_bytes(tmp, data)
    try:
        count = len(read_annotations(tmp) if target.suffix == ".json" else read_split_list(tmp))
    except DataError as exc:
        raise FetchError(f"{target} (downloaded)", str(exc).removeprefix(f"{tmp}: ")) from None
    finally:
        tmp.unlink(missing_ok=True)
    expected = EXPECTED_COUNTS.get(target.name)
    if expected is not None and count != expected:
        raise FetchError(target, f"downloaded {count} entries, expected {expected}", field="entries")


# --- features ---------------------------------------------------------------------------------------------------
def run_features(args: argparse.Namespace) -> int:
    manifest = extract_features(args)
    for split, counts in manifest["splits"].items():
        print(f"{split}: {json.dumps(counts)}", file=sys.stderr)
    print(f"feature store: {args.out}", file=sys.stderr)
    return 0


def extract_features(args: argparse.Namespace, on_chunk: Any = None) -> dict[str, Any]:
    """Build the extraction from parsed ``features`` arguments and run it; returns the manifest."""
    import torch

    from tvr_convbench.datasets.clip import ClipBackbone, load_clip
    from tvr_convbench.datasets.feature_store import FeatureExtractor
    from tvr_convbench.datasets.video import FrameSampling, VideoIndex

    splits = _parse_splits(args.splits)
    model, tokenizer = load_clip(args.clip)
    _check_text_positions(args, model)
    size = model.config.vision_config.image_size
    sampling = FrameSampling(args.sampler, args.max_frames, args.uniform_frames, size)
    index = VideoIndex.build(args.videos, args.cache_dir)
    sources = [_split_source(args.annotations, name, index) for name in splits]
    extractor = FeatureExtractor(
        args.out,
        settings=_store_settings(args, splits, model, tokenizer, sampling, index.listing),
        backbone=ClipBackbone(model, regime="frozen"),
        tokenizer=tokenizer,
        sampling=sampling,
        max_words=args.max_words,
        batch_size=args.batch_size,
        workers=args.workers,
        strict=args.strict,
        chunk_items=args.chunk_items,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        on_chunk=on_chunk,
        patches=args.patches,
    )
    sources_info = {"clip": str(args.clip), "annotations": str(args.annotations), "videos": str(args.videos)}
    return extractor.run(sources, sources_info)


def _split_source(annotations: Path, name: str, index: Any) -> Any:
    from tvr_convbench.datasets.didemo_module import resolve_split
    from tvr_convbench.datasets.feature_store import SplitSource

    annotated, paths = resolve_split(annotations, name, index)
    return SplitSource(name, annotated.paragraphs, paths, annotated.counts())


def _store_settings(
    args: argparse.Namespace, splits: list[str], model: Any, tokenizer: Any, sampling: Any, listing: str
) -> dict[str, Any]:
    """The identity of a store: what must match to resume an extraction or reuse a store."""
    from tvr_convbench.datasets.clip import checkpoint_hash
    from tvr_convbench.datasets.feature_store import protocol_settings

    settings = {
        "dataset": "didemo",
        "clip_sha256": checkpoint_hash(model, tokenizer),
        "width": model.config.projection_dim,
        "protocol": protocol_settings(sampling, args.max_words),
        "splits": splits,
        "annotations": {name: _annotation_hashes(args.annotations, name) for name in splits},
        "videos_listing_sha256": listing,
        "chunk_items": args.chunk_items,
    }
    if args.patches:  # only then: stores written before patch tokens existed keep their identity
        settings["patch_tokens"] = True
    return settings


def _parse_splits(text: str) -> list[str]:
    splits = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown or len(set(splits)) != len(splits):
        raise DataError("--splits", f"expected distinct names among {', '.join(SPLITS)}, got {text!r}", field="splits")
    return splits


def _check_text_positions(args: argparse.Namespace, model: Any) -> None:
    limit = model.config.text_config.max_position_embeddings
    if not 3 <= args.max_words <= limit:
        raise DataError("--max-words", f"must be in 3..{limit} (CLIP's text positions), got {args.max_words}")


def _annotation_hashes(folder: Path, split: str) -> dict[str, str | None]:
    def sha(path: Path) -> str | None:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    return {"data_sha256": sha(folder / f"{split}_data.json"), "list_sha256": sha(folder / f"{split}_list.txt")}


if __name__ == "__main__":
    sys.exit(main())
