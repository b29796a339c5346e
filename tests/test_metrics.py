"""Retrieval metrics against a brute-force oracle written here (ties and NaNs never flatter a model)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from tvr_convbench.core.metrics import METRIC_NAMES, positive_ranks, retrieval_metrics


def oracle_rank(row: list[float], i: int) -> int:
    """Count every other entry that is >= the positive (or NaN); a NaN positive is last."""
    positive = row[i]
    if math.isnan(positive):
        return len(row) - 1
    return sum(1 for j, x in enumerate(row) if j != i and (math.isnan(x) or x >= positive))


def oracle_metrics(sim: torch.Tensor) -> dict[str, float]:
    out = {}
    for prefix, matrix in (("t2v", sim), ("v2t", sim.t())):
        ranks = [oracle_rank(matrix[i].tolist(), i) for i in range(matrix.shape[0])]
        for k in (1, 5, 10):
            out[f"{prefix}/R@{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
        out[f"{prefix}/MdR"] = statistics.median(ranks) + 1
        out[f"{prefix}/MnR"] = statistics.mean(ranks) + 1
    return out


@pytest.mark.parametrize("n,seed", [(1, 0), (7, 1), (13, 2), (64, 3)])
def test_matches_oracle_on_random_matrices(n, seed):
    sim = torch.randn(n, n, generator=torch.Generator().manual_seed(seed))
    got, want = retrieval_metrics(sim), oracle_metrics(sim)
    assert set(got) == set(METRIC_NAMES)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_ties_rank_the_positive_after_tied_negatives():
    sim = torch.zeros(5, 5)  # every score tied: every query is ranked last
    metrics = retrieval_metrics(sim)
    assert metrics["t2v/R@1"] == 0.0 and metrics["t2v/R@5"] == 100.0
    assert metrics["t2v/MdR"] == 5.0 and metrics["v2t/MnR"] == 5.0
    sim = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    assert positive_ranks(sim).tolist() == [1, 0, 0]


def test_quantised_scores_match_oracle():
    sim = torch.randint(0, 3, (17, 17), generator=torch.Generator().manual_seed(5)).float()
    got, want = retrieval_metrics(sim), oracle_metrics(sim)
    assert got == pytest.approx(want)


def test_nan_never_helps():
    sim = torch.eye(4) * 10
    sim[0, 0] = float("nan")  # NaN positive: worst rank
    sim[1, 2] = float("nan")  # NaN negative: counts as ahead
    assert positive_ranks(sim).tolist() == [3, 1, 0, 0]
    assert retrieval_metrics(sim) == pytest.approx(oracle_metrics(sim))


def test_perfect_and_reversed():
    n = 20
    assert retrieval_metrics(torch.eye(n))["t2v/R@1"] == 100.0
    reversed_sim = -torch.eye(n)
    metrics = retrieval_metrics(reversed_sim)
    assert metrics["t2v/R@10"] == 0.0 and metrics["t2v/MdR"] == n


def test_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(3, 4))
