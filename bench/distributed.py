"""Several processes for one run: gathering training reps with gradients, and sharding an evaluation.

Training: each process encodes its contiguous share of the global batch and the reps of all processes are gathered
with gradients (``all_gather(sync_grads=True)``), so every loss sees the global batch and the averaged gradients are
the single-process ones (tests/test_ddp.py, every method). Evaluation: each process encodes one contiguous shard of
the split, and the shards are gathered and put back in item order, each item exactly once.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

Rep = dict[str, Tensor]


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    The gloo backward of ``torch.distributed.nn.functional.all_gather`` receives each rank's gradient into
    ``empty_like(grad)``, which keeps the strides of a permuted gradient (e.g. from an einsum), and gloo's scatter
    writes contiguous bytes into it: the gradient arrives scrambled (torch 2.13; pytorch/pytorch#192920). Seen as
    wrong gradients for X-Pool, X-CLIP and GLCCL under 2-process DDP; tests/test_ddp.py pins the fix."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


def _contiguous_grad(x: Tensor) -> Tensor:
    return _ContiguousGrad.apply(x) if x.requires_grad else x


def gather_reps(fabric: L.Fabric, rep: Rep) -> Rep:
    """Every process's rep concatenated in rank order, with gradients to each process's own items."""
    gathered = fabric.all_gather(rep, sync_grads=True)  # each [W, B, ...]
    return {k: _contiguous_grad(v).reshape(-1, *v.shape[2:]) for k, v in gathered.items()}


def shard(num_items: int, rank: int, world: int) -> tuple[list[int], int]:
    """This process's contiguous shard of ``num_items`` items, and the shard size every process pads to."""
    size = math.ceil(num_items / world)
    return list(range(rank * size, min(num_items, (rank + 1) * size))), size


def reassemble(fabric: L.Fabric, reps: list[Rep], index: Tensor, num_items: int, size: int) -> list[Rep]:
    """Gather every process's shard of ``reps`` (items ``index``), back in item order: each item exactly once."""
    pad = size - index.shape[0]
    index_all = fabric.all_gather(torch.cat([index, torch.full((pad,), -1)])).reshape(-1)  # [W * size]
    keep = index_all >= 0
    order = torch.argsort(index_all[keep])
    if not torch.equal(index_all[keep][order], torch.arange(num_items, device=index_all.device)):
        raise RuntimeError("distributed evaluation did not cover every item exactly once")
    return [_select(fabric.all_gather(_pad_rep(rep, pad)), keep, order) for rep in reps]


def _select(rep: Rep, keep: Tensor, order: Tensor) -> Rep:
    return {k: v.reshape(-1, *v.shape[2:])[keep][order] for k, v in rep.items()}


def _pad_rep(rep: Rep, pad: int) -> Rep:
    return {k: torch.cat([v, v[:1].expand(pad, *v.shape[1:])]) if pad else v for k, v in rep.items()}
