"""The CLIP4Clip "seqTransf" temporal module, shared by CLIP4Clip-seqTransf, X-CLIP, DRL, GLSCL and GLCCL.

Spec: ``reference/baselines-and-didemo.md`` 1.2 (CLIP4Clip ``modules/module_cross.py`` + ``modeling.py``):
four CLIP-style residual blocks (pre-LN with eps 1e-12, 8 heads, MLP 4x with QuickGELU, no dropout, no causal
mask), a learned frame-position table of 77 rows, padded frames masked as keys with an additive -1e6, and the
output ``blocks(x + pos) + x`` (the residual skips the position embedding).

Initialisation: with a CLIP text tower available (``init_from_clip_text``) the blocks copy CLIP text blocks
0..3 and the table copies CLIP's text positional embedding, as the official code does. Without one (the
synthetic proxy) the blocks use CLIP's own random-init scheme (``_init_clip_style``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

MASK_BIAS = -1e6
"""additive attention bias on padded frames (the official value; -inf would NaN an all-padded video)"""


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, ln_eps: float = 1e-12) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width))
        )
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        """x: [B, F, D]; key_bias: [B, F] additive bias on keys (0 real, -1e6 padded)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_bias, need_weights=False)[0]  # [B, F, D]
        return x + self.mlp(self.ln_2(x))


class SeqTransf(nn.Module):
    """Temporal transformer over frame features: ``[B, F, D] -> [B, F, D]``.

    Args:
        width: D.
        layers: residual blocks (4 in every official recipe).
        heads: attention heads (8).
        positions: rows of the frame-position table (77, CLIP's text context length); ``max_frames`` must fit.
    """

    def __init__(self, width: int, layers: int = 4, heads: int = 8, positions: int = 77) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"SeqTransf: width {width} is not divisible by heads {heads}")
        self.positions = positions
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self._init_clip_style()

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        """frames: [B, F, D] unnormalised; mask: [B, F] bool (True = real frame)."""
        num_frames = frames.shape[1]
        if num_frames > self.positions:
            raise ValueError(f"SeqTransf: {num_frames} frames exceed the {self.positions}-row position table")
        pos = self.frame_position_embeddings.weight[:num_frames]  # [F, D]
        key_bias = torch.zeros(mask.shape, dtype=frames.dtype, device=frames.device)
        key_bias = key_bias.masked_fill(~mask, MASK_BIAS)  # [B, F]
        x = frames + pos
        for block in self.resblocks:
            x = block(x, key_bias)
        return x + frames  # [B, F, D]

    @torch.no_grad()
    def _init_clip_style(self) -> None:
        """CLIP's transformer init (openai/CLIP ``model.py::initialize_parameters``), zero biases."""
        width, layers = self.frame_position_embeddings.embedding_dim, len(self.resblocks)
        attn_std, proj_std, fc_std = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
        nn.init.normal_(self.frame_position_embeddings.weight, std=0.01)
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            for bias in (block.attn.in_proj_bias, block.attn.out_proj.bias, block.mlp.c_fc.bias, block.mlp.c_proj.bias):
                nn.init.zeros_(bias)

    @torch.no_grad()
    def init_from_clip_text(self, text_model: nn.Module) -> None:
        """Copy CLIP text blocks 0..layers-1 and the text positional embedding (a ``transformers`` CLIP text model).

        ``text_model`` is ``CLIPModel.text_model`` (``CLIPTextTransformer``): ``embeddings.position_embedding``
        and ``encoder.layers[i]`` with ``self_attn.{q,k,v,out}_proj``, ``layer_norm1/2``, ``mlp.fc1/fc2``.
        """
        width = self.frame_position_embeddings.embedding_dim
        table = text_model.embeddings.position_embedding.weight  # [77, W]
        if table.shape[1] != width:
            raise ValueError(f"SeqTransf width {width} != CLIP text width {table.shape[1]}: cannot copy blocks")
        rows = min(self.positions, table.shape[0])
        self.frame_position_embeddings.weight[:rows].copy_(table[:rows])
        for block, layer in zip(self.resblocks, text_model.encoder.layers, strict=False):
            attn = layer.self_attn
            block.attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            block.attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            block.attn.out_proj.load_state_dict(attn.out_proj.state_dict())
            block.ln_1.load_state_dict(layer.layer_norm1.state_dict())
            block.ln_2.load_state_dict(layer.layer_norm2.state_dict())
            block.mlp.c_fc.load_state_dict(layer.mlp.fc1.state_dict())
            block.mlp.c_proj.load_state_dict(layer.mlp.fc2.state_dict())
