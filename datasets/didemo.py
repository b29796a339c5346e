"""DiDeMo annotations: the official moment JSON, the split lists, one paragraph per video, validation, statistics.

Spec: ``reference/baselines-and-didemo.md`` 4.1-4.3; reference loader: ArrowLuo/CLIP4Clip @508ffa3
``dataloaders/dataloader_didemo_retrieval.py``.

- Annotations: ``{train,val,test}_data.json`` from LisaAnne/LocalizingMoments ``data/`` (a list of moments with
  ``video``, ``description``, ``times``, ``annotation_id``, ``num_segments``, ``dl_link``).
- Split lists (optional): ``{train,val,test}_list.txt`` from albanie/collaborative-experts ``misc/datasets/didemo/``,
  one original file name per line (8392 / 1065 / 1004 videos). Without a list every annotated video is used.
- Paragraphs: the descriptions of one video joined with single spaces in file order; videos in order of their
  first entry in the JSON (as the reference builds its caption dict). The moment times are kept for analysis; the
  retrieval protocol ignores them (every paragraph covers seconds [0, 31]).

Every problem with an input file raises a ``DataError`` (a ``ValueError``) whose one-line message names the file,
the entry and the field.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvr_convbench.core.errors import DataError

ANNOTATION_FIELDS: dict[str, type] = {
    "video": str,
    "description": str,
    "times": list,
    "annotation_id": int,
    "num_segments": int,
    "dl_link": str,
}
SPLIT_FILES = {"data": "{split}_data.json", "list": "{split}_list.txt"}
TRUNCATION_WORDS = 64
"""the ``truncated_at_64_words`` statistic counts paragraphs with more whitespace words than this"""


class AnnotationError(DataError):
    """A missing, unreadable or malformed annotation file or split list."""


@dataclass(frozen=True)
class Moment:
    """One annotated moment: a sentence and the 5-second chunks ``(start, end)`` each annotator marked."""

    description: str
    times: tuple[tuple[int, int], ...]
    annotation_id: int


@dataclass(frozen=True)
class AnnotationEntry:
    """One validated entry of an annotation JSON."""

    video: str
    moment: Moment
    num_segments: int
    dl_link: str


@dataclass(frozen=True)
class VideoParagraph:
    """One retrieval item: a video and the paragraph of all its descriptions."""

    video: str
    paragraph: str
    moments: tuple[Moment, ...]
    num_segments: int


@dataclass(frozen=True)
class SplitAnnotations:
    """A split as annotated: paragraphs (JSON ∩ list), plus what did not match between the two files."""

    name: str
    paragraphs: list[VideoParagraph]
    listed: int | None
    """videos in the split list (``None`` without a list)"""
    listed_without_annotation: list[str]
    annotated_not_listed: int

    def counts(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "annotated": len(self.paragraphs),
            "descriptions": sum(len(p.moments) for p in self.paragraphs),
            "listed_without_annotation": len(self.listed_without_annotation),
            "annotated_not_listed": self.annotated_not_listed,
        }


def read_annotations(path: str | Path) -> list[AnnotationEntry]:
    """Read and validate an official DiDeMo annotation JSON.

    Raises:
        AnnotationError: missing file, invalid JSON, a missing or mistyped field, an empty description, a malformed
            ``times`` list, or one video listed with two different ``num_segments``.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(path, f"expected a JSON list of moments, got {type(data).__name__}")
    entries = [_entry(path, i, item) for i, item in enumerate(data)]
    _check_segments(path, entries)
    return entries


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, f"cannot read: {exc}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nesting deeper than ~1000
        raise AnnotationError(path, f"invalid JSON: {exc}") from None


def _entry(path: Path, index: int, item: Any) -> AnnotationEntry:
    if not isinstance(item, dict):
        raise AnnotationError(path, f"expected an object, got {type(item).__name__}", entry=index)
    for field, kind in ANNOTATION_FIELDS.items():
        if field not in item:
            raise AnnotationError(path, "missing", entry=index, field=field)
        value = item[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            problem = f"expected {kind.__name__}, got {type(value).__name__}"
            raise AnnotationError(path, problem, entry=index, field=field)
    for field in ("video", "description"):
        if not item[field].strip():
            raise AnnotationError(path, "empty", entry=index, field=field)
    moment = Moment(item["description"], _times(path, index, item["times"]), item["annotation_id"])
    return AnnotationEntry(item["video"], moment, item["num_segments"], item["dl_link"])


def _times(path: Path, index: int, times: list) -> tuple[tuple[int, int], ...]:
    for pair in times:
        ok = isinstance(pair, list) and len(pair) == 2 and all(type(t) is int and t >= 0 for t in pair)
        if not ok:
            raise AnnotationError(path, f"expected [start, end] chunk pairs, got {pair!r}", entry=index, field="times")
    return tuple((a, b) for a, b in times)


def _check_segments(path: Path, entries: list[AnnotationEntry]) -> None:
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        first = seen.setdefault(entry.video, entry.num_segments)
        if first != entry.num_segments:
            problem = f"video {entry.video!r} listed with num_segments {first} earlier and {entry.num_segments} here"
            raise AnnotationError(path, problem, entry=i, field="num_segments")


def read_split_list(path: str | Path) -> list[str]:
    """Read a split list: one original video file name per line (blank lines ignored, no duplicates)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AnnotationError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, f"cannot read: {exc}") from None
    names: dict[str, int] = {}
    for line_no, line in enumerate(lines, start=1):
        name = line.strip()
        if name and names.setdefault(name, line_no) != line_no:
            raise AnnotationError(path, f"{name!r} also on line {names[name]}", entry=line_no, field="video")
    if not names:
        raise AnnotationError(path, "the split list is empty")
    return list(names)


def build_paragraphs(entries: Iterable[AnnotationEntry], videos: Sequence[str] | None = None) -> list[VideoParagraph]:
    """One paragraph per video (descriptions joined by single spaces in file order), videos in order of first
    appearance; with ``videos`` only those (the split list) are kept."""
    keep = None if videos is None else set(videos)
    grouped: dict[str, list[AnnotationEntry]] = {}
    for entry in entries:
        if keep is None or entry.video in keep:
            grouped.setdefault(entry.video, []).append(entry)
    return [
        VideoParagraph(
            video=video,
            paragraph=" ".join(e.moment.description for e in group),
            moments=tuple(e.moment for e in group),
            num_segments=group[0].num_segments,
        )
        for video, group in grouped.items()
    ]


def load_split(annotations: str | Path, split: str, *, require_list: bool = False) -> SplitAnnotations:
    """The split ``split`` of an annotation folder holding ``{split}_data.json`` and optionally ``{split}_list.txt``."""
    folder = Path(annotations)
    entries = read_annotations(folder / SPLIT_FILES["data"].format(split=split))
    list_path = folder / SPLIT_FILES["list"].format(split=split)
    listed = read_split_list(list_path) if list_path.exists() or require_list else None
    paragraphs = build_paragraphs(entries, listed)
    annotated = {e.video for e in entries}
    missing = [] if listed is None else [v for v in listed if v not in annotated]
    return SplitAnnotations(
        name=split,
        paragraphs=paragraphs,
        listed=None if listed is None else len(listed),
        listed_without_annotation=missing,
        annotated_not_listed=len(annotated) - len(paragraphs),
    )


def paragraph_stats(paragraphs: Sequence[VideoParagraph]) -> dict[str, int | float]:
    """Counts and lengths of a split (words = whitespace-separated words, not BPE tokens)."""
    if not paragraphs:
        raise ValueError("paragraph_stats: no paragraphs")
    words = [len(p.paragraph.split()) for p in paragraphs]
    descriptions = [len(p.moments) for p in paragraphs]
    return {
        "videos": len(paragraphs),
        "descriptions": sum(descriptions),
        "paragraph_words_mean": round(statistics.fmean(words), 3),
        "paragraph_words_max": max(words),
        "descriptions_per_video_mean": round(statistics.fmean(descriptions), 3),
        "truncated_at_64_words": sum(w > TRUNCATION_WORDS for w in words),
    }
