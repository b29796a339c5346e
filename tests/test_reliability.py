"""Nothing silently wrong (issue 16): what an adversarial user found, each reproduced through the CLI on a tiny sweep.

1. a retried run resumed an old checkpoint under a new config (only done/running folders were compared): every
   planned run folder, in any status, is compared by fingerprint; ``--restart-changed`` reruns it from scratch;
3. two sweeps on one folder raced: a sweep holds an OS lock on ``runs/<sweep>/.lock`` and each training process one
   on its run folder's ``.lock``; a second holder exits 2 naming the first one's PID; a stale lock file never blocks;
4. a diverged run was ``done``: a non-finite loss stops it, marks it ``diverged`` and the sweep goes on;
5. a kill during the first validation interval duplicated the step-0 rows on resume;
6./8. damaged resume state (missing, truncated or non-UTF-8 ``metrics.csv``; truncated, empty or random
   ``last.ckpt``) failed every rerun or resumed with rows missing: it is moved aside with a one-line warning and the
   run restarts, ending bit-identical to a clean run; an unreadable log of a done run does not stop the results;
7. a deleted ``config.yaml`` of a done run: skipped, then a crash at the end; now a one-line refusal (or a rerun);
9. errors that arrived after all training (unwritable reports folder, batch above the train split, a method
   argument its constructor rejects, no GPU): exit 2 before anything is written.

X-Pool is the method of the resume tests: its dropout draws from the torch RNG at every step, so bit-identity also
shows that a restart from scratch starts from a fresh run's RNG state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import folder_state, interrupted_after_checkpoint, metric_rows, one_line_error, sweep_cli, tiny_sweep
from tvr_convbench.bench.cli import main
from tvr_convbench.bench.runlog import collect_results
from tvr_convbench.methods import METHODS, register_method

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, list]:
    """Uninterrupted runs (method -> its metrics rows, clocks excluded) of the tiny sweep."""
    root = tmp_path_factory.mktemp("clean")
    threads = torch.get_num_threads()
    path = tiny_sweep(root, cache, methods=["xpool", "meanp"])
    assert sweep_cli(path, root / "runs") == 0
    torch.set_num_threads(threads)
    return {m: metric_rows(root / "runs" / "s" / f"{m}-s0" / "metrics.csv") for m in ("xpool", "meanp")}


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- 1. a changed config is never resumed, in any status ----------------------------------------------------------
@pytest.mark.parametrize("status", ["failed", "interrupted", "weird-word", "running"])
def test_a_run_folder_made_under_another_config_is_never_resumed(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture, status: str
) -> None:
    path, runs = tiny_sweep(tmp_path, cache, methods=["xpool"]), tmp_path / "runs"
    run_dir = runs / "s" / "xpool-s0"
    with interrupted_after_checkpoint(4), pytest.raises(KeyboardInterrupt):
        sweep_cli(path, runs)
    if status != "interrupted":
        (run_dir / "status").write_text(f"{status}\n")
    before = folder_state(runs)
    capsys.readouterr()
    assert sweep_cli(path, runs, "--set", "trainer.lr=5.0e-4") == 2
    one_line_error(capsys, f"{run_dir}: run 'xpool-s0' was made with a different config (changed: trainer)")
    assert folder_state(runs) == before  # nothing run, nothing written

    assert sweep_cli(path, runs, "--set", "trainer.lr=5.0e-4", "--restart-changed") == 0
    out = capsys.readouterr().out
    assert "xpool-s0: made with another config; wiped, rerun from scratch (--restart-changed)" in out
    assert "resumed" not in out
    fresh = tmp_path / "fresh"
    assert sweep_cli(path, fresh, "--set", "trainer.lr=5.0e-4") == 0
    assert metric_rows(run_dir / "metrics.csv") == metric_rows(fresh / "s" / "xpool-s0" / "metrics.csv")


# --- 7. a done run whose config.yaml is gone ----------------------------------------------------------------------
def test_a_done_run_without_its_config_is_refused_or_rerun(tmp_path: Path, cache: Path, capsys, clean) -> None:
    path, runs = tiny_sweep(tmp_path, cache), tmp_path / "runs"
    run_dir = runs / "s" / "meanp-s0"
    assert sweep_cli(path, runs) == 0
    (run_dir / "config.yaml").unlink()
    before = folder_state(runs)
    capsys.readouterr()
    assert sweep_cli(path, runs) == 2  # was: skipped as done, then a FileNotFoundError at the end (exit 1)
    one_line_error(
        capsys, f"{run_dir}: run 'meanp-s0'", "its config.yaml is missing or unreadable", "--restart-changed"
    )
    assert folder_state(runs) == before
    assert sweep_cli(path, runs, "--restart-changed") == 0
    assert (run_dir / "config.yaml").is_file() and (run_dir / "status").read_text() == "done\n"
    assert metric_rows(run_dir / "metrics.csv") == clean["meanp"]


# --- 3. one sweep per folder, one training process per run folder -------------------------------------------------
HOLD = """\
import fcntl, os, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.seek(0); handle.truncate(); handle.write(f"{os.getpid()}\\n"); handle.flush()
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes stdin
"""


@pytest.fixture
def hold_lock():
    """``hold_lock(path) -> PID``: another process holds the OS lock on ``path`` (as a sweep or trainer would)."""
    holders = []

    def hold(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        holders.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc.pid

    yield hold
    for proc in holders:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_sweep_refuses_a_folder_another_sweep_holds(tmp_path: Path, cache: Path, capsys, hold_lock) -> None:
    path, runs = tiny_sweep(tmp_path, cache), tmp_path / "runs"
    pid = hold_lock(runs / "s" / ".lock")
    before = folder_state(runs)
    assert sweep_cli(path, runs) == 2
    one_line_error(capsys, f"{runs / 's'}: another sweep is running on this folder (PID {pid})")
    assert folder_state(runs) == before


def test_train_refuses_a_run_another_process_trains(tmp_path: Path, cache: Path, capsys, hold_lock) -> None:
    path, runs = tiny_sweep(tmp_path, cache), tmp_path / "runs"
    run_dir = runs / "s" / "meanp-s0"
    pid = hold_lock(run_dir / ".lock")
    argv = ["train", str(path), "--run", "meanp-s0", "--runs-dir", str(runs), "--no-progress"]
    assert main(argv) == 2
    one_line_error(capsys, f"{run_dir}: another training process is running on this folder (PID {pid})")
    assert [p.name for p in run_dir.iterdir()] == [".lock"] and not (runs / "s" / "sweep.yaml").exists()
    assert main([*argv, "--restart-changed"]) == 2  # never wiped under a running process either
    one_line_error(capsys, f"(PID {pid})")


def test_a_stale_lock_file_does_not_block(tmp_path: Path, cache: Path, clean) -> None:
    path, runs = tiny_sweep(tmp_path, cache), tmp_path / "runs"
    for lock in (runs / "s" / ".lock", runs / "s" / "meanp-s0" / ".lock"):  # left by killed processes
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("999999999\n")
    assert sweep_cli(path, runs) == 0
    assert (runs / "s" / ".lock").read_text() == f"{os.getpid()}\n"
    assert metric_rows(runs / "s" / "meanp-s0" / "metrics.csv") == clean["meanp"]


PAUSE = '''\
"""python pause.py READY GO ARGS...: bench.cli.main(ARGS), pausing at the first optimizer step until GO exists."""
import sys
import time
from pathlib import Path

from tvr_convbench.bench import trainer

ready, go, original, calls = Path(sys.argv[1]), Path(sys.argv[2]), trainer.Run.train_step, []


def train_step(self, batch):
    calls.append(1)
    if len(calls) == 1:
        ready.write_text("paused")
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return original(self, batch)


trainer.Run.train_step = train_step
from tvr_convbench.bench.cli import main  # noqa: E402

sys.exit(main(sys.argv[3:]))
'''


@pytest.mark.slow
def test_two_concurrent_sweeps_on_one_folder(tmp_path: Path, cache: Path, capsys, clean) -> None:
    """A real sweep in another process, paused inside its first run: a second sweep on the folder (and a train of
    the run it trains) exit 2 naming its PID and write nothing; the first then finishes as if alone."""
    path, runs = tiny_sweep(tmp_path, cache), tmp_path / "runs"
    driver, ready, go = tmp_path / "pause.py", tmp_path / "ready", tmp_path / "go"
    driver.write_text(PAUSE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    argv = ["sweep", str(path), "--runs-dir", str(runs), "--no-report", "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, str(driver), str(ready), str(go), *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first sweep never reached its first step"
            time.sleep(0.1)
        before = folder_state(runs)
        assert sweep_cli(path, runs) == 2
        one_line_error(capsys, f"{runs / 's'}: another sweep is running on this folder (PID {first.pid})")
        assert main(["train", str(path), "--run", "meanp-s0", "--runs-dir", str(runs), "--no-progress"]) == 2
        one_line_error(capsys, f"{runs / 's' / 'meanp-s0'}: another training process", f"(PID {first.pid})")
        assert folder_state(runs) == before
    finally:
        go.write_text("go")
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert "meanp-s0: best val" in out and "resumed" not in out
    assert metric_rows(runs / "s" / "meanp-s0" / "metrics.csv") == clean["meanp"]


@pytest.mark.slow
def test_parallel_jobs_lock_their_own_run_folders(tmp_path: Path, cache: Path, clean) -> None:
    """``--jobs 2``: the sweep process holds the sweep lock, each worker process the lock of the run it trains; the
    results are those of one-by-one runs."""
    path, runs = tiny_sweep(tmp_path, cache, methods=["xpool", "meanp"]), tmp_path / "runs"
    assert sweep_cli(path, runs, "--jobs", "2") == 0
    for method in ("xpool", "meanp"):
        run_dir = runs / "s" / f"{method}-s0"
        assert (run_dir / "status").read_text() == "done\n"
        assert int((run_dir / ".lock").read_text()) != os.getpid()  # a worker trained it
        assert metric_rows(run_dir / "metrics.csv") == clean[method]
    assert (runs / "s" / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.slow
def test_a_terminated_parallel_sweep_leaves_no_worker_training(tmp_path: Path, cache: Path) -> None:
    """SIGTERM (``kill``, a scheduler's time limit) to a ``--jobs 2`` sweep stops its worker processes too: no
    orphan goes on writing into a run folder (its runs stay ``running``, to resume on the next sweep)."""
    path = tiny_sweep(tmp_path, cache, methods=["xpool", "meanp"], trainer={"max_steps": 100000, "val_every": 50000})
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    argv = ["sweep", str(path), "--runs-dir", str(runs), "--no-report", "--no-progress", "--jobs", "2"]
    sweep = subprocess.Popen([sys.executable, "-m", "tvr_convbench", *argv], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    folders = [runs / "s" / f"{m}-s0" for m in ("xpool", "meanp")]
    try:
        workers = _wait_for_workers(sweep, folders)
    finally:
        sweep.terminate()
        sweep.communicate(timeout=60)
    assert sweep.returncode != 0
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its sweep"
    assert all((folder / "status").read_text() == "running\n" for folder in folders)


def _wait_for_workers(sweep: subprocess.Popen, folders: list[Path]) -> set[int]:
    """The PIDs of the processes training ``folders`` (from their run locks) once each has logged a row."""
    deadline = time.monotonic() + 240
    while not all((folder / "metrics.csv").exists() for folder in folders):
        assert sweep.poll() is None, sweep.communicate()
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    workers = {int((folder / ".lock").read_text()) for folder in folders}
    assert sweep.pid not in workers
    return workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- 4. divergence ------------------------------------------------------------------------------------------------
@pytest.fixture
def nan_at_step_3():
    """``nanloss``: meanP whose loss turns NaN at its third training step."""
    base = METHODS.get("meanp")

    class NanLoss(base.cls):
        def loss(self, sim, text, video):  # noqa: ANN001, ANN201
            self.calls = getattr(self, "calls", 0) + 1
            parts = super().loss(sim, text, video)
            return {**parts, "loss": parts["loss"] * float("nan")} if self.calls == 3 else parts

    register_method("nanloss", **base.preset)(NanLoss)
    yield
    METHODS.unregister("nanloss")


def test_a_diverged_run_is_stopped_marked_and_skipped(tmp_path: Path, cache: Path, capsys, nan_at_step_3) -> None:
    """Exit code 0: a diverged run is a result (a censored miss, like a run that never reaches a target), not a
    failure to retry: the sweep goes on, a rerun skips it, and the closing line counts it."""
    path, runs = tiny_sweep(tmp_path, cache, methods=["nanloss", "meanp"]), tmp_path / "runs"
    run_dir = runs / "s" / "nanloss-s0"
    assert sweep_cli(path, runs) == 0
    out, err = capsys.readouterr()
    assert (run_dir / "status").read_text() == "diverged\n"
    assert (runs / "s" / "meanp-s0" / "status").read_text() == "done\n"  # the sweep went on
    assert lines((run_dir / "traceback.txt").read_text())[0] == "diverged at optimizer step 3: loss=nan"
    rows = metric_rows(run_dir / "metrics.csv")
    assert sorted({s for s, split, _, _ in rows if split == "train"}) == [1, 2, 3]  # up to the diverging step
    assert sorted({s for s, split, _, _ in rows if split == "val"}) == [0, 2]  # the broken model is not evaluated
    assert [v for s, split, m, v in rows if (s, split, m) == (3, "train", "loss")] == ["nan"]
    assert "nanloss-s0: best val t2v R@1" in out and "| DIVERGED at step 3" in out
    assert "sweep s: 1/2 runs done, 0 failed, 1 diverged" in out and "DIVERGED at step 3" in err
    keys = [(step, split, metric) for step, split, metric, _ in metric_rows(run_dir / "metrics.csv", clocks=True)]
    assert len(keys) == len(set(keys))

    before = folder_state(run_dir)
    assert sweep_cli(path, runs) == 0  # a rerun skips it (it would diverge again) and still counts it
    out, _ = capsys.readouterr()
    assert "nanloss-s0: diverged, skipped" in out and "sweep s: 1/2 runs done, 0 failed, 1 diverged" in out
    assert folder_state(run_dir) == before


# --- 5. a kill right after the step-0 checkpoint ------------------------------------------------------------------
def test_a_kill_after_the_step_0_checkpoint_resumes_without_duplicates(
    tmp_path: Path, cache: Path, capsys, clean
) -> None:
    path, runs = tiny_sweep(tmp_path, cache, methods=["xpool"]), tmp_path / "runs"
    run_dir = runs / "s" / "xpool-s0"
    with interrupted_after_checkpoint(0), pytest.raises(KeyboardInterrupt):
        sweep_cli(path, runs)
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["step"] == 0
    assert (run_dir / "status").read_text() == "running\n"
    capsys.readouterr()
    assert sweep_cli(path, runs) == 0
    assert "xpool-s0: best val" in (out := capsys.readouterr().out) and "(resumed at step 0)" in out
    results = metric_rows(runs / "s" / "results.csv", clocks=True)
    keys = [(step, split, metric) for step, split, metric, _ in results]
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert metric_rows(run_dir / "metrics.csv") == clean["xpool"]


# --- 6./8. damaged resume state -----------------------------------------------------------------------------------
def _cut_mid_row(data: bytes) -> bytes:
    middle = data.rindex(b"\n", 0, len(data) // 2) + 1
    return data[: middle + 20]  # 20 bytes into a row: fewer cells, no final newline


def _not_utf8(data: bytes) -> bytes:
    first_row = data.index(b"\n") + 1
    return data[:first_row] + data[first_row:].replace(b"meanp" if b"meanp" in data else b"xpool", b"xp\xffol", 1)


def _foreign_checkpoint(data: bytes) -> bytes:
    """A readable checkpoint of this harness whose model has another shape (it loads only in part)."""
    import io

    state = torch.load(io.BytesIO(data), weights_only=True)
    key = next(iter(state["model"]))
    state["model"][key] = torch.zeros(3, 3)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


DAMAGE = {
    # name: (damaged file, how, fragment of the warning)
    "checkpoint-truncated": ("last.ckpt", lambda b: b[: len(b) // 2], "unreadable checkpoint ("),
    "checkpoint-empty": ("last.ckpt", lambda b: b"", "unreadable checkpoint (empty file)"),
    "checkpoint-random": ("last.ckpt", lambda b: os.urandom(len(b)), "unreadable checkpoint"),
    "checkpoint-foreign": ("last.ckpt", _foreign_checkpoint, "does not load (RuntimeError"),
    "metrics-missing": ("metrics.csv", None, "FileNotFoundError"),
    "metrics-truncated": ("metrics.csv", _cut_mid_row, "cut short"),
    "metrics-not-utf8": ("metrics.csv", _not_utf8, "UnicodeDecodeError"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_resume_state_is_moved_aside_and_the_run_restarts(
    tmp_path: Path, cache: Path, capsys, clean, damage: str
) -> None:
    name, how, fragment = DAMAGE[damage]
    path, runs = tiny_sweep(tmp_path, cache, methods=["xpool"]), tmp_path / "runs"
    run_dir = runs / "s" / "xpool-s0"
    with interrupted_after_checkpoint(4), pytest.raises(KeyboardInterrupt):
        sweep_cli(path, runs)
    intact = {n: (run_dir / n).read_bytes() for n in ("last.ckpt", "metrics.csv")}
    earlier = run_dir / f"{name}.damaged-1"
    earlier.write_bytes(b"an earlier damaged copy")  # never overwritten
    if how is None:
        (run_dir / name).unlink()
    else:
        (run_dir / name).write_bytes(how(intact[name]))
    damaged = (run_dir / name).read_bytes() if (run_dir / name).exists() else None
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sweep_cli(path, runs) == 0  # was: a failed run at every rerun, or resumed with rows missing
    said = [str(w.message) for w in caught if "restarting from scratch" in str(w.message)]
    assert len(said) == 1 and "\n" not in said[0] and str(run_dir / name) in said[0] and fragment in said[0], said
    assert earlier.read_bytes() == b"an earlier damaged copy"
    moved = {p.name: p.read_bytes() for p in run_dir.glob("*.damaged-*") if p != earlier}
    if damaged is None:  # the log was missing: its (intact) checkpoint is moved aside
        assert moved == {"last.ckpt.damaged-1": intact["last.ckpt"]}
    else:  # the damaged file (beside the earlier copy) and its intact partner
        other = "metrics.csv" if name == "last.ckpt" else "last.ckpt"
        assert moved == {f"{name}.damaged-2": damaged, f"{other}.damaged-1": intact[other]}
    out = capsys.readouterr().out
    assert "xpool-s0: best val" in out and "resumed" not in out
    assert (run_dir / "status").read_text() == "done\n"
    assert metric_rows(run_dir / "metrics.csv") == clean["xpool"]  # bit-identical to a clean run


def test_an_unreadable_status_file_reads_as_unfinished(tmp_path: Path, cache: Path, capsys, clean) -> None:
    """A status file with a non-UTF-8 byte (was: a UnicodeDecodeError traceback before any run): not a finished
    status, so the run resumes from its checkpoint and ends as a clean run."""
    path, runs = tiny_sweep(tmp_path, cache, methods=["xpool"]), tmp_path / "runs"
    run_dir = runs / "s" / "xpool-s0"
    with interrupted_after_checkpoint(4), pytest.raises(KeyboardInterrupt):
        sweep_cli(path, runs)
    (run_dir / "status").write_bytes(b"d\xffne\n")
    capsys.readouterr()
    assert sweep_cli(path, runs) == 0
    assert "(resumed at step 4)" in capsys.readouterr().out
    assert (run_dir / "status").read_text() == "done\n"
    assert metric_rows(run_dir / "metrics.csv") == clean["xpool"]


def test_a_done_run_with_an_unreadable_log_does_not_stop_the_results(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture, clean
) -> None:
    path, runs = tiny_sweep(tmp_path, cache, methods=["xpool", "meanp"]), tmp_path / "runs"
    sweep_dir = runs / "s"
    assert sweep_cli(path, runs) == 0
    bad = sweep_dir / "xpool-s0" / "metrics.csv"
    bad.write_bytes(_not_utf8(bad.read_bytes()))
    with pytest.warns(UserWarning, match="not collected into results.csv") as caught:
        count = collect_results(sweep_dir)
    message = next(str(w.message) for w in caught if "not collected" in str(w.message))
    assert message.startswith(f"{bad}: not collected into results.csv (UnicodeDecodeError") and "\n" not in message
    results = metric_rows(sweep_dir / "results.csv")
    assert count == len(metric_rows(sweep_dir / "meanp-s0" / "metrics.csv", clocks=True))
    assert results == clean["meanp"]  # the readable run, whole
    with pytest.warns(UserWarning, match="not collected"):
        assert sweep_cli(path, runs) == 0  # a rerun (both skipped) collects the results the same way
    reports = tmp_path / "reports"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the analysis says what it excluded; its wording is not checked here
        assert main(["report", "s", "--runs-dir", str(runs), "--reports-dir", str(reports)]) == 0  # no traceback
    assert (reports / "s" / "report.md").is_file()


# --- 9. errors knowable before the first run ----------------------------------------------------------------------
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


PREFLIGHT = {
    # name: (methods, trainer, a setup, fragments of the error)
    "batch-above-train-split": (["meanp"], {"batch_size": 64}, None, ["methods (meanp): trainer.batch_size 64",
                                                                     "exceeds the train split (32 items)"]),
    "temporal-layers": ([{"method": "seqtransf", "args": {"temporal_layers": -4}}], {}, None,
                        ["methods (seqtransf).args.temporal_layers: -4 is rejected by seqtransf"]),
    "logit-scale": ([{"method": "meanp", "args": {"logit_scale": -100.0}}], {}, None,
                    ["methods (meanp).args.logit_scale: -100.0 is rejected by meanp (math domain error)"]),
    "no-gpu": (["meanp"], {"accelerator": "gpu"}, _no_gpu,
               ["methods (meanp): trainer.accelerator is 'gpu' but no GPU is visible"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PREFLIGHT))
def test_errors_knowable_before_training_stop_the_sweep_before_the_first_run(
    tmp_path: Path, cache: Path, capsys, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    methods, trainer_settings, setup, fragments = PREFLIGHT[case]
    if setup is not None:
        setup(monkeypatch)
    path = tiny_sweep(tmp_path, cache, methods=methods, trainer=trainer_settings)
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    argv = ["sweep", str(path), "--runs-dir", str(runs), "--reports-dir", str(reports), "--no-progress"]
    assert main(argv) == 2  # was: every run failed after the sweep started (exit 1)
    one_line_error(capsys, str(path), *fragments)
    assert not runs.exists() and not reports.exists()


def test_an_unwritable_reports_folder_stops_the_sweep_before_the_first_run(tmp_path: Path, cache: Path, capsys):
    """A folder no one can create (its parent is a file): root writes into read-only folders, this stops it too."""
    path, runs = tiny_sweep(tmp_path, cache), tmp_path / "runs"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    argv = ["sweep", str(path), "--runs-dir", str(runs), "--reports-dir", str(blocker / "reports"), "--no-progress"]
    assert main(argv) == 2  # was: the runs trained, then the report failed
    one_line_error(capsys, f"--reports-dir: {blocker / 'reports' / 's'}: not writable (Not a directory)")
    assert not runs.exists() and blocker.read_text() == "not a folder\n"
    assert main([*argv, "--no-report"]) == 0  # the reports folder is checked only when a report is written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_reports_folder_stops_the_sweep_before_the_first_run(tmp_path: Path, cache: Path, capsys):
    path, runs, reports = tiny_sweep(tmp_path, cache), tmp_path / "runs", tmp_path / "reports"
    reports.mkdir()
    reports.chmod(0o555)
    try:
        argv = ["sweep", str(path), "--runs-dir", str(runs), "--reports-dir", str(reports), "--no-progress"]
        assert main(argv) == 2
    finally:
        reports.chmod(0o755)
    one_line_error(capsys, f"--reports-dir: {reports / 's'}: not writable (Permission denied)")
    assert not runs.exists() and list(reports.iterdir()) == []
