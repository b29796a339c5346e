"""The evaluation schedule (issue 14): ``trainer.val_schedule`` (``every`` | ``geometric`` | ``steps``) and
``TrainerConfig.eval_steps()``, the one function the trainer, the analysis and the benchmark use.

Before: ``val_every`` alone (``val_schedule`` was an unknown key).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import folder_state, metric_rows, one_line_error, sweep_cli, tiny_sweep
from tvr_convbench.bench.config import TrainerConfig, ValSchedule

SETTINGS = settings(max_examples=300, deadline=None, database=None)


def check_invariants(steps: tuple[int, ...], max_steps: int) -> None:
    assert steps[0] == 0 and steps[-1] == max_steps  # step 0 and the last step, always
    assert all(a < b for a, b in zip(steps, steps[1:]))  # strictly increasing: monotone, no duplicates
    assert all(isinstance(s, int) for s in steps)


@SETTINGS
@given(max_steps=st.integers(1, 3000), val_every=st.integers(1, 400))
def test_every(max_steps: int, val_every: int) -> None:
    steps = TrainerConfig(max_steps=max_steps, val_every=val_every).eval_steps()
    check_invariants(steps, max_steps)
    assert set(steps) == {s for s in range(max_steps + 1) if s % val_every == 0} | {max_steps}


@SETTINGS
@given(max_steps=st.integers(1, 3000), first=st.integers(1, 500), factor=st.floats(1.001, 4.0))
def test_geometric(max_steps: int, first: int, factor: float) -> None:
    schedule = ValSchedule(kind="geometric", first=first, factor=factor)
    steps = TrainerConfig(max_steps=max_steps, val_schedule=schedule).eval_steps()
    check_invariants(steps, max_steps)
    inner = [s for s in steps if 0 < s < max_steps]
    if first < max_steps:
        assert steps[1] == first
    for a, b in zip(inner, inner[1:]):  # each step the previous times the factor, rounded (at least one more)
        assert b == a + 1 or abs(b - a * factor) <= 0.5


def test_the_geometric_layout() -> None:
    schedule = ValSchedule(kind="geometric", first=10, factor=1.5)
    assert TrainerConfig(max_steps=100, val_schedule=schedule).eval_steps() == (0, 10, 15, 22, 33, 50, 75, 100)
    dense = ValSchedule(kind="geometric", first=1, factor=1.2)  # below 1 / (factor - 1) the steps go one by one
    assert TrainerConfig(max_steps=12, val_schedule=dense).eval_steps() == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12)
    late = ValSchedule(kind="geometric", first=500, factor=2.0)  # a first step beyond the budget: 0 and the end
    assert TrainerConfig(max_steps=100, val_schedule=late).eval_steps() == (0, 100)


@SETTINGS
@given(max_steps=st.integers(1, 500), listed=st.sets(st.integers(1, 1000), min_size=1, max_size=30))
def test_explicit_steps(max_steps: int, listed: set[int]) -> None:
    schedule = ValSchedule(kind="steps", steps=tuple(sorted(listed, key=lambda s: -s)))  # any order
    steps = TrainerConfig(max_steps=max_steps, val_schedule=schedule).eval_steps()
    check_invariants(steps, max_steps)
    assert set(steps) == {0, max_steps} | {s for s in listed if s <= max_steps}  # beyond max_steps: dropped


def test_explicit_steps_beyond_the_budget_are_dropped() -> None:
    schedule = ValSchedule(kind="steps", steps=(50, 5, 500))
    assert TrainerConfig(max_steps=100, val_schedule=schedule).eval_steps() == (0, 5, 50, 100)


BAD = [
    ("{kind: geometric, factor: 1.0}", "val_schedule.factor must be above 1, got 1.0"),
    ("{kind: geometric, factor: 0.5}", "val_schedule.factor must be above 1"),
    ("{kind: geometric, factor: .nan}", "trainer.val_schedule.factor: expected a finite number"),
    ("{kind: geometric, first: 0}", "val_schedule.first must be positive"),
    ("{kind: steps, steps: []}", "val_schedule.steps is empty"),
    ("{kind: steps}", "val_schedule.steps is empty"),
    ("{kind: steps, steps: [5, 9, 5]}", "val_schedule.steps must be distinct positive steps, got [5, 9, 5]"),
    ("{kind: steps, steps: [-3, 4]}", "val_schedule.steps must be distinct positive steps, got [-3, 4]"),
    ("{kind: steps, steps: [2.5]}", "trainer.val_schedule.steps[0]: expected an integer"),
    ("{steps: [3, 6]}", "val_schedule.steps is set but kind is 'every'"),  # would be silently ignored
    ("{kind: dense}", "trainer.val_schedule.kind: 'dense' is not one of"),
    ("{kind: every, every: 5}", "trainer.val_schedule: unknown key 'every'"),
    ("geometric", "trainer.val_schedule: expected a mapping"),
]


@pytest.mark.parametrize("schedule,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_schedules_are_one_line_config_errors(tmp_path: Path, capsys, schedule: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"methods: [meanp]\ntrainer: {{max_steps: 100, val_schedule: {schedule}}}\n")
    assert sweep_cli(path, tmp_path / "runs") == 2
    one_line_error(capsys, str(path), fragment)
    assert not (tmp_path / "runs").exists()


def test_the_trainer_evaluates_exactly_at_the_schedule(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    schedules = {
        "listed": ({"kind": "steps", "steps": [4, 1, 50]}, (0, 1, 4, 6)),
        "geometric": ({"kind": "geometric", "first": 1, "factor": 2.0}, (0, 1, 2, 4, 6)),
    }
    for name, (schedule, expected) in schedules.items():
        path = tiny_sweep(tmp_path, cache, name=name, trainer={"val_schedule": schedule})
        assert sweep_cli(path, tmp_path / "runs") == 0
        rows = metric_rows(tmp_path / "runs" / name / "meanp-s0" / "metrics.csv", clocks=True)
        assert tuple(sorted({step for step, split, _, _ in rows if split == "val"})) == expected
        assert tuple(sorted({step for step, split, _, _ in rows if split == "time"})) == expected
        assert {step for step, split, _, _ in rows if split == "train"} == set(range(1, 7))  # training: every step
    assert folder_state(tmp_path / "runs")  # both ran
