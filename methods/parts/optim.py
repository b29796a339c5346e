"""Optimizer parameter groups, BertAdam, and the warmup + cosine schedule of the CLIP4Clip family.

Spec: ``reference/baselines-and-didemo.md`` 1.4 and ``reference/glscl.md`` 3.1 / 8 item 12:
- groups: backbone (CLIP, and a learnable logit scale) at ``backbone_lr`` (1e-7 officially), new modules at
  ``lr`` (1e-4); decoupled weight decay 0.2 on everything but biases;
- BertAdam: betas 0.9/0.98, eps 1e-6, **no bias correction**, decoupled decay, per-tensor gradient clip at 1.0
  (the loop also clips the global norm, which makes the per-tensor clip a no-op in practice);
- ``warmup_cosine``: ``x / w`` for ``x < w``, else ``0.5 (1 + cos(pi x))`` over the *whole* progress x (not
  rescaled after warmup, so the multiplier drops from 1.0 to ~0.976 when warmup ends).
``adamw`` (torch AdamW, same betas/eps, bias-corrected) is offered as a documented alternative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

OptimizerName = Literal["bertadam", "adamw"]
ScheduleName = Literal["warmup_cosine", "constant"]


def warmup_cosine(progress: float, warmup: float = 0.1) -> float:
    """LR multiplier at ``progress = step / total_steps`` (values for x > 1 rise again, as in the original)."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(name: ScheduleName, step: int, total_steps: int, warmup: float) -> float:
    """Multiplier of the base lr before optimizer step ``step`` (0-based)."""
    if name == "constant":
        return 1.0
    return warmup_cosine(step / max(total_steps, 1), warmup)


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, with decoupled weight decay and a per-tensor gradient clip (BERT/CLIP4Clip)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch signature
        """One update; ``closure`` (which re-evaluates the loss, e.g. Lightning's training step) runs first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        if group["max_grad_norm"] > 0:
            norms = torch._foreach_norm(grads)
            scales = [(group["max_grad_norm"] / (n + 1e-6)).clamp(max=1.0) for n in norms]
            grads = torch._foreach_mul(grads, scales)
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg = [s["exp_avg"] for s in states]
        exp_avg_sq = [s["exp_avg_sq"] for s in states]
        beta1, beta2 = group["betas"]
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)  # m = b1 m + (1 - b1) g
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)  # v = b2 v + (1 - b2) g^2
        update = torch._foreach_div(exp_avg, torch._foreach_add(torch._foreach_sqrt(exp_avg_sq), group["eps"]))
        if group["weight_decay"] > 0:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
        torch._foreach_add_(params, update, alpha=-group["lr"])


def build_optimizer(
    groups: list[dict], name: OptimizerName, lr: float, backbone_lr: float, grad_clip: float
) -> torch.optim.Optimizer:
    """One optimizer over role-tagged groups (``role``: "head" or "backbone"; see ``RetrievalMethod.param_groups``)."""
    lrs = {"head": lr, "backbone": backbone_lr}
    param_groups = [
        {
            "params": g["params"],
            "weight_decay": g["weight_decay"],
            "lr": lrs[g["role"]],
            "base_lr": lrs[g["role"]],
            "role": g["role"],
        }
        for g in groups
        if g["params"]
    ]
    if name == "bertadam":
        return BertAdam(param_groups, lr=lr, max_grad_norm=grad_clip)
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
