"""End-to-end tests of the convergence report on run logs written here in the sweep runner's exact format."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tvr_convbench.bench.analysis import (
    AnalysisWarning,
    SweepLogWarning,
    analyse,
    load_sweep,
    read_report_config,
    run_target_table,
    write_report,
)
from tvr_convbench.bench.targets import TargetSet

INF = math.inf
METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR")
HEADER = "sweep,run,method,seed,step,train_seconds,split,metric,value\n"
DATA_JSON = {
    "name": "didemo_proxy",
    "synthetic": True,
    "title": "synthetic DiDeMo proxy",
    "counts": {"train": 800, "val": 200},
    "calibration": {"zero_shot_meanP_val_t2v_R@1": 21.5, "word_cosine": 0.31},
}
TRAINER = {
    "max_steps": 100,
    "val_every": 20,
    "batch_size": 32,
    "lr": 1e-4,
    "backbone_lr": 1e-7,
    "warmup": 0.1,
    "weight_decay": 0.2,
    "grad_clip": 1.0,
    "optimizer": "adamw",
    "eval_test": True,
}
# val t2v/R@1 at steps 0, 20, ..., 100 (the known answer below is computed by hand from these)
FAST = {0: [5, 30, 40, 45, 48, 50], 1: [5, 25, 42, 46, 49, 49], 2: [5, 20, 38, 44, 47, 48]}
SLOW = {0: [5, 10, 20, 30, 40, 45], 1: [5, 12, 22, 28, 36, 44], 2: [5, 8, 18, 26, 33, 40]}


def metric_rows(key: tuple, step: int, seconds: float, split: str, r1: float) -> list[str]:
    values = {"R@1": r1, "R@5": min(100.0, r1 + 20), "R@10": min(100.0, r1 + 30), "MdR": 50 - r1 / 2, "MnR": 80 - r1}
    prefix = ",".join(map(str, key))
    return [
        f"{prefix},{step},{seconds!r},{split},{d}/{m},{values[m] if d == 't2v' else values[m] - 1!r}"
        for d in ("t2v", "v2t")
        for m in METRICS
    ]


def write_run(
    sweep_dir: Path,
    label: str,
    seed: int,
    curve: list[float],
    sec_per_step: float,
    status: str = "done",
    last_step: int | None = None,
    eval_test: bool = True,
    traceback: str | None = None,
) -> Path:
    """One run folder: config.yaml, status, data.json, metrics.csv (and traceback.txt)."""
    run, max_steps, every = f"{label}-s{seed}", TRAINER["max_steps"], TRAINER["val_every"]
    run_dir = sweep_dir / run
    run_dir.mkdir(parents=True)
    last = max_steps if last_step is None else last_step
    key = (sweep_dir.name, run, label, seed)
    lines = []
    for step in range(1, last + 1):
        loss = float(4.0 * np.exp(-step / 40) + 0.01 * seed)
        for name, value in (("loss", loss), ("loss/t2v", loss / 2), ("loss/v2t", loss / 2)):
            lines.append(f"{','.join(map(str, key))},{step},{step * sec_per_step!r},train,{name},{value!r}")
    for i, step in enumerate(range(0, last + 1, every)):
        seconds = step * sec_per_step
        lines += metric_rows(key, step, seconds, "val", float(curve[i]))
        if eval_test:
            lines += metric_rows(key, step, seconds, "test", 100.0 - step / 10)
        lines.append(f"{','.join(map(str, key))},{step},{seconds!r},time,eval_seconds,0.5")
        lines.append(f"{','.join(map(str, key))},{step},{seconds!r},time,wall_seconds,{seconds + 0.5 * (i + 1)!r}")
    (run_dir / "metrics.csv").write_text(HEADER + "\n".join(lines) + "\n")
    (run_dir / "status").write_text(status + "\n")
    (run_dir / "data.json").write_text(json.dumps(DATA_JSON))
    config = {
        "sweep": sweep_dir.name,
        "run": run,
        "label": label,
        "method": "clip4clip",
        "method_args": {"head": "meanP"},
    }
    config |= {"seed": seed, "wandb": {"mode": "disabled"}}
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(config | {"data": {"name": "didemo_proxy"}, "trainer": TRAINER})
    )
    if traceback is not None:
        (run_dir / "traceback.txt").write_text(traceback)
    return run_dir


def write_sweep(
    sweep_dir: Path, labels: list[str], seeds: list[int], report: dict | None = None, targets: dict | None = None,
    **trainer,
) -> Path:  # fmt: skip
    sweep_dir.mkdir(parents=True, exist_ok=True)
    methods = [{"label": label, "method": "clip4clip", "args": {"head": "meanP"}} for label in labels]
    spec = {"name": sweep_dir.name, "methods": methods, "seeds": seeds, "data": {"name": "didemo_proxy"}}
    spec["trainer"] = TRAINER | trainer
    if report is not None:
        spec["report"] = report
    if targets is not None:
        spec["targets"] = targets
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return sweep_dir


def known_sweep(root: Path, report: dict | None = None, targets: dict | None = None) -> Path:
    """fast: 0.02 s/step, slow: 0.005 s/step; 3 seeds each; post hoc targets: best value 50 -> 25, 40, 45, 47.5."""
    sweep_dir = write_sweep(root / "known", ["fast", "slow"], [0, 1, 2], report, targets)
    for seed in range(3):
        write_run(sweep_dir, "fast", seed, FAST[seed], 0.02)
        write_run(sweep_dir, "slow", seed, SLOW[seed], 0.005)
    return sweep_dir


# ------------------------------------------------------------------------------------------ the known answer

# steps to the targets 25, 40, 45, 47.5 (50/80/90/95% of the best value 50), read off FAST and SLOW by hand
KNOWN_STEPS = {
    "fast-s0": [20, 40, 60, 80],
    "fast-s1": [20, 40, 60, 80],
    "fast-s2": [40, 60, 80, 100],
    "slow-s0": [60, 80, 100, INF],
    "slow-s1": [60, 100, INF, INF],
    "slow-s2": [60, 100, INF, INF],
}
KNOWN_BEST = {"fast-s0": (50, 100), "fast-s1": (49, 80), "fast-s2": (48, 100)}
KNOWN_BEST |= {"slow-s0": (45, 100), "slow-s1": (44, 100), "slow-s2": (40, 100)}
KNOWN_AUC = {"fast-s0": 38.1, "fast-s1": 37.8, "fast-s2": 35.1, "slow-s0": 25.0, "slow-s1": 24.5, "slow-s2": 21.5}
SECONDS_PER_STEP = {"fast": 0.02, "slow": 0.005}


def test_run_target_table_known_answer(tmp_path):
    table = run_target_table(known_sweep(tmp_path))
    assert len(table) == 24 and list(table["target"].unique()) == ["50%", "80%", "90%", "95%"]
    np.testing.assert_allclose(table["target_value"].unique(), [25.0, 40.0, 45.0, 47.5])
    for run, group in table.groupby("run"):
        method = run.split("-")[0]
        np.testing.assert_array_equal(group["steps_to_target"], KNOWN_STEPS[run])
        expected_seconds = np.array(KNOWN_STEPS[run]) * SECONDS_PER_STEP[method]
        np.testing.assert_allclose(group["seconds_to_target"], expected_seconds)
        assert list(group["reached"]) == [s != INF for s in KNOWN_STEPS[run]]
        assert (group["best"].iloc[0], group["best_step"].iloc[0]) == KNOWN_BEST[run]
        assert group["auc"].iloc[0] == pytest.approx(KNOWN_AUC[run])


def read_report(sweep_dir: Path, out_dir: Path) -> tuple[str, Path]:
    path = write_report(sweep_dir, out_dir)
    return path.read_text(), path


def test_report_known_answer(tmp_path):
    text, path = read_report(known_sweep(tmp_path), tmp_path / "report")
    assert path == tmp_path / "report" / "report.md"
    check_files(path.parent)
    assert "synthetic DiDeMo proxy" in text.splitlines()[0]
    assert text.index("## Findings") < text.index("## Summary") < text.index("## Figures") < text.index("## Appendix")
    assert "zero_shot_meanP_val_t2v_R@1 | 21.5000" in text and "word_cosine | 0.3100" in text
    assert "100 optimizer steps" in text and "every 20 optimizer steps" in text and "Scored seeds: [0, 1, 2]" in text
    assert "targets are post hoc" in text  # no targets section: the scored runs set their own finish line
    for target, value in (("50%", "25.00"), ("80%", "40.00"), ("90%", "45.00"), ("95%", "47.50")):
        assert f"| {target} | " in text and f" | {value} |" in text
    summary = table_rows(text, "| rank | method |")
    # fast: best 50/49/48 -> IQM 49 [48, 50]; steps to 90% (45): 60, 60, 80 -> median 60; n = 3 seeds: no
    # order-statistic interval at 95% (needs 6): marked †; interpolated 60, 55, 66.7 -> median 60
    assert summary["1"][:2] == ["fast", "3"] and summary["1"][3] == "49.0 [48.0, 50.0]"
    assert summary["1"][4] == "60 †; interp. 60" and summary["1"][5] == "1.2 †; interp. 1.2"
    assert summary["1"][-2:] == ["20.0", "60%"]  # ms/step; eval share 3 / (3 + 2)
    assert summary["2"][:2] == ["slow", "3"] and summary["2"][4] == "∞ † (2/3 missed)"
    detail = table_rows(text, "| method | target | axis |")
    assert detail["fast"][:6] == ["50%", "steps", "20 †", "20 †", "27 [20, 40]", "0/3"]  # IQM = mean (n=3)
    # by steps fast is always sooner; by seconds: per target 0, 0, 2/3, 1 -> mean 0.42
    assert table_rows(text, "| P(row sooner) |")["fast"][1].startswith("1.00")
    assert table_rows(text, "| P(row sooner) |")["fast"][3].startswith("0.42 [")
    selection = table_rows(text, "| run | selected step |")
    assert selection["fast-s1"][:3] == ["80", "49.0", "92.0"]  # test R@1 at the val-selected step only
    assert "**Soonest to the 90% target (t2v/R@1 45.00) in optimizer steps**: fast 60 † steps" in text


def table_rows(text: str, header: str) -> dict[str, list[str]]:
    """Cells (after the first) of every row of the markdown tables whose header starts with ``header``."""
    rows, inside = {}, False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
        elif inside and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], []).extend(cells[1:])
        elif not line.startswith("|"):
            inside = False
    return rows


def check_files(out: Path) -> None:
    """The figures, CSV tables and numbers written next to the known sweep's report.md."""
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == [
        "performance_profile.png",
        "time_to_target.png",
        "train_loss.png",
        "train_recall.png",
        "val_t2v_R1_vs_seconds.png",
        "val_t2v_R1_vs_step.png",
    ]
    assert all((out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in figures)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    scores = pd.read_csv(out / "profile_scores.csv").set_index(["method", "axis"])["score"]
    # AlgoPerf: medians over seeds per target first. fast 20, 40, 60, 80; slow 60, 100, ∞, ∞ -> slow's ratios 3 and
    # 2.5 on two of the four workloads -> (0.25 (4 - 2.5) + 0.25 (4 - 3)) / 3
    assert scores["fast", "steps"] == pytest.approx(1.0)
    assert scores["slow", "steps"] == pytest.approx((0.25 * 1.5 + 0.25 * 1.0) / 3, abs=0.01)
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    assert summary.loc["slow", "best"] == pytest.approx(43.0) and summary.loc["slow", "auc"] == pytest.approx(
        23.6667, abs=1e-3
    )
    pairwise = pd.read_csv(out / "pairwise.csv")
    p90 = pairwise.query("axis == 'seconds' and target == '90%' and method == 'fast'")["probability"]
    assert p90.item() == pytest.approx(2 / 3)


def test_report_config_from_sweep_yaml(tmp_path):
    sweep_dir = known_sweep(tmp_path, report={"bootstrap_reps": 200}, targets={"fractions": [0.5]})
    table = run_target_table(sweep_dir)
    assert list(table["target_value"].unique()) == [25.0]  # post hoc: 0.5 x the best of any scored run (50)
    spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(spec | {"report": {"confidence": 2}}))
    with pytest.raises(ValueError, match="confidence"):
        write_report(sweep_dir, tmp_path / "out")


def test_targets_from_targets_json(tmp_path):
    """A sweep that fixed its targets in advance: the report reads targets.json and quotes its provenance."""
    sweep_dir = known_sweep(tmp_path, targets={"source": "reference", "seeds": [9], "fractions": [0.5, 0.9]})
    targets = TargetSet("t2v/R@1", "reference", "gain", "median_best", [0.5, 0.9], ["50%", "90%"], [30.0, 42.0],
                        10.0, 46.0, {"fast-s9": 46.0, "slow-s9": 40.0}, [9], ["fast", "slow"])  # fmt: skip
    targets.write(sweep_dir / "targets.json")
    table = run_target_table(sweep_dir)
    assert list(table["target_value"].unique()) == [30.0, 42.0]
    assert list(table.query("run == 'fast-s0'")["steps_to_target"]) == [20, 60]  # FAST[0] = 5, 30, 40, 45, ...
    text, _ = read_report(sweep_dir, tmp_path / "out")
    assert "2 reference runs (seeds [9], never scored); reference 46" in text and "floor 10" in text


def test_lower_is_better_metric_with_absolute_targets(tmp_path):
    sweep_dir = known_sweep(tmp_path, report={"metric": "t2v/MdR"}, targets={"source": "absolute", "values": [40, 30]})
    table = run_target_table(sweep_dir).query("run == 'fast-s0'")  # MdR = 50 - R@1 / 2: 47.5, 35, 30, ...
    assert list(table["target"]) == ["≤40", "≤30"]
    assert list(table["steps_to_target"]) == [20, 40]
    assert (table["best"].iloc[0], table["best_step"].iloc[0]) == (25.0, 100)


def test_targets_met_before_training_are_flagged(tmp_path):
    absolute = {"source": "absolute", "values": [5, 30]}
    sweep_dir = write_sweep(tmp_path / "zero", ["fast", "slow"], [0], targets=absolute)
    write_run(sweep_dir, "fast", 0, FAST[0], 0.02)
    write_run(sweep_dir, "slow", 0, [4] + SLOW[0][1:], 0.005)  # only fast meets R@1 >= 5 at step 0
    with pytest.warns(AnalysisWarning, match="target ≥5 is met at step 0 .* by fast-s0:"):
        analysis = analyse(load_sweep(sweep_dir), read_report_config(sweep_dir))
    ratios = analysis.profile.query("axis == 'steps' and tau == 4.0").set_index("method")["fraction"]
    assert ratios["fast"] == 1.0 and ratios["slow"] == 0.5  # slow: target 5 is a miss against 0, 30 is met


def test_report_is_deterministic(tmp_path):
    sweep_dir = known_sweep(tmp_path, report={"bootstrap_reps": 300})
    a, b = load_sweep(sweep_dir), load_sweep(sweep_dir)
    cfg = read_report_config(sweep_dir)
    first, second = analyse(a, cfg), analyse(b, cfg)
    pd.testing.assert_frame_equal(first.ttt, second.ttt)
    pd.testing.assert_frame_equal(first.summary, second.summary)


# ------------------------------------------------------------------------------------------ broken sweeps

TRACEBACK = 'Traceback (most recent call last):\n  File "bench/train.py", line 3\nRuntimeError: CUDA out of memory\n'


def test_failed_run_is_a_miss_in_every_statistic(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "tvr_convbench.bench.analysis.report.save_figure", lambda *args: None
    )  # figures: tested elsewhere
    sweep_dir = write_sweep(tmp_path / "broken", ["fast", "broken", "dead"], [0, 1], report={"bootstrap_reps": 200})
    for seed in (0, 1):
        write_run(sweep_dir, "fast", seed, FAST[seed], 0.02)
    write_run(sweep_dir, "broken", 0, SLOW[0], 0.005)
    write_run(sweep_dir, "broken", 1, SLOW[1], 0.005, status="failed", last_step=40, traceback=TRACEBACK)
    for seed in (0, 1):  # a method whose every run failed before logging anything
        (sweep_dir / f"dead-s{seed}").mkdir()
        (sweep_dir / f"dead-s{seed}" / "status").write_text("failed")
    with pytest.warns(SweepLogWarning) as record:
        text, path = read_report(sweep_dir, tmp_path / "out")
    failed = sorted(str(w.message).split(":")[0] for w in record if "FAILED" in str(w.message))
    assert failed == ["broken-s1", "dead-s0", "dead-s1"]
    status = table_rows(text, "| run | method | seed | status |")
    assert status["broken-s1"] == ["broken", "1", "failed", "0", "–", "RuntimeError: CUDA out of memory", "yes"]
    per_run = pd.read_csv(path.parent / "run_targets.csv")
    assert (per_run.query("run == 'broken-s1'")["steps_to_target"] == math.inf).all()  # a miss, never dropped
    assert (per_run.query("run == 'dead-s0'")["best"] == -math.inf).all()  # the worst best value
    ttt = pd.read_csv(path.parent / "time_to_target.csv").query("method == 'broken'")
    assert set(ttt["runs"]) == {2}  # the failure counts as a censored run
    first = ttt.query("axis == 'steps' and statistic == 'median' and reading == 'first'")
    assert list(first["censored"]) == [1, 1, 1, 2]  # broken-s0 misses only 95%; broken-s1 misses everything
    scores = pd.read_csv(path.parent / "profile_scores.csv").set_index(["method", "axis"])["score"]
    assert scores["dead", "steps"] == 0.0  # a method whose runs all failed never meets a workload
    summary = table_rows(text, "| rank | method |")
    assert [row[0] for row in summary.values()][-1] == "dead"
    assert "- broken-s1: FAILED (RuntimeError: CUDA out of memory); counted as a miss" in text
    assert "**Failed or diverged runs**, counted as misses: broken-s1 (failed), dead-s0 (failed)" in text


def test_running_missing_and_unplanned_runs_warn(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(
        "tvr_convbench.bench.analysis.report.save_figure", lambda fig, path, dpi: saved.append(path.name)
    )
    sweep_dir = write_sweep(tmp_path / "partial", ["fast"], [0, 1, 2], report={"bootstrap_reps": 200})
    write_run(sweep_dir, "fast", 0, FAST[0], 0.02)
    write_run(sweep_dir, "fast", 1, FAST[1], 0.02, status="running", last_step=40)
    write_run(sweep_dir, "extra", 0, FAST[2], 0.02)  # a folder the sweep did not plan
    with pytest.warns(SweepLogWarning) as record:
        text, _ = read_report(sweep_dir, tmp_path / "out")
    messages = [str(w.message) for w in record]
    assert any(m.startswith("fast-s1: still running (last val evaluation: step 40 of 100)") for m in messages)
    assert any(m.startswith("fast-s2: planned in sweep.yaml but its folder does not exist") for m in messages)
    assert any(m.startswith("extra-s0: run folder not planned") for m in messages)
    warnings_section = text.split("## Appendix: warnings")[1]
    assert all(f"- {m}" in warnings_section for m in messages)
    status = table_rows(text, "| run | method | seed | status |")
    assert status["fast-s1"][2] == "running" and status["fast-s2"][2] == "missing"
    assert "One seed per method: no confidence intervals" in text  # one method, one analysed seed
    assert "Only one method has finished runs" in text
    assert len(saved) == 6  # all figures are built for one method with one seed (rendering: test_analysis_figures)


def test_sweep_without_finished_runs_still_reports(tmp_path):
    sweep_dir = write_sweep(tmp_path / "none", ["fast"], [0])
    write_run(sweep_dir, "fast", 0, FAST[0], 0.02, status="failed", last_step=20, traceback=TRACEBACK)
    with pytest.warns(SweepLogWarning, match="FAILED"):
        text, path = read_report(sweep_dir, tmp_path / "out")
    assert "No finished run to analyse" in text and "| fast-s0 | fast | 0 | failed |" in text
    assert not (path.parent / "figures").exists() and (path.parent / "runs.csv").is_file()


def test_duplicates_keep_the_last_row_and_results_csv_is_a_fallback(tmp_path):
    sweep_dir = write_sweep(tmp_path / "resumed", ["fast"], [0, 1], report={"bootstrap_reps": 200})
    run_dir = write_run(sweep_dir, "fast", 0, FAST[0], 0.02)
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    redo = [r.replace("t2v/R@1,30.0", "t2v/R@1,10.0") for r in rows if ",20,0.4,val,t2v/R@1," in r]
    (run_dir / "metrics.csv").write_text("\n".join(rows + redo) + "\n")  # a resumed run re-logged step 20
    other = write_run(sweep_dir, "fast", 1, FAST[1], 0.02)
    (sweep_dir / "results.csv").write_text((other / "metrics.csv").read_text())
    (other / "metrics.csv").unlink()
    with pytest.warns(SweepLogWarning) as record:
        table = run_target_table(sweep_dir)
    messages = [str(w.message) for w in record]
    assert "fast-s0: 1 duplicate (run, split, metric, step) rows; kept the last of each" in messages
    assert any(m.startswith("fast-s1: no metrics.csv; using its") for m in messages)
    first = table.query("run == 'fast-s0'")["steps_to_target"]
    assert list(first) == [40, 40, 60, 80]  # step 20 now holds 10 (the last row), so 50% is met at step 40
    assert set(table["run"]) == {"fast-s0", "fast-s1"}


def test_full_size_report_is_fast(tmp_path, monkeypatch):
    """7 methods x 3 seeds x 11 evaluations over 1,000 steps, default bootstrap: well under 20 s."""
    monkeypatch.setitem(TRAINER, "max_steps", 1000)
    monkeypatch.setitem(TRAINER, "val_every", 100)
    labels = ["meanP", "seqTransf", "xpool", "xclip", "drl", "glscl", "glccl"]
    sweep_dir = write_sweep(tmp_path / "full", labels, [0, 1, 2])
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        for seed in range(3):
            curve = 50 * (1 - np.exp(-np.arange(11) / (2 + 0.5 * i))) + rng.normal(0, 1, 11)
            write_run(sweep_dir, label, seed, [float(v) for v in curve], 0.01 * (1 + i / 3))
    start = time.perf_counter()
    text, _ = read_report(sweep_dir, tmp_path / "out")
    elapsed = time.perf_counter() - start
    assert elapsed < 20.0, f"report took {elapsed:.1f} s"
    assert all(f"| {label} | 3 |" in text for label in labels)


def test_censored_medians_are_ordered_by_how_many_runs_missed() -> None:
    """Median infinity for all three: the one that missed in fewer runs comes first (then the interpolated reading,
    then the first reading decide before that)."""
    from types import SimpleNamespace

    from tvr_convbench.bench.analysis.findings import order_by_time

    row = lambda point, censored=0: SimpleNamespace(point=point, censored=censored)  # noqa: E731
    index = {}
    for method, first, interp, censored in [
        ("a", math.inf, math.inf, 9), ("b", math.inf, math.inf, 6), ("c", 50.0, 47.0, 2), ("d", 50.0, 45.0, 0),
    ]:  # fmt: skip
        index[(method, "90%", "steps", "first", "median")] = row(first, censored)
        index[(method, "90%", "steps", "interpolated", "median")] = row(interp, censored)
    analysis = SimpleNamespace(ttt_index=index, log=SimpleNamespace(labels=["a", "b", "c", "d", "e"]))
    assert order_by_time(analysis, "90%", "steps") == ["d", "c", "b", "a"]  # e: no run for it
