"""The synthetic DiDeMo proxy: frozen-regime CLIP-like features from a documented world model with DiDeMo's shape.

No videos or CLIP weights exist offline, so the default sweep runs on features generated here (DESIGN.md sec. 6).

- ``annotations``: procedural DiDeMo-shaped annotations, or a real DiDeMo annotation JSON mapped to word ids;
- ``world``: the world model (word concepts and their text and visual views, the domain-shift rotation) and the
  rendering of frame and token features;
- ``settings``: ``ProxySettings``, every knob once (name, type, default, meaning): the ``data:`` keys;
- ``module``: generation of the splits, the feature cache, and ``ProxyDataModule`` (registered as ``proxy``).

Frames carry the concepts of the descriptions grounded at their segment, diluted by scene, distractors and noise:
global pooling sees the video's bag of concepts, while fine-grained alignment can exploit which sentence
describes which segment. The difficulty is pinned, never a method
ordering: zero-shot meanP (no training) on 1,000 val videos lands in DESIGN's 15-30% R@1 band (a test), and the
calibration figures (the harness adds the zero-shot ones: ``tvr_convbench.bench.calibration``) are written into
every run's ``data.json`` and every proxy report.
"""

from __future__ import annotations

from tvr_convbench.datasets.proxy.annotations import (
    FREQUENT_CONTENT,
    FUNCTION_WORDS,
    SEGMENTS_PER_VIDEO,
    Annotation,
    annotations_from_didemo,
    content_probabilities,
    generate_annotations,
)
from tvr_convbench.datasets.proxy.module import (
    FeatureSplit,
    ProxyDataModule,
    generate,
    generate_patches,
    intrinsic_figures,
    load_or_generate,
    load_or_generate_patches,
)
from tvr_convbench.datasets.proxy.settings import GENERATOR_VERSION, ProxySettings
from tvr_convbench.datasets.proxy.world import World, render_frames, render_patches, render_text, word_view_cosines

__all__ = [
    "FREQUENT_CONTENT",
    "FUNCTION_WORDS",
    "GENERATOR_VERSION",
    "SEGMENTS_PER_VIDEO",
    "Annotation",
    "FeatureSplit",
    "ProxyDataModule",
    "ProxySettings",
    "World",
    "annotations_from_didemo",
    "content_probabilities",
    "generate",
    "generate_annotations",
    "generate_patches",
    "intrinsic_figures",
    "load_or_generate",
    "load_or_generate_patches",
    "render_frames",
    "render_patches",
    "render_text",
    "word_view_cosines",
]
