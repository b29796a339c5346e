"""In-batch training recall at every optimizer step (issue 14): ``t2v/R@1, t2v/R@5, v2t/R@1, v2t/R@5`` of the
[B, B] logits the loss came from (``Losses.similarity``), ranked as evaluation ranks (ties against the positive),
logged beside the loss parts in ``metrics.csv`` (split ``train``) and in wandb (``train/t2v/R@1`` ...).

Before: ``training_forward`` returned a plain dict, ``core.metrics`` had no ``in_batch_recall`` and the trainer
logged the loss parts only.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from tests.helpers import TINY, feature_batch, metric_rows, sweep_cli, tiny_method, tiny_sweep
from tvr_convbench.bench import trainer
from tvr_convbench.bench.config import TrainerConfig
from tvr_convbench.core.metrics import IN_BATCH_METRICS, in_batch_recall
from tvr_convbench.methods import METHODS, list_methods
from tvr_convbench.methods.base import Losses


def brute_force_recall(sim: torch.Tensor) -> dict[str, float]:
    """The oracle: the rank of pair i is the number of other items scoring at least as high as it (a tie counts
    against the positive, as in evaluation); R@K = 100 x the share of ranks below K."""
    out = {}
    for direction, matrix in (("t2v", sim.tolist()), ("v2t", sim.t().tolist())):
        ranks = [sum(1 for j, v in enumerate(row) if j != i and v >= row[i]) for i, row in enumerate(matrix)]
        for k in (1, 5):
            out[f"{direction}/R@{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    return out


KNOWN = torch.tensor(
    [
        [5.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # rank 0
        [2.0, 2.0, 0.0, 0.0, 0.0, 0.0],  # tied with a negative: rank 1
        [9.0, 8.0, 7.0, 6.0, 5.0, 4.0],  # rank 2
        [9.0, 9.0, 9.0, 9.0, 9.0, 9.0],  # all tied: rank 5 (the worst)
        [0.0, 0.0, 0.0, 0.0, 3.0, 0.0],  # rank 0
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # rank 0
    ]
)


def test_in_batch_recall_of_a_known_matrix() -> None:
    """Ranks worked out by hand: texts (rows) 0, 1, 2, 3, 4, 5 rank their video 0, 1, 2, 5, 0, 0; videos (columns)
    rank their text 2, 3, 1, 0, 3, 1 (column 1 = (1, 2, 8, 9, 0, 2): 8, 9 and the tied 2 are ahead of its 2)."""
    expected = {"t2v/R@1": 100 * 3 / 6, "t2v/R@5": 100 * 5 / 6, "v2t/R@1": 100 * 1 / 6, "v2t/R@5": 100.0}
    assert brute_force_recall(KNOWN) == pytest.approx(expected)
    assert in_batch_recall(KNOWN) == pytest.approx(expected)
    assert tuple(in_batch_recall(KNOWN)) == IN_BATCH_METRICS


@pytest.mark.parametrize("seed", range(20))
def test_in_batch_recall_matches_the_brute_force_oracle(seed: int) -> None:
    """Small integer scores, so ties are frequent (and B below, at and above 5)."""
    g = torch.Generator().manual_seed(seed)
    size = int(torch.randint(1, 12, (1,), generator=g))
    sim = torch.randint(0, 4, (size, size), generator=g).float()
    assert in_batch_recall(sim) == pytest.approx(brute_force_recall(sim))


class KnownMatrix(nn.Module):
    """A stand-in method whose loss comes from a given in-batch matrix."""

    def __init__(self, sim: torch.Tensor) -> None:
        super().__init__()
        self.sim = sim

    def forward(self, batch: dict) -> tuple[dict, dict]:
        return {}, {}

    def training_forward(self, text: dict, video: dict) -> Losses:
        return Losses({"loss": torch.tensor(1.5), "infonce": torch.tensor(0.5)}, self.sim)

    def after_optimizer_step(self) -> None:
        pass


def test_the_step_function_logs_the_recall_of_the_losses_own_matrix() -> None:
    step_fn = trainer.StepFunction(
        trainer.RunModel(nn.Identity(), KnownMatrix(KNOWN)), None, L.Fabric(accelerator="cpu", devices=1),
        TrainerConfig(max_steps=10),
    )  # fmt: skip
    logged = step_fn({}, step=3)
    assert logged == pytest.approx({"loss": 1.5, "loss/infonce": 0.5, **brute_force_recall(KNOWN)}, rel=1e-12)


def method_batch(name: str, batch: int = 6) -> dict[str, torch.Tensor]:
    patches = 4 if METHODS.get(name).cls.needs_patches else 0
    kwargs = {"patches": patches} if patches else {}
    return feature_batch(batch=batch, words=TINY["max_words"], frames=TINY["max_frames"], width=TINY["width"], **kwargs)


@pytest.mark.parametrize("name", list_methods())
def test_training_forward_returns_the_similarity_it_scored(name: str) -> None:
    """For every registered method: ``training_forward(...).similarity`` is the [B, B] matrix ``similarity`` gives
    (dropout off: eval mode), and the loss parts are tensors."""
    method = tiny_method(name).eval()
    batch = method_batch(name)
    with torch.no_grad():
        text, video = method.encode_text(batch), method.encode_video(batch)
        losses = method.training_forward(text, video)
        expected = method.similarity(text, video)
    assert isinstance(losses, Losses) and "loss" in losses
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in losses.values())
    assert losses.similarity.shape == (6, 6)
    torch.testing.assert_close(losses.similarity, expected, rtol=1e-5, atol=1e-4)


def test_glccl_similarity_is_the_mean_of_its_four_scaled_scores() -> None:
    """GLCCL's override, with autograd on (the training path, not the tiled no-grad path)."""
    method = tiny_method("glccl").eval()
    batch = method_batch("glccl")
    text, video = method.encode_text(batch), method.encode_video(batch)
    losses = method.training_forward(text, video)
    parts = method.logit_scale(method.score_parts(text, video))  # [4, B, B]
    assert parts.shape == (4, 6, 6)
    torch.testing.assert_close(losses.similarity, parts.mean(0))
    torch.testing.assert_close(losses.similarity, method.similarity(text, video))


def test_a_tiny_run_logs_the_four_recalls_at_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirrored: list[tuple[int, dict]] = []
    original = trainer.WandbMirror.log

    def log(self, step, seconds, values):  # noqa: ANN001, ANN202
        mirrored.append((step, dict(values)))
        return original(self, step, seconds, values)

    monkeypatch.setattr(trainer.WandbMirror, "log", log)
    path = tiny_sweep(tmp_path, tmp_path / "cache", methods=["seqtransf"])
    assert sweep_cli(path, tmp_path / "runs") == 0
    rows = metric_rows(tmp_path / "runs" / "s" / "seqtransf-s0" / "metrics.csv")
    train = {(step, metric): float(value) for step, split, metric, value in rows if split == "train"}
    for step in range(1, 7):
        for metric in IN_BATCH_METRICS:
            value = train[(step, metric)]
            assert 0.0 <= value <= 100.0 and (value / 12.5).is_integer()  # batch 8: multiples of 100 / 8
        assert (step, "loss") in train
    assert {step for step, _ in train} == set(range(1, 7))
    logged = {step: values for step, values in mirrored if any(k.startswith("train/") for k in values)}
    assert sorted(logged) == list(range(1, 7))
    for step, values in logged.items():
        assert {values[f"train/{m}"] for m in IN_BATCH_METRICS} == {train[(step, m)] for m in IN_BATCH_METRICS}
