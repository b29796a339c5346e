"""Per-method training cost: the trainer's own optimizer step, timed, FLOP-counted and memory-probed.

The step is ``bench.trainer.StepFunction`` over the model and optimizer ``bench.trainer.build_run_model`` sets up
(on ``lightning.Fabric(accelerator="cpu", devices=1)``), exactly as a ``Run`` builds them: the frozen regime's
identity-initialised adapter backbone (``FeatureBackbone(width, adapter=True)``) + the method, the sweep's trainer
settings (optimizer, lrs, weight decay, clip, schedule). Nothing of the step is re-implemented here: a change to
the protocol changes what is measured. Each call takes one optimizer step on the same synthetic batch
(``plan.feature_batch``) at the first step after the schedule's warmup.

Per (method, shapes): median and IQR of the wall time over repetitions after warm-up steps; FLOPs of one step
(``count_flops``); peak memory of one step (``PeakMemory``: activations, gradients and temporaries; parameters and
optimizer state exist before the step and are not counted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from tvr_convbench.bench.config import TrainerConfig
from tvr_convbench.bench.perf.plan import Plan, Shapes, build_at, feature_batch
from tvr_convbench.bench.perf.probes import count_flops, peak_bytes, repeat_timed, spread
from tvr_convbench.bench.trainer import StepFunction, build_run_model
from tvr_convbench.datasets.base import FeatureBackbone


def trainer_step(name: str, shapes: Shapes, tc: TrainerConfig) -> Callable[[], dict[str, float]]:
    """One optimizer step of method ``name`` per call: the trainer's ``StepFunction`` on a fixed synthetic batch."""
    torch.manual_seed(0)
    method = build_at(name, shapes).train()
    backbone = FeatureBackbone(shapes.width, adapter=True)
    fabric = L.Fabric(accelerator="cpu", devices=1)
    model, optimizer = build_run_model(backbone, method, tc, fabric)
    step_fn = StepFunction(model, optimizer, fabric, tc)
    batch = feature_batch(shapes, shapes.batch, patches=method.needs_patches)
    step = full_lr_step(tc)
    return lambda: step_fn(batch, step)


def full_lr_step(tc: TrainerConfig) -> int:
    """The first optimizer step after the warmup (``warmup`` is a fraction of ``max_steps``)."""
    return min(tc.max_steps - 1, round(tc.warmup * tc.max_steps))


def measure_training(name: str, shapes: Shapes, plan: Plan, tc: TrainerConfig) -> dict[str, Any]:
    """Time, FLOPs and peak memory of one training step of ``name`` at ``shapes``."""
    step = trainer_step(name, shapes, tc)
    timing = spread(repeat_timed(step, plan))
    flops = count_flops(step)
    seconds = timing["ms_median"] / 1e3
    return {
        "method": name,
        "shapes": shapes.name,
        **shapes.dims(),
        "batch": shapes.batch,
        **timing,
        "samples_per_s": shapes.batch / seconds,
        "flops_per_step": flops,
        "gflops": flops / seconds / 1e9,
        "peak_bytes": peak_bytes(step),
    }


def measure_all_training(methods: list[str], plan: Plan, tc: TrainerConfig) -> list[dict[str, Any]]:
    """``measure_training`` of every method at DiDeMo shapes, then at the proxy's."""
    return [measure_training(m, s, plan, tc) for s in (plan.didemo, plan.proxy) for m in methods]
