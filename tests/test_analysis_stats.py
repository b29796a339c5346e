"""Hand-computed examples for every statistic of the convergence analysis (bench.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tvr_convbench.bench.analysis.stats import (
    bootstrap_intervals,
    iqm,
    median,
    performance_profile,
    performance_ratios,
    probability_of_improvement,
    profile_score,
    rng_for,
    stratified_resamples,
)
from tvr_convbench.bench.analysis.targets import best_of, first_reach, normalised_auc, run_table, target_table
from tvr_convbench.bench.config import ReportConfig

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


def test_targets_from_the_best_run_or_the_best_method_median():
    curves = curves_frame({"a": [50, 40, 30], "b": [45, 44]})  # best of any run 50; medians 40 and 44.5
    best = target_table(ReportConfig(targets=(0.5, 0.9)), curves)
    assert list(best["target"]) == ["50%", "90%"]
    np.testing.assert_allclose(best["value"], [25.0, 45.0])
    median_best = target_table(ReportConfig(targets=(0.5,), reference="median_best"), curves)
    np.testing.assert_allclose(median_best["value"], [22.25])
    absolute = target_table(ReportConfig(absolute_targets=(30, 44.5)), curves)
    assert list(absolute["target"]) == ["≥30", "≥44.5"]
    np.testing.assert_allclose(absolute["value"], [30.0, 44.5])


def test_run_table_keeps_censored_runs():
    curves = curves_frame({"a": [50, 20]})
    targets = target_table(ReportConfig(absolute_targets=(30,)), curves)
    table = run_table(curves, targets, max_steps=10, higher=True)
    assert list(table["steps_to_target"]) == [10, INF]
    assert list(table["seconds_to_target"]) == [1.0, INF]
    assert list(table["reached"]) == [True, False]
    np.testing.assert_allclose(table["auc"], [25.0, 10.0])  # 0.5 * 10 * best / 10


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


# ------------------------------------------------------------------------------------------ profiles


def test_performance_profile_values():
    times = np.array([[10.0, 20], [30, 15], [INF, 40], [INF, INF]])  # cases x methods (A, B)
    ratios = performance_ratios(times)
    np.testing.assert_array_equal(ratios, [[1, 2], [2, 1], [INF, 1], [INF, INF]])
    profile = performance_profile(times, np.array([1.0, 1.5, 2.0, 4.0]))
    np.testing.assert_allclose(profile[:, 0], [0.25, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(profile[:, 1], [0.5, 0.5, 0.75, 0.75])
    taus = np.linspace(1.0, 4.0, 601)
    scores = profile_score(performance_profile(times, taus), taus)
    np.testing.assert_allclose(scores, [(0.25 * 1 + 0.5 * 2) / 3, (0.5 * 1 + 0.75 * 2) / 3], atol=1e-3)


def test_performance_ratios_with_zero_times_and_missing_runs():
    np.testing.assert_array_equal(performance_ratios(np.array([[0.0, 5.0], [0.0, 0.0]])), [[1, INF], [1, 1]])
    times = np.array([[10.0, np.nan], [10.0, 20.0]])  # method B has no run for the first case
    ratios = performance_ratios(times)
    assert ratios[0, 0] == 1 and np.isnan(ratios[0, 1]) and ratios[1, 1] == 2
    profile = performance_profile(times, np.array([1.0, 2.0]))
    np.testing.assert_allclose(profile, [[1.0, 0.0], [1.0, 1.0]])  # B's fraction is over its one case


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"targets": [1.5]}, "targets"),
        ({"targets": []}, "targets"),
        ({"metric": "t2v/R1"}, "metric"),
        ({"metric": "t2v/MdR"}, "absolute_targets"),
        ({"absolute_targets": []}, "absolute_targets"),
        ({"reference": "mean"}, "reference"),
        ({"aggregate": "mean"}, "aggregate"),
        ({"confidence": 1.0}, "confidence"),
        ({"bootstrap_reps": True}, "bootstrap_reps"),
        ({"profile_max_ratio": 1}, "profile_max_ratio"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_report_config_names_the_bad_field(mapping, field):
    with pytest.raises(ValueError, match=field):
        ReportConfig.from_mapping(mapping)


def test_report_config_from_yaml_lists():
    cfg = ReportConfig.from_mapping({"metric": "v2t/MnR", "absolute_targets": [20, 10], "targets": [0.5]})
    assert cfg.absolute_targets == (20, 10) and cfg.targets == (0.5,) and not cfg.higher_is_better
    assert ReportConfig.from_mapping(None) == ReportConfig()
