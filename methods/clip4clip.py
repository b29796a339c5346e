"""CLIP4Clip: meanP and seqTransf similarity heads (the non-attention floor of the study).

Paper: Luo et al., "CLIP4Clip: An Empirical Study of CLIP for End to End Video Clip Retrieval", arXiv 2104.08860.
Reference code: github.com/ArrowLuo/CLIP4Clip @508ffa3 (``modules/modeling.py``, ``loose_type`` branch).
Spec: ``reference/baselines-and-didemo.md`` 2.1.

- ``meanp``: video = normalise(masked mean of normalised frame features); score = cos(sentence, video).
- ``seqtransf``: the same after the shared seqTransf temporal module (``tvr_convbench.methods.parts.temporal``).
Both are dual encoders: the score matrix is one GEMM of cached per-item vectors.

Deviations: none in the head. (tightTransf and seqLSTM are not implemented.)
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from tvr_convbench.methods import register_method
from tvr_convbench.methods.base import CostClass, FeatureBatch, Rep, RetrievalMethod, normalize
from tvr_convbench.methods.parts.pooling import masked_mean_of_normalized
from tvr_convbench.methods.parts.temporal import SeqTransf


@register_method("seqtransf", header="seqtransf")
@register_method("meanp", header="meanp")
class CLIP4Clip(RetrievalMethod):
    """CLIP4Clip with a parameter-free (``meanp``) or temporal-transformer (``seqtransf``) video head.

    Args:
        header: the similarity header (fixed by the registered name).
        temporal_layers: seqTransf blocks (4, as released).
    """

    cost_class = CostClass.INDEPENDENT

    def __init__(self, *, header: Literal["meanp", "seqtransf"], temporal_layers: int = 4, **base) -> None:
        super().__init__(**base)
        self.header = header
        self.temporal = SeqTransf(self.width, layers=temporal_layers) if header == "seqtransf" else None

    def encode_text(self, batch: FeatureBatch) -> Rep:
        return {"sentence": normalize(batch["text_eot"])}  # [B, D]

    def encode_video(self, batch: FeatureBatch) -> Rep:
        frames, mask = batch["video_frames"], batch["video_mask"]  # [B, F, D], [B, F]
        if self.temporal is not None:
            frames = self.temporal(frames, mask)
        return {"video": masked_mean_of_normalized(frames, mask)}  # [B, D]

    def similarity(self, text: Rep, video: Rep) -> Tensor:
        return self.logit_scale(text["sentence"] @ video["video"].t())  # [Nt, Nv]
