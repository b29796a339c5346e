"""The facts recorded next to every run (``data.json``): the data module's own ``describe()``, plus, for synthetic
data, the zero-shot difficulty measured by the harness itself.

Zero-shot means meanP (``tvr_convbench.methods``' ``meanp``, no training) on the untrained backbone (the proxy's
frozen features; its adapter is identity-initialised), the val split encoded and scored by the evaluation code
every run uses (``bench.evaluate``) and ranked by ``tvr_convbench.core.metrics``: the computation of a
meanP run's step-0 validation.
"""

from __future__ import annotations

from typing import Any

import torch

from tvr_convbench.bench.evaluate import encode_split, evaluate_reps
from tvr_convbench.datasets.base import RetrievalDataModule
from tvr_convbench.methods import build_method

ZERO_SHOT = {
    "t2v/R@1": "zero_shot_meanP_t2v_R@1",
    "t2v/R@5": "zero_shot_meanP_t2v_R@5",
    "v2t/R@1": "zero_shot_meanP_v2t_R@1",
}
"""metric -> its key under ``calibration``"""


def describe_data(data: RetrievalDataModule, batch_size: int = 256, block: int = 256) -> dict[str, Any]:
    """``data.describe()``; for a synthetic module, its ``calibration`` mapping gains the val size, the chance
    R@1 and the zero-shot meanP figures (in front of the module's own figures)."""
    facts = data.describe()
    if not data.synthetic:
        return facts
    return {**facts, "calibration": {**zero_shot_figures(data, batch_size, block), **facts.get("calibration", {})}}


@torch.no_grad()
def zero_shot_metrics(data: RetrievalDataModule, batch_size: int = 256, block: int = 256) -> dict[str, float]:
    """All ten val metrics of zero-shot meanP on ``data`` (the floor common to every method).

    Building meanP and a backbone draws parameter inits from torch's global generator; inside a run that would
    shift every later random draw (dropout masks), so the generator's state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        return _zero_shot(data, batch_size, block)


def _zero_shot(data: RetrievalDataModule, batch_size: int, block: int) -> dict[str, float]:
    method = build_method("meanp", **data.dims.as_kwargs()).eval()
    backbone = data.backbone().eval()
    n = len(data.split("val"))
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    text, video, _ = encode_split(method, data.loader("val", batches), backbone)
    return evaluate_reps(method, text, video, block)


@torch.no_grad()
def zero_shot_figures(data: RetrievalDataModule, batch_size: int = 256, block: int = 256) -> dict[str, float]:
    """Val size, chance R@1 and zero-shot meanP recalls of ``data``'s val split."""
    metrics = zero_shot_metrics(data, batch_size, block)
    n = len(data.split("val"))
    return {
        "val_videos": float(n),
        "chance_R@1": 100.0 / n,
        **{key: metrics[metric] for metric, key in ZERO_SHOT.items()},
    }
