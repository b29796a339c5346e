"""The wandb mirror, offline only (nothing leaves the machine: ``WANDB_BASE_URL`` points at a closed local port).

- a whole tiny sweep leaves exactly one offline folder per harness run (+ one for the sweep's results run), also
  after the end-of-sweep summaries and after writing them again; each record says group ``<sweep>/<label>``,
  job type ``<sweep>``, the ``method:`` tag, every history row, and the summaries;
- the ``<sweep>-results`` run: the report's tables (in the summary, so nothing plots ``ncols``/``nrows``), the
  figures as images, report.md + CSVs as a versioned artifact;
- online without a network: one short probe or one failed init, then offline for the rest of the sweep with one
  warning, one ``wandb.init`` per run, within a time bound.

How records are read back: wandb 0.31 has no public reader of offline runs (``wandb.Api`` needs a server; the
old ``wandb.sdk.internal.datastore.DataStore`` is gone from 0.31), so the tests use wandb's own CLI reader,
``wandb leet inspect --json <folder>``: one JSON object per record of the ``.wandb`` transaction log (its ``run``
record holds group, job type, tags and config; ``summary``, ``history`` and ``artifact`` records the rest).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import tiny_sweep
from tvr_convbench.bench import mirror_report, wandb_mirror
from tvr_convbench.bench.analysis.targets import run_table, val_curves
from tvr_convbench.bench.cli import main
from tvr_convbench.bench.config import RunConfig, load_sweep
from tvr_convbench.bench.wandb_mirror import WandbMirror, record_fields, records, run_group, run_tags, write_run_summary

SWEEP = """\
methods: {methods}
seeds: [0]
data: {{name: proxy, train_videos: 32, val_videos: 12, test_videos: 8, width: 16, max_words: 10, max_frames: 4,
        frames_per_segment: 1, vocab_size: 200, cache_dir: {cache}}}
trainer: {{max_steps: 4, val_every: 2, batch_size: 8, num_threads: 1, lr: 1.0e-3, backbone_lr: 1.0e-3}}
report: {{bootstrap_reps: 100, band_reps: 100}}
wandb: {{mode: {mode}}}
"""
TWO = "[meanp, {method: meanp, label: meanp-nowd, trainer: {weight_decay: 0.0}}]"
RUNS = ["meanp-s0", "meanp-nowd-s0"]
WANDB = str(Path(sys.executable).parent / "wandb")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """wandb offline, its files under tmp_path, no account, no reachable server, a fresh network decision."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    for name in ("DATA", "CACHE", "CONFIG", "ARTIFACT"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / f"wandb-{name.lower()}"))
    for key in ("WANDB_API_KEY", "WANDB_SWEEP_ID", "WANDB_RUN_ID", wandb_mirror.FALLBACK_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(wandb_mirror, "_decisions", {})
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()


def write_sweep(folder: Path, cache: Path, mode: str = "offline", methods: str = TWO, name: str = "tiny") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SWEEP.format(cache=cache, mode=mode, methods=methods))
    return path


def run_sweep(path: Path, runs: Path, *extra: str) -> int:
    return main(["sweep", str(path), "--runs-dir", str(runs), "--no-progress", "--no-report", *extra])


def offline_folders(sweep_dir: Path) -> list[Path]:
    return sorted((sweep_dir / "wandb").glob("offline-run-*"))


def run_id(sweep_dir: Path, run: str) -> str:
    return (sweep_dir / run / "wandb_id").read_text().strip()


def inspect(folder: Path) -> dict:
    """One offline record read back with wandb's own reader (``wandb leet inspect --json``): the run record,
    the merged summary, the history rows and the artifacts."""
    out = subprocess.run([WANDB, "leet", "inspect", "--json", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    summary: dict = {}
    for record in lines:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    return {
        "run": next(r["run"] for r in lines if r["type"] == "run"),
        "summary": summary,
        "history": [r["history"]["item"] for r in lines if r["type"] == "history"],
        "artifacts": [r["artifact"] for r in lines if r["type"] == "artifact"],
        "exit": next((r["exit"] for r in lines if r["type"] == "exit"), None),
    }


def values_against(run_dir: Path, targets: dict[str, float]) -> dict:
    """A run's summary values against fixed targets, computed by the caller from its metrics.csv with the
    analysis's per-run table (what the sweep end passes to the summary writer)."""
    log = pd.read_csv(run_dir / "metrics.csv")
    table = pd.DataFrame({"target": list(targets), "value": list(targets.values())})
    rows = run_table(val_curves(log, "t2v/R@1"), table, 4, True)
    return mirror_report.run_summary_values(rows)


def fake_report(folder: Path) -> Path:
    """A report folder as ``write_report`` leaves it (report.md, the CSV tables, two PNG figures)."""
    from matplotlib.figure import Figure

    (folder / "figures").mkdir(parents=True)
    (folder / "report.md").write_text("# Convergence report: tiny\n")
    pd.DataFrame({"method": ["meanp"], "runs": [1], "best": [40.0], "best_lower": [38.0], "best_upper": [42.0]}).to_csv(
        folder / "summary.csv", index=False
    )
    ttt = {"method": ["meanp"] * 2, "target": ["50%", "90%"], "statistic": ["iqm"] * 2}
    ttt |= {"point": [2.0, math.inf], "lower": [2.0, 4.0], "upper": [2.0, math.inf], "censored": [0, 1]}
    pd.DataFrame(ttt).to_csv(folder / "time_to_target.csv", index=False)
    pd.DataFrame({"target": ["50%", "90%"], "fraction": [0.5, 0.9], "value": [20.0, 36.0]}).to_csv(
        folder / "targets.csv", index=False
    )
    for name in ("val_t2v_R1_vs_step", "train_loss"):
        fig = Figure(figsize=(2, 1.5))
        fig.add_subplot().plot([0, 1], [0, 1])
        fig.savefig(folder / "figures" / f"{name}.png", dpi=50)
    return folder


# --- names -------------------------------------------------------------------------------------------------------
def test_group_is_scoped_to_the_sweep_and_the_method_is_a_tag(tmp_path: Path, cache: Path) -> None:
    runs = {cfg.run: cfg for cfg in load_sweep(str(write_sweep(tmp_path, cache))).runs()}
    nowd = runs["meanp-nowd-s0"]
    assert run_group(nowd) == "tiny/meanp-nowd"
    assert run_tags(nowd, ["dataset:proxy"]) == [
        "dataset:proxy", "regime:frozen", "seed:0", "method:meanp", "sweep:tiny",
    ]  # fmt: skip
    assert run_tags(nowd)[:1] == ["dataset:proxy"]


def test_tuning_and_reference_runs_band_apart_from_the_scored_seeds(tmp_path: Path, cache: Path) -> None:
    """A tuning trial's seeds band together, never with the scored seeds (another setting); job_type = phase."""
    path = tiny_sweep(tmp_path, cache, tuning={"space": {"lr": [1.0e-4, 1.0e-3]}, "seeds": [100]},
                      targets={"source": "tuning"})  # fmt: skip
    sweep = load_sweep(str(path))
    trial = next(cfg for cfg in sweep.tuning_runs() if cfg.trial == 1)
    assert run_group(trial) == "s/meanp/t1" and "phase:tuning" in run_tags(trial)
    assert record_fields(trial)["job_type"] == "tuning"
    reference = load_sweep(str(tiny_sweep(tmp_path, cache, targets={"source": "reference", "seeds": [7]})))
    ref = reference.reference_runs()[0]
    assert run_group(ref) == "s/meanp/reference" and record_fields(ref)["job_type"] == "reference"


# --- one folder per run --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_offline_folder_per_run_with_its_summaries_and_the_results_run(tmp_path: Path, cache: Path) -> None:
    runs = tmp_path / "runs"
    sweep_dir = runs / "tiny"
    assert run_sweep(write_sweep(tmp_path, cache), runs) == 0
    ids = {run: run_id(sweep_dir, run) for run in RUNS}
    trained = {run: [p.name for p in records(sweep_dir, ids[run])] for run in RUNS}
    assert all(len(folders) == 1 for folders in trained.values()), trained

    # end-of-sweep summaries, computed by the caller against fixed targets, into each run's own record
    values = {run: values_against(sweep_dir / run, {"50%": 5.0, "99%": 99.0}) for run in RUNS}
    assert mirror_report.write_run_summaries(sweep_dir, values) == dict.fromkeys(RUNS, "rebuilt")
    assert mirror_report.mirror_results(sweep_dir, fake_report(tmp_path / "reports" / "tiny")) == "rebuilt"
    # written again (a second `report`): nothing new for unchanged values; the results run replaces its folder
    assert mirror_report.write_run_summaries(sweep_dir, values) == dict.fromkeys(RUNS, "unchanged")
    assert mirror_report.mirror_results(sweep_dir, tmp_path / "reports" / "tiny") == "rebuilt"

    folders = offline_folders(sweep_dir)
    results = mirror_report.results_records(sweep_dir)
    assert len(folders) == len(RUNS) + 1 and len(results) == 1, [p.name for p in folders]
    for run in RUNS:
        (folder,) = records(sweep_dir, ids[run])
        assert folder.name not in trained[run]  # rebuilt from the local run log, the training folder replaced
        record = inspect(folder)
        label = run.removesuffix("-s0")
        assert record["run"]["run_group"] == f"tiny/{label}" and record["run"]["job_type"] == "scored"
        assert {"method:meanp", "seed:0", "dataset:proxy", "sweep:tiny"} <= set(record["run"]["tags"])
        assert record["run"]["config"]["update"]["label"] == label
        assert record["exit"]["exit_code"] == 0
        history = record["history"]
        assert [row["step"] for row in history if "val/t2v/R@1" in row] == [0, 2, 4]
        assert [row["step"] for row in history if "train/loss" in row] == [1, 2, 3, 4]
        summary = record["summary"]
        for key, value in values[run].items():
            assert summary.get(key) == (pytest.approx(value) if isinstance(value, float) else value), key
        assert summary["target/99%/steps"] is None and summary["target/99%/reached"] is False
        assert summary["best/val/t2v/R@1"] == pytest.approx(values[run]["best/val/t2v/R@1"])


@pytest.mark.slow
def test_a_whole_sweep_through_the_cli_leaves_one_folder_per_run(tmp_path: Path, cache: Path) -> None:
    """``tvr-convbench sweep`` with its report: the analysis's summaries land in each run's one folder; the results
    run (``mirror_targets`` with the report folder, as ``cli._report`` calls it) adds one folder."""
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    sweep_dir, report_dir = runs / "tiny", reports / "tiny"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the analysis's notes on a 4-step sweep
        args = ["sweep", str(write_sweep(tmp_path, cache)), "--runs-dir", str(runs), "--reports-dir", str(reports)]
        assert main([*args, "--no-progress"]) == 0
        expected = mirror_report.sweep_summaries(sweep_dir)
        again = mirror_report.mirror_targets(sweep_dir, report_dir)
    assert again == dict.fromkeys(RUNS, "unchanged")  # the sweep's own report wrote them already
    folders = offline_folders(sweep_dir)
    assert len(folders) == len(RUNS) + 1, [p.name for p in folders]
    for run in RUNS:
        (folder,) = records(sweep_dir, run_id(sweep_dir, run))
        summary = inspect(folder)["summary"]
        assert set(expected[run]) >= {"target/50%/steps", "best/val/t2v/R@1", "selected/step"}
        for key, value in expected[run].items():
            assert summary.get(key) == (pytest.approx(value) if isinstance(value, float) else value), (run, key)
    (results,) = mirror_report.results_records(sweep_dir)
    assert inspect(results)["summary"]["results/summary"]["_type"] == "table-file"


@pytest.mark.slow
def test_with_targets_fixed_in_advance_each_run_is_initialised_once(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``targets.json`` written before the scored runs; the trainer hook proposed for ``train_process`` (the
    run's values from ``run_summary_from_targets`` into its own mirror before ``finish``) is emulated here. The
    sweep end then computes the same values with the analysis and opens no record: one ``wandb.init`` per run."""
    sweep_dir = tmp_path / "runs" / "tiny"
    finish = WandbMirror.finish

    def finish_with_targets(self, exit_code: int = 0) -> None:  # noqa: ANN001
        if self.active and exit_code == 0:
            self.summary(mirror_report.run_summary_from_targets(self.run_dir, sweep_dir))
        finish(self, exit_code)

    monkeypatch.setattr(WandbMirror, "finish", finish_with_targets)
    path = write_sweep(tmp_path, cache)
    path.write_text(path.read_text() + "targets: {source: absolute, values: [5.0, 99.0]}\n")
    calls = spy_init(monkeypatch)
    reports = tmp_path / "reports"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(reports)]) == 0
        assert (sweep_dir / "targets.json").is_file()
        assert mirror_report.mirror_targets(sweep_dir) == dict.fromkeys(RUNS, "unchanged")
    results_file = sweep_dir / mirror_report.RESULTS_ID_FILE
    results = {results_file.read_text().strip()} if results_file.exists() else set()
    run_inits = [i for i, _, _ in calls if i not in results]  # the <sweep>-results record is the sweep's, not a run's
    assert sorted(run_inits) == sorted(run_id(sweep_dir, run) for run in RUNS)  # one init per run
    for run in RUNS:
        (folder,) = records(sweep_dir, run_id(sweep_dir, run))
        summary = inspect(folder)["summary"]
        assert summary["target/≥5/value"] == 5.0 and summary["target/≥99/reached"] is False


@pytest.mark.slow
def test_the_results_run_holds_tables_figures_and_the_report_artifact(tmp_path: Path, cache: Path) -> None:
    runs = tmp_path / "runs"
    assert run_sweep(write_sweep(tmp_path, cache, methods="[meanp]"), runs) == 0
    report = fake_report(tmp_path / "reports" / "tiny")
    assert mirror_report.mirror_results(runs / "tiny", report) == "rebuilt"
    (folder,) = mirror_report.results_records(runs / "tiny")
    record = inspect(folder)
    assert record["run"]["display_name"] == "tiny-results"
    assert record["run"]["run_group"] == "tiny/results" and record["run"]["job_type"] == "results"
    summary = record["summary"]
    for key in ("results/summary", "results/time_to_target", "results/targets"):
        assert summary[key]["_type"] == "table-file", key
    assert summary["results/time_to_target"]["nrows"] == 2
    images = {k.split(".")[0] for row in record["history"] for k in row if k.startswith("figures/")}
    assert images == {"figures/val_t2v_R1_vs_step", "figures/train_loss"}
    assert not any(k.endswith((".ncols", ".nrows")) for row in record["history"] for k in row)  # no table plots
    (artifact,) = [a for a in record["artifacts"] if a["name"] == "tiny-report"]
    assert artifact["type"] == "report"
    paths = {entry["path"] for entry in artifact["manifest"]["contents"]}
    expected = {"report.md", "summary.csv", "time_to_target.csv", "targets.csv"}
    assert paths == expected | {"figures/val_t2v_R1_vs_step.png", "figures/train_loss.png"}


def test_a_failing_results_mirror_warns_and_leaves_no_half_written_folder(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wandb.sdk.wandb_run import Run

    sweep = load_sweep(str(write_sweep(tmp_path, cache, methods="[meanp]")))
    sweep_dir = tmp_path / "runs" / "tiny"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text(json.dumps(sweep.to_dict()))
    report = fake_report(tmp_path / "reports" / "tiny")

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("injected artifact failure")

    monkeypatch.setattr(Run, "log_artifact", broken)
    with pytest.warns(UserWarning, match=r"wandb results run not written \(RuntimeError: injected artifact failure"):
        assert mirror_report.mirror_results(sweep_dir, report) == "failed"
    assert offline_folders(sweep_dir) == []


def test_summaries_written_at_the_end_of_a_run_leave_its_one_folder_alone(tmp_path: Path, cache: Path) -> None:
    """The end-of-run path (targets fixed before the run): the trainer's mirror writes the summaries before
    ``finish``; the sweep end then finds them written, opens nothing, and drops the folder an earlier (killed)
    process of the same run left (the last process replayed the whole history)."""
    cfg = load_sweep(str(write_sweep(tmp_path, cache, methods="[meanp]"))).runs()[0]
    sweep_dir, values = tmp_path / "runs" / "tiny", {"target/50%/steps": 2, "target/50%/seconds": 0.5}
    run_dir = sweep_dir / cfg.run
    run_dir.mkdir(parents=True)
    for last in (False, True):  # an early process (stopped), then the resumed one that finished
        mirror = WandbMirror()
        mirror.start(run_dir, sweep_dir, cfg, [], "offline")
        mirror.replay([(0, 0.0, "val", "t2v/R@1", 10.0)])
        if last:
            mirror.summary({"best/val/t2v/R@1": 10.0, "best/step": 0, **values})
        mirror.finish()
        time.sleep(1.05 if not last else 0)  # a folder name has one-second resolution
    first, final = offline_folders(sweep_dir)
    assert write_run_summary(run_dir, sweep_dir, cfg, {"best/val/t2v/R@1": 10.0, "best/step": 0, **values}) == (
        "unchanged"
    )
    assert offline_folders(sweep_dir) == [final]
    assert inspect(final)["summary"]["target/50%/steps"] == 2


def test_a_synced_record_gets_its_summaries_by_resume_not_rebuilt(tmp_path: Path, cache: Path) -> None:
    cfg = load_sweep(str(write_sweep(tmp_path, cache, methods="[meanp]"))).runs()[0]
    sweep_dir = tmp_path / "runs" / "tiny"
    run_dir = sweep_dir / cfg.run
    run_dir.mkdir(parents=True)
    mirror = WandbMirror()
    mirror.start(run_dir, sweep_dir, cfg, [], "offline")
    mirror.log(0, 0.0, {"val/t2v/R@1": 10.0})
    mirror.finish()
    (synced,) = offline_folders(sweep_dir)
    run = run_id(sweep_dir, cfg.run)
    (synced / f"run-{run}.wandb.synced").write_text("")  # what `wandb sync` leaves
    assert write_run_summary(run_dir, sweep_dir, cfg, {"target/50%/steps": 3}) == "resumed"
    folders = offline_folders(sweep_dir)
    assert len(folders) == 2 and synced in folders  # the synced one kept; one unsynced folder to sync
    (new,) = [f for f in folders if f != synced]
    record = inspect(new)
    assert record["history"] == [] and record["summary"]["target/50%/steps"] == 3
    assert record["run"]["run_group"] == "tiny/meanp" and "method:meanp" in record["run"]["tags"]


def test_run_summary_from_targets_matches_the_callers_values(tmp_path: Path, cache: Path) -> None:
    cfg = load_sweep(str(write_sweep(tmp_path, cache, methods="[meanp]"))).runs()[0]
    run_dir = tmp_path / "runs" / "tiny" / cfg.run
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict()))
    rows = "sweep,run,method,seed,step,train_seconds,split,metric,value\n" + "".join(
        f"tiny,meanp-s0,meanp,0,{s},{s / 10:.6f},val,t2v/R@1,{v}\n" for s, v in ((0, 8.0), (2, 30.0), (4, 25.0))
    )
    (run_dir / "metrics.csv").write_text(rows)
    assert mirror_report.run_summary_from_targets(run_dir, run_dir.parent) == {}  # no targets.json: post hoc
    spec = {"metric": "t2v/R@1", "labels": ["50%", "99%"], "values": [20.0, 99.0]}
    (run_dir.parent / "targets.json").write_text(json.dumps(spec))
    values = mirror_report.run_summary_from_targets(run_dir, run_dir.parent)
    assert values == values_against(run_dir, {"50%": 20.0, "99%": 99.0})
    assert values["target/50%/steps"] == 2 and values["target/50%/seconds"] == pytest.approx(0.2)
    assert 0 < values["target/50%/steps_interpolated"] < 2  # the crossing between the evaluations at 0 and 2
    assert values["target/99%/steps"] is None and values["selected/step"] == 2
    assert values["best/val/t2v/R@1"] == 30.0


# --- online without a network ----------------------------------------------------------------------------------
def spy_init(monkeypatch: pytest.MonkeyPatch, fail_online: bool = False) -> list[tuple[str, str, float]]:
    """Record every ``wandb.init`` (id, mode, seconds); with ``fail_online`` an online one fails at once as an
    unreachable server's would after ``init_timeout``."""
    import wandb

    original, calls = wandb.init, []

    def init(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            if fail_online and kwargs.get("mode") == "online":
                raise wandb.errors.CommError("Run initialization has timed out after 30.0 sec.")
            return original(*args, **kwargs)
        finally:
            calls.append((kwargs.get("id"), kwargs.get("mode"), time.perf_counter() - t0))

    monkeypatch.setattr(wandb, "init", init)
    return calls


def start_runs(tmp_path: Path, cache: Path, mode: str, n: int = 3) -> tuple[Path, list[RunConfig]]:
    """Open and close the mirror of ``n`` runs of one sweep, as the trainer does (one ``start`` per run)."""
    sweep = load_sweep(str(write_sweep(tmp_path, cache, mode, "[meanp]")), [f"seeds={list(range(n))}"])
    sweep_dir = tmp_path / "runs" / sweep.name
    for cfg in sweep.runs():
        mirror = WandbMirror()
        mirror.start(sweep_dir / cfg.run, sweep_dir, cfg, [], cfg.wandb.mode)
        mirror.log(0, 0.0, {"val/t2v/R@1": 1.0})
        mirror.finish()
    return sweep_dir, sweep.runs()


def test_online_without_a_server_probes_once_then_mirrors_offline(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a fake key: online by configuration
    probes = []
    real_probe = wandb_mirror.probe_server
    monkeypatch.setattr(wandb_mirror, "probe_server", lambda: probes.append(1) or real_probe(timeout=2))
    calls = spy_init(monkeypatch)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sweep_dir, cfgs = start_runs(tmp_path, cache, "online")
    elapsed = time.perf_counter() - t0
    messages = [str(w.message) for w in caught if "wandb" in str(w.message)]
    assert len(messages) == 1 and "the rest of this sweep mirrors offline" in messages[0], messages
    assert "http://127.0.0.1:9" in messages[0]
    assert probes == [1]  # one probe for the sweep
    assert [(i, m) for i, m, _ in calls] == [(run_id(sweep_dir, c.run), "offline") for c in cfgs]  # one init a run
    assert len(offline_folders(sweep_dir)) == len(cfgs)
    assert elapsed < 30, elapsed  # an online init without a server waits WANDB_INIT_TIMEOUT (30 s) per call


def test_a_failed_online_init_sends_the_rest_of_the_sweep_offline(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(wandb_mirror, "probe_server", lambda: None)  # the probe passes; the init does not
    calls = spy_init(monkeypatch, fail_online=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sweep_dir, cfgs = start_runs(tmp_path, cache, "auto")
    messages = [str(w.message) for w in caught if "wandb" in str(w.message)]
    assert len(messages) == 1, messages
    assert "wandb init failed (CommError" in messages[0] and "continuing with the local run log only" in messages[0]
    assert [m for _, m, _ in calls] == ["online", "offline", "offline"]  # one init per run, one online attempt
    assert [i for i, _, _ in calls] == [run_id(sweep_dir, c.run) for c in cfgs]
    # the first run has no record yet; the end-of-sweep summary writer builds it (offline) from its run log
    first = sweep_dir / cfgs[0].run
    (first / "metrics.csv").write_text(
        "sweep,run,method,seed,step,train_seconds,split,metric,value\ntiny,meanp-s0,meanp,0,0,0.0,val,t2v/R@1,1.0\n"
    )
    assert write_run_summary(first, sweep_dir, cfgs[0], {"target/50%/steps": None}) == "rebuilt"
    assert calls[-1][1] == "offline" and len(offline_folders(sweep_dir)) == len(cfgs)


@pytest.mark.slow
def test_a_sweep_online_without_a_network_loses_no_time(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real probe against a closed local port (no mock): the sweep trains both runs, mirrors them offline and
    warns once."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "30")
    calls = spy_init(monkeypatch)
    runs = tmp_path / "runs"
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="the rest of this sweep mirrors offline") as caught:
        assert run_sweep(write_sweep(tmp_path, cache, mode="auto"), runs) == 0
    assert time.perf_counter() - t0 < 120
    assert sum("mirrors offline" in str(w.message) for w in caught) == 1
    assert [m for _, m, _ in calls] == ["offline"] * len(RUNS)
    assert len(offline_folders(runs / "tiny")) == len(RUNS)
