"""TS2-Net's token selection: a per-frame token scorer and the differentiable perturbed top-k (shared by TS2-Net and
UCoFiA, which reuses it unchanged).

Spec: ``reference/baselines-and-didemo.md`` 2.5 and 2.6a T3, T4, T7 (yuqi657/ts2_net @1d9d4d5,
``modules/differential_topk.py``: ``PredictorLG``, ``PerturbedTopK``, ``VisualTokenSelection``; the same classes in
Ziyang412/UCoFiA @6098be2 ``train/modules/differential_topk.py``).

Scorer (``TokenScorer``, the official ``PredictorLG``) on the frame's CLS and its P patch tokens, all P + 1 scored::

    h_i = GELU(W_1 LN(x_i))                       W_1: D -> D/2, no bias
    s_i = tanh(w_3 GELU(W_2 [h_i ; h_CLS]))       W_2: D -> D/2, w_3: D/2 -> 1, no biases

The CLS column is dropped and a perturbed top-k (Berthet et al. 2020) turns the P patch scores into a soft
selection ``[k, P]``: the mean over S noise draws z ~ N(0, I) of the one-hot rows of the top-k of ``s + sigma z``,
the k selected indices sorted ascending (slot j holds the j-th smallest selected patch index, not the j-th best).
Its backward is the perturbed-optimizer estimator ``E[one_hot(topk(s + sigma z)) z] / sigma`` on the same draws
(plain autograd through a top-k would give the scorer no gradient). The frame's tokens are then
``[CLS, k selected]`` (k = 3: 4 tokens per frame).

Noise: in training a fresh draw per call from the global generator of the scores' device (the official code draws
on the CPU default generator and copies; same distribution, another stream). The official code draws at evaluation
too, so its evaluation is stochastic; here evaluation uses one fixed table ``[F, S, P]`` drawn from
``eval_seed`` (frame slot j of every video reads row j), so a video's evaluation tokens depend on that video alone
(any batch, any order) and are repeatable. Tests inject a table by assigning ``TokenSelector.eval_noise``.

Computation: the soft selection counts the selected indices with one scatter per chunk of videos (no ``[.., S, k,
P]`` one-hot tensor: 600 MB at DiDeMo's training shapes), and the estimator is formed in the forward from the
gathered noise, so the backward keeps a ``[.., k, P]`` tensor instead of the noise and the one-hots; the forward
value is the official one exactly, the gradient to float32 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TOKEN_SHIFT_LAYERS = 2
"""the official token shift sits in the last two of CLIP's 12 vision blocks (10 and 11), for TS2-Net and UCoFiA"""
FROZEN_NOTE = "no token shift: it runs inside CLIP's ViT blocks 10-11, which cached features do not pass"
"""``regime_note`` of both methods in the frozen regime"""
VIDEO_CHUNK = 16
"""videos per perturbed top-k chunk (bounds the [videos, F, S, P] perturbed scores and their top-k indices)"""


class PerturbedTopK(torch.autograd.Function):
    """Soft top-k with the perturbed-optimizer gradient (module docstring)."""

    @staticmethod
    def forward(ctx, scores: Tensor, noise: Tensor, k: int, sigma: float) -> Tensor:  # noqa: ANN001
        """scores ``[R, P]``, noise ``[R, S, P]`` (standard normal) -> soft selection ``[R, k, P]``."""
        selection, estimator = soft_topk(scores, noise, k, sigma)
        ctx.save_for_backward(estimator)
        return selection

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN001
        (estimator,) = ctx.saved_tensors  # [R, k, P]
        return (grad * estimator).sum(1), None, None, None  # [R, P]


def soft_topk(scores: Tensor, noise: Tensor, k: int, sigma: float) -> tuple[Tensor, Tensor]:
    """(soft selection, gradient estimator), both ``[R, k, P]``, of scores ``[R, P]`` under noise ``[R, S, P]``.

    selection[r, j, p] = share of the S draws whose j-th smallest selected index is p;
    estimator[r, j, p] = sum over those draws of z[r, s, p], divided by S sigma.
    """
    samples = noise.shape[1]
    perturbed = scores[:, None] + sigma * noise  # [R, S, P]
    picked = perturbed.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values  # [R, S, k] ascending
    slots = picked.transpose(1, 2)  # [R, k, S]
    zeros = scores.new_zeros(scores.shape[0], k, scores.shape[1])  # [R, k, P]
    counts = zeros.scatter_add(2, slots, torch.ones_like(slots, dtype=scores.dtype))  # [R, k, P]
    drawn = noise.gather(2, picked).transpose(1, 2)  # [R, k, S]: z at each selected index
    estimator = zeros.scatter_add(2, slots, drawn) / (samples * sigma)  # [R, k, P]
    return counts / samples, estimator


class TokenScorer(nn.Module):
    """The official ``PredictorLG``: one tanh score per token of a frame, conditioned on the frame's CLS (row 0).

    Args:
        width: D of the tokens.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width // 2, bias=False), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Linear(2 * (width // 2), width // 2, bias=False),
            nn.GELU(),
            nn.Linear(width // 2, 1, bias=False),
            nn.Tanh(),
        )
        for layer in (self.in_conv[1], self.out_conv[0], self.out_conv[2]):
            nn.init.normal_(layer.weight, std=0.02)  # the official init_weights (initializer_range 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens ``[..., T, D]`` (CLS first) -> scores ``[..., T]``."""
        h = self.in_conv(tokens)  # [..., T, D/2]
        pair = torch.cat([h, h[..., :1, :].expand_as(h)], dim=-1)  # [..., T, D]: each token with the CLS
        return self.out_conv(pair).squeeze(-1)


class TokenSelector(nn.Module):
    """Frames ``[B, F, D]`` (CLS) and patches ``[B, F, P, D]`` -> ``[B, F, 1 + k, D]``: the CLS, then the soft
    selection of k patches in ascending patch-index order.

    Args:
        width: D.
        topk: k, selected patches per frame (3).
        samples: S, noise draws of the perturbed top-k (500).
        sigma: noise scale (0.05).
        eval_seed: seed of the fixed evaluation noise table.
    """

    def __init__(self, width: int, topk: int = 3, samples: int = 500, sigma: float = 0.05, eval_seed: int = 0) -> None:
        super().__init__()
        self.topk = topk
        self.samples = samples
        self.sigma = sigma
        self.eval_seed = eval_seed
        self.scorer = TokenScorer(width)
        self.eval_noise: Tensor | None = None
        """the evaluation noise table ``[F, S, P]`` (drawn from ``eval_seed`` on first use; assign to inject)"""

    def forward(self, frames: Tensor, patches: Tensor) -> Tensor:
        tokens = torch.cat([frames[:, :, None], patches], dim=2)  # [B, F, 1 + P, D]
        if patches.shape[2] < self.topk:
            raise ValueError(f"token selection: {patches.shape[2]} patches per frame, fewer than top-k {self.topk}")
        scores = self.scorer(tokens)[..., 1:]  # [B, F, P]: the CLS column dropped
        chunks = zip(scores.split(VIDEO_CHUNK), patches.split(VIDEO_CHUNK), strict=True)
        selected = torch.cat([self.select(s, p) for s, p in chunks])  # [B, F, k, D]
        return torch.cat([frames[:, :, None], selected], dim=2)  # [B, F, 1 + k, D]

    def select(self, scores: Tensor, patches: Tensor) -> Tensor:
        """Soft-selected patches ``[b, F, k, D]`` of a chunk (scores ``[b, F, P]``, patches ``[b, F, P, D]``)."""
        videos, frames, num_patches = scores.shape
        noise = self.noise(videos, frames, num_patches, scores)  # [b, F, S, P]
        rows = scores.reshape(-1, num_patches)  # [b F, P]
        selection = PerturbedTopK.apply(rows, noise.reshape(rows.shape[0], self.samples, -1), self.topk, self.sigma)
        selection = selection.view(videos, frames, self.topk, num_patches)  # [b, F, k, P]
        return selection @ patches  # [b, F, k, D]

    def noise(self, videos: int, frames: int, patches: int, like: Tensor) -> Tensor:
        """Standard normal draws ``[videos, F, S, P]``: fresh in training, the fixed table at evaluation."""
        if self.training:
            return torch.randn(videos, frames, self.samples, patches, device=like.device, dtype=like.dtype)
        table = self.eval_noise
        if table is None or table.shape[0] < frames or table.shape[1:] != (self.samples, patches):
            table = eval_noise_table(self.eval_seed, frames, self.samples, patches)
        self.eval_noise = table.to(like)
        return self.eval_noise[:frames].expand(videos, -1, -1, -1)


def eval_noise_table(seed: int, frames: int, samples: int, patches: int) -> Tensor:
    """The evaluation noise ``[F, S, P]``: row j is the j-th ``[S, P]`` draw of a generator seeded with ``seed``, so
    a row does not depend on how many rows the table has."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(samples, patches, generator=generator) for _ in range(frames)])
