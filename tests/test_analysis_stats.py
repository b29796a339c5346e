"""Hand-computed examples for every statistic of the convergence analysis (bench.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tvr_convbench.bench.analysis.stats import (
    algoperf_profile,
    algoperf_ratios,
    bootstrap_intervals,
    iqm,
    median,
    median_coverage,
    median_interval,
    min_seeds_for_median_interval,
    order_statistic_rank,
    probability_intervals,
    probability_of_improvement,
    profile_score,
    rng_for,
    stratified_resamples,
    workload_times,
)
from tvr_convbench.bench.analysis.targets import best_of, first_reach, interpolated_reach, normalised_auc, run_table
from tvr_convbench.bench.config import ReportConfig, TargetsConfig
from tvr_convbench.bench.targets import posthoc_targets, reference_value, target_values
from tvr_convbench.bench.typed import from_mapping

INF = math.inf


# ------------------------------------------------------------------------------------------ time to target


def test_first_reach_takes_the_first_evaluation_and_censors_a_miss():
    steps = np.array([0.0, 10, 20, 30])
    seconds = np.array([0.0, 1.5, 3.0, 4.5])
    values = np.array([5.0, 12, 11, 20])  # not monotone: the first evaluation meeting a target counts
    to_steps, to_seconds = first_reach(steps, seconds, values, np.array([10.0, 12, 20, 25]), higher=True)
    np.testing.assert_array_equal(to_steps, [10, 10, 30, INF])  # "at or above": 12 meets 12; 25 is never met
    np.testing.assert_array_equal(to_seconds, [1.5, 1.5, 4.5, INF])


def test_first_reach_lower_is_better_and_nan_never_meets():
    steps, seconds = np.array([0.0, 10, 20]), np.array([0.0, 1, 2])
    to_steps, _ = first_reach(steps, seconds, np.array([50.0, 20, 10]), np.array([15.0, 20]), higher=False)
    np.testing.assert_array_equal(to_steps, [20, 10])
    to_steps, _ = first_reach(steps, seconds, np.array([np.nan, 30, 40]), np.array([10.0]), higher=True)
    np.testing.assert_array_equal(to_steps, [10])


def test_best_of_takes_the_first_step_of_the_best_value():
    steps = np.array([0.0, 10, 20])
    assert best_of(steps, np.array([5.0, 9, 9]), higher=True) == (9.0, 10.0)
    assert best_of(steps, np.array([5.0, 3, 3]), higher=False) == (3.0, 10.0)
    assert all(math.isnan(v) for v in best_of(steps, np.full(3, np.nan), higher=True))


def test_auc_is_the_trapezoid_over_evaluations_divided_by_the_budget():
    steps, values = np.array([0.0, 50, 100]), np.array([0.0, 10, 10])
    assert normalised_auc(steps, values, 100) == pytest.approx(7.5)  # (0.5*50*10 + 50*10) / 100
    assert normalised_auc(steps, values, 200) == pytest.approx(3.75)  # a run that stopped at half the budget


def curves_frame(bests: dict[str, list[float]]) -> pd.DataFrame:
    """Two evaluations per run: 0 at step 0, the run's best at step 10 (train seconds = step / 10)."""
    rows = []
    for method, values in bests.items():
        for seed, best in enumerate(values):
            run = f"{method}-s{seed}"
            rows += [(method, seed, run, 0, 0.0, 0.0), (method, seed, run, 10, 1.0, best)]
    return pd.DataFrame(rows, columns=["method", "seed", "run", "step", "train_seconds", "value"])


def test_targets_from_the_reference_runs_by_rule():
    bests = {"a-s0": 50.0, "a-s1": 40.0, "a-s2": 30.0, "b-s0": 45.0, "b-s1": 44.0}  # medians 40 and 44.5
    labels = {run: run.split("-")[0] for run in bests}
    assert reference_value(bests, labels, "best", "t2v/R@1") == 50.0
    assert reference_value(bests, labels, "median_best", "t2v/R@1") == 44.5
    fraction = TargetsConfig(source="reference", seeds=(9,), rule="fraction", fractions=(0.5, 0.9))
    np.testing.assert_allclose(target_values(fraction, 50.0, None), [25.0, 45.0])
    gain = TargetsConfig(source="reference", seeds=(9,), rule="gain", fractions=(0.5, 0.9))
    np.testing.assert_allclose(target_values(gain, 50.0, 20.0), [35.0, 47.0])  # floor + f (ref - floor)
    failed = {**bests, "c-s0": -INF}  # a failed reference run is the worst value, never dropped
    assert reference_value(failed, {**labels, "c-s0": "c"}, "median_best", "t2v/R@1") == 44.5
    lower = reference_value({"a-s0": 9.0, "a-s1": 7.0}, {"a-s0": "a", "a-s1": "a"}, "median_best", "t2v/MdR")
    assert lower == 8.0


def test_posthoc_targets_are_fractions_of_the_best_scored_run():
    targets = posthoc_targets("t2v/R@1", (0.5, 0.9), {"a-s0": 50.0, "b-s0": 40.0, "c-s0": -INF})
    assert targets.labels == ["50%", "90%"] and targets.source == "posthoc"
    np.testing.assert_allclose(targets.values, [25.0, 45.0])


def test_run_table_keeps_censored_runs():
    curves = curves_frame({"a": [50, 20]})
    targets = pd.DataFrame({"target": ["≥30"], "fraction": [np.nan], "value": [30.0]})
    table = run_table(curves, targets, max_steps=10, higher=True)
    assert list(table["steps_to_target"]) == [10, INF]
    assert list(table["seconds_to_target"]) == [1.0, INF]
    assert list(table["reached"]) == [True, False]
    np.testing.assert_allclose(table["auc"], [25.0, 10.0])  # 0.5 * 10 * best / 10


def test_interpolated_crossing_between_the_bracketing_evaluations():
    steps, seconds = np.array([0.0, 10, 20, 30]), np.array([0.0, 2.0, 4.0, 6.0])
    values = np.array([10.0, 20, 40, 35])
    to_steps, to_seconds = interpolated_reach(steps, seconds, values, np.array([30.0, 20, 5, 41]), higher=True)
    np.testing.assert_allclose(to_steps, [15, 10, 0, INF])  # 30 lies half-way from 20 (step 10) to 40 (step 20)
    np.testing.assert_allclose(to_seconds, [3.0, 2.0, 0.0, INF])  # a crossing at step 0 is at 0; 41 is never met
    lower, _ = interpolated_reach(steps, seconds, np.array([50.0, 40, 20, 10]), np.array([30.0]), higher=False)
    np.testing.assert_allclose(lower, [15])  # rank metrics cross downwards
    first, _ = first_reach(steps, seconds, values, np.array([30.0]), higher=True)
    assert first[0] == 20 and to_steps[0] <= first[0]  # the primary reading is the evaluation at or after it


def test_failed_runs_are_misses_with_the_worst_best_value():
    curves = curves_frame({"a": [50]})
    targets = pd.DataFrame({"target": ["50%"], "fraction": [0.5], "value": [25.0]})
    failed = pd.DataFrame({"method": ["a"], "seed": [1], "run": ["a-s1"]})
    table = run_table(curves, targets, 10, True, failed)
    row = table.set_index("run").loc["a-s1"]
    assert row["steps_to_target"] == INF and row["seconds_interpolated"] == INF and not row["reached"]
    assert row["best"] == -INF and math.isnan(row["best_step"])
    assert iqm(np.array([50.0, 48, 47, 46, -INF])) == pytest.approx(47.0)  # n=5: trimmed as the worst, not the best


# ------------------------------------------------------------------------------------------ aggregates


def test_iqm_of_eight_values_trims_two_from_each_end():
    values = np.array([7.0, 1, 100, 3, 5, 2, 6, 4])
    assert iqm(values) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([INF, 1, 2, 3, 4, 5, 6, 7])) == pytest.approx(4.5)  # the miss is trimmed away
    assert iqm(np.array([1.0, 2, 3, 4, 5, INF, INF, INF])) == INF  # a miss survives the trimming
    assert iqm(np.array([1.0, 2, 3, 10])) == pytest.approx(2.5)  # n=4: one from each end
    assert iqm(np.array([1.0, 2, 9])) == pytest.approx(4.0)  # n=3: int(0.75) = 0, the plain mean


def test_median_with_censored_values():
    assert median(np.array([1.0, 2, 3, INF])) == pytest.approx(2.5)
    assert median(np.array([1.0, 2, INF, INF])) == INF


def test_stratified_resamples_draw_within_each_column():
    values = np.array([[1.0, 10], [2, 20], [3, 30]])  # [N=3, T=2]
    samples = stratified_resamples(values, 500, np.random.default_rng(0))
    assert samples.shape == (500, 3, 2)
    assert set(np.unique(samples[..., 0])) == {1, 2, 3} and set(np.unique(samples[..., 1])) == {10, 20, 30}
    # columns are resampled independently: the row a value came from differs between columns somewhere
    assert (samples[..., 1] != 10 * samples[..., 0]).any()


def test_bootstrap_interval_of_the_median_of_two_values():
    # resamples of {10, 20}: medians 10, 15, 15, 20 with probabilities 1/4, 1/2, 1/4 -> 95% interval [10, 20]
    point, lower, upper = bootstrap_intervals(np.array([[10.0], [20.0]]), "median", 10_000, 0.95, rng_for(0, "m"))
    assert (point[0], lower[0], upper[0]) == (15.0, 10.0, 20.0)
    point, lower, upper = bootstrap_intervals(np.array([[10.0], [INF]]), "median", 10_000, 0.95, rng_for(0, "m"))
    assert (point[0], lower[0], upper[0]) == (INF, 10.0, INF)  # infinite bounds stay infinite, never NaN


def test_bootstrap_is_deterministic_under_a_seed():
    values = np.random.default_rng(3).normal(size=(8, 4))
    first = bootstrap_intervals(values, "iqm", 2_000, 0.95, rng_for(7, "xpool", "steps"))
    again = bootstrap_intervals(values, "iqm", 2_000, 0.95, rng_for(7, "xpool", "steps"))
    other = bootstrap_intervals(values, "iqm", 2_000, 0.95, rng_for(8, "xpool", "steps"))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert np.all(first[1] <= first[0]) and np.all(first[0] <= first[2])


def test_bootstrap_degenerate_cases():
    point, lower, upper = bootstrap_intervals(np.array([[3.0, 4.0]]), "iqm", 1_000, 0.95, rng_for(0))
    np.testing.assert_array_equal(point, [3.0, 4.0])
    assert np.isnan(lower).all() and np.isnan(upper).all()  # one seed: no interval
    point, lower, upper = bootstrap_intervals(np.full((4, 1), 2.0), "median", 1_000, 0.95, rng_for(0))
    assert (point[0], lower[0], upper[0]) == (2.0, 2.0, 2.0)


def test_probability_of_improvement_counts_ties_as_half():
    x, y = np.array([1.0, 2, INF]), np.array([2.0, INF, INF])
    # x=1 beats all 3; x=2 ties 2 and beats 2 infs; inf loses to 2 and ties 2 infs -> (3 + 2.5 + 1) / 9
    assert probability_of_improvement(x, y) == pytest.approx(6.5 / 9)
    assert probability_of_improvement(y, x) == pytest.approx(2.5 / 9)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)
    assert probability_of_improvement(np.array([INF]), np.array([INF])) == 0.5


# ------------------------------------------------------------------------------------------ intervals


@pytest.mark.parametrize("n", [5, 10, 20])
def test_order_statistic_interval_covers_the_median_at_least_as_promised(n):
    rng = np.random.default_rng(n)
    covered, trials = 0, 4000
    for _ in range(trials):
        sample = rng.exponential(size=n)  # a skewed distribution, true median ln 2
        _, lower, upper = median_interval(sample, 0.95)
        lower, upper = (-INF, INF) if math.isnan(lower) else (lower, upper)  # none exists: nothing is claimed
        covered += lower <= math.log(2) <= upper
    assert covered / trials >= 0.95 - 0.01  # 0.01 = three standard errors of the simulation
    rank = order_statistic_rank(n, 0.95)
    assert (rank is None) == (n < 6) and min_seeds_for_median_interval(0.95) == 6
    if rank is not None:
        assert median_coverage(n, rank) >= 0.95 and median_coverage(n, rank + 1) < 0.95


def test_order_statistic_interval_values():
    point, lower, upper = median_interval(np.array([5.0, 1, 3, 2, 4, 6]), 0.95)  # n=6: x(1), x(6) (96.9%)
    assert (point, lower, upper) == (3.5, 1.0, 6.0)
    point, lower, upper = median_interval(np.array([1.0, 2, 3, 4, INF]), 0.95)  # n=5: none at 95%
    assert point == 3.0 and math.isnan(lower) and math.isnan(upper)
    values = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, INF])  # n=10: x(2), x(9)
    assert median_interval(values, 0.95)[1:] == (2.0, 9.0)


def test_probability_intervals_per_target_and_their_mean():
    x = np.array([[1.0, 10], [2, 20], [3, 30]])  # X is always sooner on target 0, never on target 1
    y = np.array([[4.0, 5], [5, 6], [6, 7]])
    point, lower, upper = probability_intervals(x, y, 2000, 0.95, rng_for(0))
    np.testing.assert_allclose(point, [1.0, 0.0, 0.5])
    np.testing.assert_allclose(lower[:2], [1.0, 0.0])
    np.testing.assert_allclose(upper[:2], [1.0, 0.0])
    assert lower[2] == upper[2] == 0.5  # each resample keeps a run's targets together: the mean is exactly 0.5
    point, lower, upper = probability_intervals(x[:1], y, 100, 0.95, rng_for(0))
    assert np.isnan(lower).all()  # one run on a side: no interval


# ------------------------------------------------------------------------------------------ AlgoPerf profile


def test_algoperf_profile_reproduces_a_hand_computed_example():
    """Methods A, B, C on two workloads, three seeds each. Per workload the median over seeds first (AlgoPerf's
    ``np.median`` of the studies): W1 A 20, B 50, C inf; W2 A inf, B 70, C 300. A median above 4x the fastest is
    infinite (C on W2: 300 > 280). Ratios: W1 A 1, B 2.5; W2 B 1. rho_A = 1/2 for tau >= 1; rho_B = 1/2 from 1,
    1 from 2.5; rho_C = 0. Scores over [1, 4] / 3: A 0.5, B (0.5 * 3 + 0.5 * 1.5) / 3 = 0.75, C 0."""
    times = np.array([
        [[10, 20, 30], [100, INF, INF]],
        [[40, 50, INF], [60, 70, 80]],
        [[INF, INF, 90], [200, 300, 400]],
    ], dtype=float)  # [M, W, S]  # fmt: skip
    medians = workload_times(times)
    np.testing.assert_array_equal(medians, [[20, INF], [50, 70], [INF, 300]])
    ratios = algoperf_ratios(medians, 4.0)
    np.testing.assert_array_equal(ratios, [[1, INF], [2.5, 1], [INF, INF]])
    taus = np.linspace(1.0, 4.0, 3001)
    profile = algoperf_profile(ratios, taus)  # [K, M]
    assert profile[0].tolist() == [0.5, 0.5, 0.0] and profile[-1].tolist() == [0.5, 1.0, 0.0]
    np.testing.assert_allclose(profile_score(profile, taus), [0.5, 0.75, 0.0], atol=1e-3)
    coarse = np.linspace(1.0, 4.0, 100)  # AlgoPerf's own grid: the step at 2.5 is resolved to the grid spacing
    np.testing.assert_allclose(profile_score(algoperf_profile(ratios, coarse), coarse), [0.5, 0.75, 0.0], atol=0.01)


def test_algoperf_ratios_edge_cases():
    np.testing.assert_array_equal(algoperf_ratios(np.array([[0.0], [0.0], [5.0]])), [[1], [1], [INF]])
    np.testing.assert_array_equal(algoperf_ratios(np.array([[INF], [INF]])), [[INF], [INF]])  # nobody met it


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"metric": "t2v/R1"}, "metric"),
        ({"aggregate": "mean"}, "aggregate"),
        ({"confidence": 1.0}, "confidence"),
        ({"bootstrap_reps": True}, "bootstrap_reps"),
        ({"profile_max_ratio": 1}, "profile_max_ratio"),
        ({"profile_points": 1}, "profile_points"),
        ({"colour": "red"}, "colour"),
        ({"targets": [0.5]}, "targets"),  # targets moved to their own section
    ],
)
def test_report_config_names_the_bad_field(mapping, field):
    with pytest.raises(ValueError, match=field):
        ReportConfig.from_mapping(mapping)


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"fractions": [1.5]}, "fractions"),
        ({"fractions": []}, "fractions"),
        ({"source": "absolute"}, "values"),
        ({"source": "reference"}, "seeds"),
        ({"rule": "ratio"}, "rule"),
        ({"reference": "mean"}, "reference"),
        ({"source": "reference", "seeds": [3, 3]}, "seeds"),
    ],
)
def test_targets_config_names_the_bad_field(mapping, field):
    with pytest.raises(ValueError, match=field):
        from_mapping(TargetsConfig, mapping, "targets")


def test_report_config_from_yaml():
    cfg = ReportConfig.from_mapping({"metric": "v2t/MnR", "bootstrap_reps": 200})
    assert cfg.bootstrap_reps == 200 and not cfg.higher_is_better
    assert ReportConfig.from_mapping(None) == ReportConfig()
    targets = from_mapping(TargetsConfig, {"source": "absolute", "values": [20, 10]}, "targets")
    assert targets.values == (20, 10)
