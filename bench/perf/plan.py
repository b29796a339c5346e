"""What ``bench perf`` measures and at which sizes.

``Shapes`` are the feature shapes of one setting (DiDeMo's, the default proxy's); ``Plan`` says how much to measure
(``FULL``: the report, minutes; ``QUICK``: tiny shapes, seconds). ``feature_batch`` is the synthetic frozen-regime
batch every measurement feeds the methods: DiDeMo's structure (variable text and video lengths, padded slots
holding one constant feature, as CLIP's pad token and blank frame do); the values do not change any cost measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from tvr_convbench.methods.base import FeatureBatch


@dataclass(frozen=True)
class Shapes:
    """Feature shapes of one benchmark setting."""

    name: str
    width: int
    frames: int
    words: int
    batch: int = 32
    patches: int = 16
    """patch tokens per frame, for methods that work below the frame level (49 for ViT-B/32 at 224)"""

    def dims(self) -> dict[str, int]:
        return {"width": self.width, "max_frames": self.frames, "max_words": self.words}


def build_at(name: str, shapes: Shapes):  # noqa: ANN201 - a RetrievalMethod
    """Method ``name`` built for ``shapes``, with the named switch a shape needs: TS2-Net's official 77-row
    frame-position table holds at most 19 frames, so more frames turn on ``extended_positions`` (as the DiDeMo
    sweeps do)."""
    from tvr_convbench.methods import build_method, method_parameters

    args = {}
    if "extended_positions" in method_parameters(name) and 4 * shapes.frames + 1 > 77:
        args["extended_positions"] = True
    return build_method(name, **shapes.dims(), **args)


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run (minutes) or ``--quick`` (seconds, tiny shapes)."""

    quick: bool
    matmul_n: int
    didemo: Shapes
    proxy: Shapes
    warmup: int
    min_reps: int
    max_reps: int
    seconds: float
    """time budget of one repeated measurement (repetitions stop after it, once ``min_reps`` are done)"""
    sizes: tuple[int, ...]
    """N of the retrieval table (N x N pairs)"""
    point_seconds: float
    """a retrieval point predicted to take longer is extrapolated"""
    distinct: int
    """distinct items encoded for the retrieval table (repeated up to N)"""
    proxy_n: int
    pilots: tuple[int, ...]
    """smaller retrieval sizes measured first, only to fit the growth exponent"""
    harness_steps: int
    proxy_data: tuple[tuple[str, Any], ...] = ()
    """data overrides of the sweep for the harness measurement (none in the full run)"""


FULL = Plan(
    quick=False,
    matmul_n=2048,
    didemo=Shapes("didemo", 512, 64, 64, patches=49),
    proxy=Shapes("proxy", 64, 8, 40, patches=16),
    warmup=2,
    min_reps=5,
    max_reps=40,
    seconds=3.0,
    sizes=(256, 1004, 4096),
    point_seconds=20.0,
    distinct=64,
    proxy_n=500,
    pilots=(64, 128),
    harness_steps=30,
)
QUICK = Plan(
    quick=True,
    matmul_n=256,
    didemo=Shapes("didemo (tiny)", 32, 6, 8, batch=8, patches=4),
    proxy=Shapes("proxy (tiny)", 16, 4, 6, batch=8, patches=4),
    warmup=1,
    min_reps=3,
    max_reps=3,
    seconds=0.0,
    sizes=(32, 64),
    point_seconds=1.0,
    distinct=16,
    proxy_n=48,
    pilots=(16,),
    harness_steps=4,
    proxy_data=(("train_videos", 64), ("val_videos", 48), ("test_videos", 16)),
)


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as bench.json records it (``proxy_data`` as a mapping)."""
    out = asdict(plan)
    out["proxy_data"] = dict(plan.proxy_data)
    return out


def feature_batch(shapes: Shapes, batch: int, seed: int = 0, patches: bool = False) -> FeatureBatch:
    """Synthetic frozen-regime features of ``batch`` items at ``shapes`` (see the module docstring), with
    ``video_patches`` [B, F, P, D] (constant in padded frames) when ``patches``."""
    g = torch.Generator().manual_seed(seed)
    words = shapes.words
    frames = shapes.frames
    width = shapes.width
    text_len = torch.randint(max(2, words // 3), words + 1, (batch,), generator=g)  # [B]
    text_mask = torch.arange(words)[None] < text_len[:, None]  # [B, L]
    pad_token = torch.randn(width, generator=g)  # [D]
    tokens = torch.where(text_mask[..., None], torch.randn(batch, words, width, generator=g), pad_token)  # [B, L, D]
    frame_len = torch.randint(max(1, frames // 3), frames + 1, (batch,), generator=g)  # [B]
    video_mask = torch.arange(frames)[None] < frame_len[:, None]  # [B, F]
    blank = torch.randn(width, generator=g)  # [D]
    video = torch.where(video_mask[..., None], torch.randn(batch, frames, width, generator=g), blank)  # [B, F, D]
    out = {
        "text_tokens": tokens,  # [B, L, D]
        "text_mask": text_mask,
        "text_eot": tokens[torch.arange(batch), text_len - 1],  # [B, D]: the last real token
        "video_frames": video,  # [B, F, D]
        "video_mask": video_mask,
        "index": torch.arange(batch),
    }
    if patches:
        grid = torch.randn(batch, frames, shapes.patches, width, generator=g)  # [B, F, P, D]
        blank_patch = torch.randn(shapes.patches, width, generator=g)  # [P, D]
        out["video_patches"] = torch.where(video_mask[..., None, None], grid, blank_patch)
    return out
