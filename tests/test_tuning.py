"""The tuning ruleset (issue 15): the same trials for every method on seeds never scored, a rule declared before
anything runs, ``selection.json`` and ``targets.json`` written before the first scored run and respected on resume.

The rule is checked on hand-made trial results (``choose``: fewest median steps, ties by the median best, then
trial order; the edge-of-grid flag), the trial lists of both searches, every bad ``tuning`` section through the CLI
(one line naming the key, exit 2, nothing written), and a tiny tuned sweep end to end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import folder_state, one_line_error, sweep_cli, tiny_sweep
from tvr_convbench.bench import trainer
from tvr_convbench.bench.tuning import SelectionRule, TuningConfig, choose

INF = math.inf
GRID = {"lr": [1.0e-4, 1.0e-3, 1.0e-2]}
TRIALS = [{"lr": 1.0e-4}, {"lr": 1.0e-3}, {"lr": 1.0e-2}]


def tuning(**rule: str) -> TuningConfig:
    return TuningConfig(space=GRID, seeds=(100, 101), rule=SelectionRule(**rule))


# --- the rule on hand-made trials -------------------------------------------------------------------------------
def test_the_fewest_median_steps_win() -> None:
    times = np.array([[40.0, 60.0], [30.0, 20.0], [50.0, 10.0]])  # medians 50, 25, 30
    ties = np.array([[90.0, 90.0], [10.0, 10.0], [95.0, 95.0]])
    choice = choose(TRIALS, times, ties, tuning(), higher=True)
    assert (choice.trial, choice.settings, choice.time) == (1, {"lr": 1.0e-3}, 25.0)
    assert choice.edge == [] and "among 3 trials" in choice.why and "tied" not in choice.why


def test_a_miss_is_infinite_time_and_ties_go_to_the_median_best_then_to_trial_order() -> None:
    times = np.array([[INF, INF], [INF, 30.0], [INF, INF]])  # medians inf, inf, inf: every trial missed
    ties = np.array([[50.0, 52.0], [60.0, 40.0], [51.0, 51.0]])  # medians 51, 50, 51
    choice = choose(TRIALS, times, ties, tuning(), higher=True)
    assert choice.trial == 0 and choice.tie_value == 51.0  # 51 = 51: the earlier trial
    assert "3 tied, broken by the median best (51)" in choice.why
    assert choice.edge == ["lr"]  # 1e-4 is the lower end of the grid


def test_lower_is_better_metrics_break_ties_the_other_way() -> None:
    times = np.full((3, 2), INF)
    ties = np.array([[9.0, 9.0], [3.0, 3.0], [5.0, 5.0]])  # e.g. median rank: lower is better
    assert choose(TRIALS, times, ties, tuning(), higher=False).trial == 1


def test_the_edge_flag_names_each_setting_at_an_end_of_its_grid() -> None:
    space = {"lr": [1.0e-4, 1.0e-3, 1.0e-2], "backbone_lr": [1.0e-5, 1.0e-4, 1.0e-3]}
    config = TuningConfig(space=space, seeds=(7,))
    trials = config.trials({"lr": 1.0e-3, "backbone_lr": 1.0e-4})
    times = np.array([[10.0 if t == {"lr": 1.0e-2, "backbone_lr": 1.0e-4} else 20.0] for t in trials])
    choice = choose(trials, times, np.zeros_like(times), config, higher=True)
    assert choice.settings == {"lr": 1.0e-2, "backbone_lr": 1.0e-4} and choice.edge == ["lr"]


def test_a_one_point_grid_is_never_an_edge() -> None:
    config = TuningConfig(space={"lr": [1.0e-3]}, seeds=(7,))
    assert choose([{"lr": 1.0e-3}], np.array([[5.0]]), np.array([[1.0]]), config, higher=True).edge == []


# --- the trials ---------------------------------------------------------------------------------------------------
def test_grid_search_tries_every_combination_with_tied_settings_following() -> None:
    config = TuningConfig(space={"lr": [1, 2], "weight_decay": [0.1, 0.2]}, tied={"backbone_lr": "lr"}, seeds=(7,))
    trials = config.trials({"lr": 1, "weight_decay": 0.1})
    assert trials == [
        {"lr": 1, "weight_decay": 0.1, "backbone_lr": 1},
        {"lr": 1, "weight_decay": 0.2, "backbone_lr": 1},
        {"lr": 2, "weight_decay": 0.1, "backbone_lr": 2},
        {"lr": 2, "weight_decay": 0.2, "backbone_lr": 2},
    ]


def test_axes_search_moves_one_setting_at_a_time_through_the_sweeps_own_values() -> None:
    config = TuningConfig(space={"lr": [1, 2, 3], "backbone_lr": [10, 20, 30]}, search="axes", seeds=(7,))
    trials = config.trials({"lr": 2, "backbone_lr": 20})
    assert trials == [
        {"backbone_lr": 10, "lr": 2},
        {"backbone_lr": 20, "lr": 2},  # the centre, once
        {"backbone_lr": 30, "lr": 2},
        {"backbone_lr": 20, "lr": 1},
        {"backbone_lr": 20, "lr": 3},
    ]


# --- bad tuning sections: one line, exit 2, nothing written -------------------------------------------------------
GOOD = {"space": {"lr": [1.0e-4, 1.0e-3]}, "tied": {"backbone_lr": "lr"}, "seeds": [100]}


@pytest.mark.parametrize(
    ("tuning_section", "targets", "fragment"),
    [
        ({**GOOD, "space": {"lr": [1.0e-4, -1.0e-3]}}, None, "tuning: space.lr: every value must be a positive"),
        ({**GOOD, "space": {"lr": [1.0e-4, 0]}}, None, "tuning: space.lr: every value must be a positive"),
        ({**GOOD, "space": {"lr": [1.0e-4, "fast"]}}, None, "tuning: space.lr: every value must be a positive"),
        ({**GOOD, "space": {"lr": 1.0e-4}}, None, "tuning: space.lr: expected a non-empty list"),
        ({**GOOD, "space": {"momentum": [0.9]}}, None, "tuning: space.momentum: not a tunable trainer setting"),
        ({**GOOD, "seeds": [0]}, None, "tuning.seeds [0] are also scored or reference seeds"),
        ({**GOOD, "rule": {"target": "85%"}}, None, "tuning.rule.target '85%' is not a target of the sweep"),
        ({**GOOD, "rule": {"tie": "luck"}}, None, "tuning.rule.tie: 'luck' is not one of"),
        ({**GOOD, "rule": {"axis": "hours"}}, None, "tuning.rule.axis: 'hours' is not one of"),
        ({**GOOD, "tied": {"backbone_lr": "warmup"}}, None, "tied.backbone_lr: follows 'warmup'"),
        (GOOD, {"source": "reference", "seeds": [5]}, "targets.source: with a tuning section"),
        ({**GOOD, "search": "axes", "space": {"lr": [3.0e-4, 3.0e-3]}}, None, "the axes search needs the sweep's own"),
    ],
)
def test_bad_tuning_sections_are_refused_before_anything_is_written(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture, tuning_section: dict, targets: dict | None,
    fragment: str,
) -> None:  # fmt: skip
    path = tiny_sweep(tmp_path, cache, tuning=tuning_section, targets=targets or {"source": "tuning"})
    runs = tmp_path / "runs"
    assert sweep_cli(path, runs) == 2
    one_line_error(capsys, str(path), fragment)
    assert folder_state(runs) == {}


def test_an_unknown_world_is_refused_naming_the_key(tmp_path: Path, cache: Path, capsys) -> None:
    path = tiny_sweep(tmp_path, cache, worlds=["default", "distractor"])
    assert sweep_cli(path, tmp_path / "runs") == 2
    one_line_error(capsys, "world", "'distractor'", "distractors")
    assert folder_state(tmp_path / "runs") == {}


# --- a tuned sweep end to end -------------------------------------------------------------------------------------
def tuned_sweep(folder: Path, cache: Path, **tuning_changes: object) -> Path:
    section = {**GOOD, "seeds": [100, 101], **tuning_changes}
    return tiny_sweep(
        folder, cache, methods=["meanp", "xpool"], seeds=[0, 1], tuning=section,
        targets={"source": "tuning", "fractions": [0.5, 0.9]},
    )  # fmt: skip


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, bool]]:
    """Every run the trainer starts: (run, targets.json existed, selection.json existed) at its start."""
    seen, original = [], trainer.train

    def train(cfg, run_dir, wandb_root, progress=True):  # noqa: ANN001, ANN202
        sweep_dir = Path(run_dir).parent
        seen.append((cfg.run, (sweep_dir / "targets.json").is_file(), (sweep_dir / "selection.json").is_file()))
        return original(cfg, run_dir, wandb_root, progress)

    monkeypatch.setattr(trainer, "train", train)
    return seen


def test_a_tuned_sweep_selects_before_scoring_and_a_rerun_respects_the_selection(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture, started: list
) -> None:
    path, runs = tuned_sweep(tmp_path, cache), tmp_path / "runs"
    assert sweep_cli(path, runs) == 0
    sweep_dir = runs / "s"
    tuning_runs = [r for r, _, _ in started if "-t" in r]
    scored = [(r, t, s) for r, t, s in started if "-t" not in r]
    assert len(tuning_runs) == 2 * 2 * 2 and {r for r, _, _ in scored} == {
        "meanp-s0",
        "meanp-s1",
        "xpool-s0",
        "xpool-s1",
    }
    assert started.index(scored[0]) == len(tuning_runs)  # every trial first
    assert all(t and s for _, t, s in scored)  # targets.json and selection.json existed before each scored run
    selection = json.loads((sweep_dir / "selection.json").read_text())
    targets = json.loads((sweep_dir / "targets.json").read_text())
    assert set(targets["reference_runs"]) == set(tuning_runs)  # the tuning runs fixed the targets
    for label in ("meanp", "xpool"):
        chosen = selection["choices"][label]["settings"]
        for seed in (0, 1):
            config = (sweep_dir / f"{label}-s{seed}" / "config.yaml").read_text()
            assert f"lr: {chosen['lr']}" in config and f"backbone_lr: {chosen['backbone_lr']}" in config
    before = folder_state(sweep_dir)
    started.clear()
    assert sweep_cli(path, runs) == 0
    assert started == []  # nothing reruns
    assert {k: v for k, v in folder_state(sweep_dir).items() if k.endswith(".json")} == {
        k: v for k, v in before.items() if k.endswith(".json")
    }
    capsys.readouterr()
    changed = tuned_sweep(tmp_path, cache, rule={"target": "50%"})
    assert sweep_cli(changed, runs) == 2
    one_line_error(capsys, "selection.json", "another tuning configuration", "rule")


def test_a_resumed_tuning_phase_reruns_only_its_unfinished_trials(tmp_path: Path, cache: Path, started: list) -> None:
    path, runs = tuned_sweep(tmp_path, cache), tmp_path / "runs"
    sweep_dir = runs / "s"
    assert sweep_cli(path, runs, "--set", "methods=[meanp]") == 0  # a partial first pass: meanp's trials and seeds
    done = {r for r, _, _ in started}
    first = {run: (sweep_dir / run / "metrics.csv").read_bytes() for run in done if "-t" in run}
    (sweep_dir / "selection.json").unlink()  # the full sweep selects again, over both methods
    (sweep_dir / "targets.json").unlink()
    for run in [r for r in done if "-t" not in r]:
        for file in (sweep_dir / run).iterdir():
            file.unlink()
        (sweep_dir / run).rmdir()
    started.clear()
    assert sweep_cli(path, runs) == 0
    rerun = {r for r, _, _ in started}
    assert not rerun & set(first)  # no finished trial ran again
    assert {r for r in rerun if "-t" in r} == {f"xpool-t{k}-s{s}" for k in (0, 1) for s in (100, 101)}
    assert all((sweep_dir / run / "metrics.csv").read_bytes() == rows for run, rows in first.items())
