"""The shared pieces every method relies on: InfoNCE, seqTransf, the schedule, BertAdam, parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from tvr_convbench.methods import build_method
from tvr_convbench.methods.base import LogitScale
from tvr_convbench.methods.parts.losses import symmetric_infonce
from tvr_convbench.methods.parts.optim import BertAdam, build_optimizer, lr_multiplier, warmup_cosine
from tvr_convbench.methods.parts.temporal import MASK_BIAS, SeqTransf


@pytest.mark.parametrize("batch,expected", [(2, 0.693147), (32, 3.4657), (64, 4.158883), (128, 4.852030)])
def test_infonce_at_uniform_logits_is_ln_b(batch, expected):
    assert symmetric_infonce(torch.full((batch, batch), 3.0)).item() == pytest.approx(expected, abs=1e-4)


def test_infonce_is_the_mean_of_both_directions():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    rows = -torch.log_softmax(logits, 1).diagonal().mean()
    cols = -torch.log_softmax(logits, 0).diagonal().mean()
    assert symmetric_infonce(logits).item() == pytest.approx(0.5 * (rows + cols).item(), abs=1e-6)
    with pytest.raises(ValueError, match="square"):
        symmetric_infonce(torch.zeros(2, 3))


@pytest.mark.parametrize(
    "x,expected", [(0.05, 0.5), (0.0999, 0.999), (0.1, 0.9755), (0.5, 0.5), (1.0, 0.0), (1.5, 0.5)]
)
def test_warmup_cosine_matches_the_spec(x, expected):
    """reference/glscl.md sec. 8 item 12 (the cosine runs over the whole progress, not rescaled after warmup)."""
    assert warmup_cosine(x, 0.1) == pytest.approx(expected, abs=1e-4)


def test_schedule_in_steps():
    assert lr_multiplier("warmup_cosine", 0, 100, 0.1) == 0.0
    assert lr_multiplier("warmup_cosine", 5, 100, 0.1) == pytest.approx(0.5)
    assert lr_multiplier("constant", 7, 100, 0.1) == 1.0


def test_seqtransf_parameters_at_width_512():
    module = SeqTransf(512)
    blocks = sum(p.numel() for p in module.resblocks.parameters())
    assert blocks == 12_609_536 and module.frame_position_embeddings.weight.numel() == 39_424


def test_seqtransf_is_residual_and_ignores_padded_keys():
    torch.manual_seed(0)
    module = SeqTransf(16, layers=2).eval()
    frames, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        out = module(frames, mask)
        changed = frames.clone()
        changed[0, 3:] = 7.0  # padded slots of video 0 are keys with a -1e6 bias: real outputs must not move
        out_changed = module(changed, mask)
        for block in module.resblocks:
            torch.nn.init.zeros_(block.attn.out_proj.weight)
            torch.nn.init.zeros_(block.mlp.c_proj.weight)
        identity = module(frames, mask)  # with zeroed output projections: blocks(x + pos) = x + pos, plus x
    torch.testing.assert_close(out_changed[0, :3], out[0, :3])
    pos = module.frame_position_embeddings.weight[:5]
    torch.testing.assert_close(identity, 2 * frames + pos)
    assert MASK_BIAS == -1e6


def test_seqtransf_copies_clip_text_blocks():
    config = CLIPTextConfig(hidden_size=16, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                            vocab_size=50, max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0,
                            eos_token_id=1, pad_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    text = CLIPTextModel(config).eval()  # the text tower (CLIPModel.text_model has the same layout)
    module = SeqTransf(16, layers=4, heads=2).eval()
    module.init_from_clip_text(text)
    x = torch.randn(3, 6, 16)
    with torch.no_grad():
        ours = module.resblocks[0](x, torch.zeros(3, 6))
        theirs = text.encoder.layers[0](x, attention_mask=None)
        theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)  # LayerNorm eps 1e-12 vs 1e-5 only
    torch.testing.assert_close(module.frame_position_embeddings.weight, text.embeddings.position_embedding.weight)


def test_bertadam_first_step_has_no_bias_correction():
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    param.grad = torch.tensor([0.5, 0.25])
    BertAdam([param], lr=0.1, weight_decay=0.2, max_grad_norm=0.0).step()
    g = torch.tensor([0.5, 0.25])
    update = (0.1 * g) / ((0.02 * g * g).sqrt() + 1e-6) + 0.2 * torch.tensor([1.0, -2.0])
    torch.testing.assert_close(param.detach(), torch.tensor([1.0, -2.0]) - 0.1 * update)


def test_bertadam_clips_each_tensor():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])
    optimizer = BertAdam([a, b], lr=1.0, max_grad_norm=1.0)
    optimizer.step()
    assert optimizer.state[a]["exp_avg"].norm().item() == pytest.approx(0.1, rel=1e-4)  # 0.1 x clipped (norm 1)
    assert optimizer.state[b]["exp_avg"].norm().item() == pytest.approx(0.05, rel=1e-4)  # untouched (norm 0.5)


def test_param_groups_roles_and_decay():
    method = build_method("glscl", width=16, max_frames=4, max_words=5, learnable_logit_scale=True)
    groups = method.param_groups(0.2)
    by_role = {(g["role"], g["weight_decay"]) for g in groups}
    assert by_role == {("head", 0.2), ("head", 0.0), ("backbone", 0.2)}
    names = {id(p): n for n, p in method.named_parameters()}
    for group in groups:
        for param in group["params"]:
            assert (group["weight_decay"] == 0.0) == names[id(param)].endswith("bias")
    optimizer = build_optimizer(groups, "bertadam", lr=1e-4, backbone_lr=1e-7, grad_clip=1.0)
    lrs = {g["role"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"head": 1e-4, "backbone": 1e-7}
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in method.parameters() if p.requires_grad)


def test_logit_scale_fixed_or_clamped():
    fixed = LogitScale(100.0)
    assert fixed(torch.tensor(0.5)).item() == pytest.approx(50.0) and not list(fixed.parameters())
    learnable = LogitScale(100.0, learnable=True)
    with torch.no_grad():
        learnable.log_scale.add_(1.0)
    learnable.clamp_()
    assert learnable.log_scale.item() == pytest.approx(math.log(100.0))
