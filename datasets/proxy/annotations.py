"""The proxy's annotations: procedural ones with DiDeMo's statistics, or real DiDeMo JSON mapped to word ids.

Procedural (``generate_annotations``):
  - videos of ``SEGMENTS_PER_VIDEO`` = 6 five-second segments (17% have 5); 1-6 descriptions per video (mean
    ~3.8); ~7.5 words per description (paragraph ~29 words); moments mostly one segment long (78%), the rest
    2-3 segments;
  - a Zipfian vocabulary: function words ("the", "a", "in", ...) make ~40% of tokens, content words ("man",
    "camera", ...) follow a Zipf law over ``vocab_size`` words.

Real (``annotations_from_didemo``): a LocalizingMoments ``*_data.json``; its paragraphs and majority moments are
used, words mapped to the vocabulary by frequency.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

SEGMENTS_PER_VIDEO = 6
"""five-second segments of a full DiDeMo video (the feature grid has this many rows per video)"""
FUNCTION_WORDS = (
    "the a in of to and is on at with then his her camera into from up it out by off back are for down front "
    "while as an over around again their near".split()
)
FREQUENT_CONTENT = (
    "man woman person girl boy dog first left right walks see people car water side screen child baby ball "
    "white black red table window shirt hand door tree road little group frame".split()
)
DESCRIPTIONS_PER_VIDEO = {1: 0.02, 2: 0.06, 3: 0.25, 4: 0.45, 5: 0.17, 6: 0.05}
MOMENT_LENGTHS = {1: 0.78, 2: 0.15, 3: 0.07}
SHORT_VIDEO_SHARE = 0.17
"""share of videos one segment short (5 segments)"""
WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Annotation:
    """One video: its segment count and descriptions (word ids) with their moments (first, last segment)."""

    num_segments: int
    descriptions: tuple[tuple[int, ...], ...]
    moments: tuple[tuple[int, int], ...]


def content_probabilities(vocab_size: int) -> np.ndarray:
    """Zipf law (exponent 1, offset 2.7) over the content words."""
    ranks = np.arange(vocab_size - len(FUNCTION_WORDS))
    p = 1.0 / (ranks + 2.7)
    return p / p.sum()


def _choice(rng: np.random.Generator, table: dict[int, float], size: int) -> np.ndarray:
    return rng.choice(np.array(list(table)), size=size, p=np.array(list(table.values())))


def generate_annotations(rng: np.random.Generator, num_videos: int, vocab_size: int) -> list[Annotation]:
    """Procedural DiDeMo-like annotations (statistics in the module docstring), sampled in bulk."""
    probs, num_function = content_probabilities(vocab_size), len(FUNCTION_WORDS)
    short = rng.random(num_videos) < SHORT_VIDEO_SHARE
    segments = np.where(short, SEGMENTS_PER_VIDEO - 1, SEGMENTS_PER_VIDEO)  # [n]
    counts = _choice(rng, DESCRIPTIONS_PER_VIDEO, num_videos)  # [n] descriptions per video
    owner = np.repeat(np.arange(num_videos), counts)  # [M] video of each description
    lengths = np.clip(3 + rng.poisson(4.5, size=owner.size), 2, 22)  # [M] words per description
    total = int(lengths.sum())
    words = np.where(
        rng.random(total) < 0.4,
        rng.integers(0, num_function, total),
        num_function + rng.choice(len(probs), total, p=probs),
    )
    spans = np.minimum(_choice(rng, MOMENT_LENGTHS, owner.size), segments[owner])  # [M]
    starts = (rng.random(owner.size) * (segments[owner] - spans + 1)).astype(np.int64)  # [M]
    return _assemble(segments, counts, np.split(words, np.cumsum(lengths)[:-1]), starts, spans)


def _assemble(
    segments: np.ndarray, counts: np.ndarray, words: list[np.ndarray], starts: np.ndarray, spans: np.ndarray
) -> list[Annotation]:
    """One ``Annotation`` per video from the flat per-description arrays (descriptions grouped by video)."""
    first_of_video = np.concatenate([[0], np.cumsum(counts)])
    videos = []
    for v in range(len(segments)):
        rows = range(first_of_video[v], first_of_video[v + 1])
        descriptions = tuple(tuple(int(w) for w in words[d]) for d in rows)
        moments = tuple((int(starts[d]), int(starts[d] + spans[d] - 1)) for d in rows)
        videos.append(Annotation(int(segments[v]), descriptions, moments))
    return videos


def annotations_from_didemo(path: str) -> tuple[list[Annotation], int]:
    """Paragraphs and moments of a real DiDeMo annotation JSON, and the vocabulary size they need.

    Words are lower-cased alphanumeric runs; function words keep their ids, content words get ids by decreasing
    frequency in the file (so the Zipf ranks are the file's own); a moment is the most frequent (start, end) of
    its annotators, clipped to the video's segments.
    """
    from tvr_convbench.datasets.didemo import build_paragraphs, read_annotations

    paragraphs = build_paragraphs(read_annotations(path))
    texts = [[WORD.findall(m.description.lower()) for m in p.moments] for p in paragraphs]
    function = {w: i for i, w in enumerate(FUNCTION_WORDS)}
    counts = Counter(w for text in texts for d in text for w in d if w not in function)
    ids = {**function, **{w: len(function) + r for r, (w, _) in enumerate(counts.most_common())}}
    anns = [
        Annotation(
            p.num_segments,
            tuple(tuple(ids[w] for w in d) for d in text),
            tuple(_majority_moment(m.times, p.num_segments) for m in p.moments),
        )
        for p, text in zip(paragraphs, texts, strict=True)
    ]
    return anns, len(ids)


def _majority_moment(times: tuple[tuple[int, int], ...], num_segments: int) -> tuple[int, int]:
    if not times:
        return 0, num_segments - 1
    start, end = Counter(times).most_common(1)[0][0]
    start = min(max(start, 0), num_segments - 1)
    return start, min(max(end, start), num_segments - 1)
