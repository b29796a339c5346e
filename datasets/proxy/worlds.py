"""Named worlds of the proxy: presets, each a documented change of the default world along one axis that a
method's mechanism exploits. ``data: {name: proxy, world: <name>}`` applies a preset; a knob given explicitly still
wins over the preset.

Each world is calibrated only for its overall difficulty, never toward a method ordering: zero-shot meanP on about
1,000 val videos lands in DESIGN's 15-30% R@1 band (tests/test_worlds.py), and trained methods stay well below
100%. Measured zero-shot meanP t2v R@1 at 1,000 val videos (the band test's split): default 16.0, didemo-frames
23.5, weak-alignment 15.9, distractors 15.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tvr_convbench.core.registry import suggest


@dataclass(frozen=True)
class World:
    """A preset of proxy knobs and why it exists."""

    knobs: dict[str, Any] = field(default_factory=dict)
    doc: str = ""


WORLDS: dict[str, World] = {
    "default": World({}, "today's proxy: 6 five-second segments, one frame each, in 8 frame slots"),
    "didemo-frames": World(
        {"frames_per_segment": 5, "max_frames": 32},
        "DiDeMo's frame rate: 1 fps over the six five-second segments, 30 real frames (25 for five-segment videos) "
        "in 32 slots, instead of one frame per segment; what changes is how many, mostly redundant, frames a "
        "frame-level method attends over and how much the temporal models see",
    ),
    "weak-alignment": World(
        {"alignment": 0.7, "scene": 0.3},
        "a larger text-visual domain shift: each word's visual view is rotated by arccos 0.7 (not 0.8) from its "
        "concept, with the scene context halved so zero-shot recall stays in the band; more of the difficulty is "
        "a gap that training (adapter and heads) can undo, less is dilution",
    ),
    "distractors": World(
        {"distractors": 8},
        "more off-moment content: 8 undescribed words in every segment instead of 3, so a segment holds much that "
        "no sentence mentions; what changes is how much selecting the right frames and words pays",
    ),
}


def world_knobs(name: str) -> dict[str, Any]:
    """The knob overrides of world ``name`` (``ValueError`` naming ``data.world`` for an unknown name)."""
    if name not in WORLDS:
        raise ValueError(f"data.world: unknown world {name!r}{suggest(name, WORLDS)} (worlds: {', '.join(WORLDS)})")
    return dict(WORLDS[name].knobs)
