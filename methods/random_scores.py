"""``random``: scores every (text, video) pair with a fixed pseudo-random number. The chance line of every report
(expected R@1 = 1/N) and the cheapest method for smoke tests of the harness. Not a method from the literature.

The score of a pair is a hash of the two dataset indices and ``seed``, so it is reproducible, identical for a
block and for the whole matrix, and has no trainable parameter (training only logs its loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod

_MASK = (1 << 31) - 1


@register_method("random")
class RandomScores(RetrievalMethod):
    """Pseudo-random scores in [0, 1) keyed by (text index, video index, seed)."""

    cost_class = CostClass.INDEPENDENT

    def __init__(self, *, seed: int = 0, **base) -> None:
        super().__init__(**base)
        self.seed = seed

    def encode_text(self, batch: FeatureBatch) -> Rep:
        return {"index": batch["index"].long()}

    def encode_video(self, batch: FeatureBatch) -> Rep:
        return {"index": batch["index"].long()}

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        key = (text["index"][:, None] * 1_000_003 + video["index"][None, :] * 7919 + self.seed * 104_729) & _MASK
        for _ in range(3):  # integer hash rounds (xorshift-multiply), exact in int64
            key = ((key ^ (key >> 15)) * 2_654_435_761) & _MASK
        return self.logit_scale(key.to(torch.float32) / float(_MASK + 1))
