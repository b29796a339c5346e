"""The method contract, checked for every registered method (a new method file gets these tests for free)."""

from __future__ import annotations

import io

import pytest
import torch

from tests.helpers import feature_batch, tiny_method
from tvr_convbench.bench.evaluate import blockwise_similarity, cat_reps
from tvr_convbench.methods import METHODS as REGISTRY
from tvr_convbench.methods import CostClass, list_methods

METHODS = list_methods()
PATCHES = 6
"""patch tokens per frame in the batches of a method that ``needs_patches``"""


def batch_for(name: str, **kwargs) -> dict[str, torch.Tensor]:
    """``feature_batch(**kwargs)``, with ``video_patches`` for a method that needs them."""
    return feature_batch(**kwargs, patches=PATCHES if REGISTRY.get(name).cls.needs_patches else 0)


def trainable(method):
    return [(n, p) for n, p in method.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("name", METHODS)
def test_declares_cost_class(name):
    assert isinstance(tiny_method(name).cost_class, CostClass)


@pytest.mark.parametrize("name", METHODS)
def test_shapes(name):
    method = tiny_method(name).eval()
    batch = batch_for(name, batch=6)
    text, video = method.encode_text(batch), method.encode_video(batch)
    assert text and video
    assert all(t.shape[0] == 6 for t in text.values())
    assert all(v.shape[0] == 6 for v in video.values())
    sim = method.similarity(text, video)
    assert sim.shape == (6, 6)
    assert torch.isfinite(sim).all()


@pytest.mark.parametrize("name", METHODS)
def test_rectangular_similarity(name):
    method = tiny_method(name).eval()
    text = method.encode_text(batch_for(name, batch=3, seed=1))
    video = method.encode_video(batch_for(name, batch=5, seed=2))
    assert method.similarity(text, video).shape == (3, 5)


@pytest.mark.parametrize("name", METHODS)
def test_loss_finite_and_gradients_reach_every_trainable_parameter(name):
    method = tiny_method(name).train()
    batch = batch_for(name, batch=6)
    losses = method.training_forward(*method(batch))
    assert "loss" in losses
    for key, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), key
    params = trainable(method)
    if not params:
        return
    losses["loss"].backward()
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient in {bad}"
    zero = [n for n, p in params if not p.grad.abs().sum() > 0]
    assert not zero, f"identically zero gradient in {zero}"


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_loss(name):
    def run():
        method = tiny_method(name, seed=3).train()
        torch.manual_seed(11)
        return method.training_forward(*method(batch_for(name, batch=6)))["loss"]

    assert torch.equal(run(), run())


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip(name):
    source = tiny_method(name, seed=1).eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = tiny_method(name, seed=2).eval()
    target.load_state_dict(torch.load(buffer, weights_only=True))
    batch = batch_for(name, batch=5)
    expected = source.similarity(*source(batch))
    assert torch.equal(target.similarity(*target(batch)), expected)


@pytest.mark.parametrize("name", METHODS)
def test_blockwise_similarity_equals_unblocked(name):
    method = tiny_method(name).eval()
    batches = [batch_for(name, batch=n, seed=s, offset=o) for n, s, o in ((7, 1, 0), (6, 2, 7), (4, 3, 13))]
    with torch.no_grad():
        text = cat_reps([method.encode_text(b) for b in batches])
        video = cat_reps([method.encode_video(b) for b in batches[:2]])
        full = method.similarity(text, video)
    for block in (1, 4, 5):
        torch.testing.assert_close(blockwise_similarity(method, text, video, block), full, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_eval_is_deterministic(name):
    method = tiny_method(name).eval()
    batch = batch_for(name, batch=6)
    with torch.no_grad():
        assert torch.equal(method.similarity(*method(batch)), method.similarity(*method(batch)))
