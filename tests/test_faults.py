"""Faults a sweep survives, each injected here: a run that raises, wandb trouble, an unwritable or full disk, and
bad feature stores. What is checked each time: a clear message, the local run log intact (never a half-written
file), and what the next sweep does.

Injection: a failing method is registered for one test (``methods.registry``'s ``unregister`` removes it); wandb
is broken by configuration (online with no reachable server, a bad key: ``WANDB_BASE_URL`` points at a closed local
port, so nothing leaves the machine) or by monkeypatching ``wandb.init`` / ``Run.log``; the disk by monkeypatching
``shutil.disk_usage``, the ``open`` that ``bench.runlog`` writes with, or ``torch.save`` (``ENOSPC`` after half the
bytes); the feature store by writing a NaN into a copy of a store built with the tiny CLIP of
``tests/test_didemo_fixtures.py``.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import interrupted_after_checkpoint
from tests.test_didemo_store import MAX_FRAMES, MAX_WORDS, World, world  # noqa: F401 - `world` is a fixture
from tvr_convbench.bench import trainer
from tvr_convbench.bench.cli import main
from tvr_convbench.core import files
from tvr_convbench.methods import METHODS, register_method

TINY_DATA = (
    "{name: proxy, train_videos: 32, val_videos: 12, test_videos: 8, width: 16, max_words: 10, max_frames: 4, "
    "frames_per_segment: 1, vocab_size: 200, cache_dir: %s}"
)
SWEEP = """\
methods: {methods}
seeds: [0]
data: {data}
trainer: {{max_steps: 6, val_every: 2, batch_size: 8, num_threads: 1, lr: 1.0e-3, backbone_lr: 1.0e-3}}
wandb: {{mode: {wandb}}}
"""


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch):
    """No test here may reach a network or keep the 1-thread setting of the runs."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()  # wandb keeps the credentials it saw in this process


def sweep_file(folder: Path, cache: Path, methods: str = "[meanp]", wandb: str = "disabled", name: str = "s") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(SWEEP.format(methods=methods, data=TINY_DATA % cache, wandb=wandb))
    return path


def sweep(path: Path, runs: Path) -> int:
    return main(["sweep", str(path), "--runs-dir", str(runs), "--no-report", "--no-progress"])


def values(metrics_csv: Path) -> list[tuple[str, str, str, str]]:
    """(step, split, metric, value) of every row but the clocks."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert all(len(row) == 9 for row in rows)
    return [(r[4], r[6], r[7], r[8]) for r in rows if r[6] != "time"]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> list[tuple[str, str, str, str]]:
    """meanp-s0 of the tiny sweep, undisturbed and without wandb."""
    root = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    assert sweep(sweep_file(root, cache), root / "runs") == 0
    torch.set_num_threads(threads)
    return values(root / "runs" / "s" / "meanp-s0" / "metrics.csv")


# --- a run that raises -------------------------------------------------------------------------------------------
@pytest.fixture
def explode():
    """``explode``: meanP whose loss raises at the third training step of each process while ``Explode.armed``."""
    base = METHODS.get("meanp")

    class Explode(base.cls):
        armed = True

        def loss(self, sim, text, video):  # noqa: ANN001, ANN201
            self.calls = getattr(self, "calls", 0) + 1
            if Explode.armed and self.calls == 3:
                raise RuntimeError("injected failure at the third step")
            return super().loss(sim, text, video)

    register_method("explode", **base.preset)(Explode)
    yield Explode
    METHODS.unregister("explode")


def test_failed_runs_are_recorded_the_sweep_goes_on_and_the_next_sweep_retries_only_unfinished_runs(
    tmp_path: Path, cache: Path, explode, capsys: pytest.CaptureFixture
) -> None:
    path, runs = sweep_file(tmp_path, cache, methods="[meanp, explode, seqtransf]"), tmp_path / "runs"
    sweep_dir = runs / "s"
    names = ("meanp-s0", "explode-s0", "seqtransf-s0")

    def status() -> dict[str, str]:
        return {run: (sweep_dir / run / "status").read_text().strip() for run in names}

    # 1. explode fails at step 3; seqtransf is interrupted (Ctrl-C) right after its checkpoint at step 2
    with interrupted_after_checkpoint(2, run="seqtransf"), pytest.raises(KeyboardInterrupt):
        sweep(path, runs)
    assert status() == {"meanp-s0": "done", "explode-s0": "failed", "seqtransf-s0": "running"}
    trace = (sweep_dir / "explode-s0" / "traceback.txt").read_text()
    assert "RuntimeError: injected failure at the third step" in trace and "test_faults.py" in trace
    assert max(int(r[0]) for r in values(sweep_dir / "explode-s0" / "metrics.csv")) == 2
    meanp = (sweep_dir / "meanp-s0" / "metrics.csv").read_bytes()
    capsys.readouterr()

    # 2. the next sweep skips the done run, resumes the two others; explode fails again (step 5), the sweep goes on
    assert sweep(path, runs) == 1
    out, err = capsys.readouterr()
    assert "meanp-s0: done, skipped" in out and "seqtransf-s0: best val" in out and "(resumed at step 2)" in out
    assert "sweep s: 2/3 runs done, 1 failed" in out
    assert "explode-s0: FAILED (RuntimeError: injected failure at the third step)" in err
    assert str(sweep_dir / "explode-s0" / "traceback.txt") in err
    assert status() == {"meanp-s0": "done", "explode-s0": "failed", "seqtransf-s0": "done"}

    # 3. fixed: only explode runs, from its last checkpoint, and ends exactly where meanp (same model) did
    explode.armed = False
    assert sweep(path, runs) == 0
    out, _ = capsys.readouterr()
    assert "meanp-s0: done, skipped" in out and "seqtransf-s0: done, skipped" in out
    assert "explode-s0: best val" in out and "(resumed at step 4)" in out
    assert status() == {"meanp-s0": "done", "explode-s0": "done", "seqtransf-s0": "done"}
    assert (sweep_dir / "meanp-s0" / "metrics.csv").read_bytes() == meanp
    assert values(sweep_dir / "explode-s0" / "metrics.csv") == values(sweep_dir / "meanp-s0" / "metrics.csv")


# --- wandb trouble -----------------------------------------------------------------------------------------------
def _break_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def init(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("injected crash inside wandb.init")

    monkeypatch.setattr(wandb, "init", init)


def _break_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb.sdk.wandb_run import Run

    original, calls = Run.log, []

    def log(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("injected crash inside run.log")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Run, "log", log)


def _server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network probe says the server answers, so the init itself meets the bad key."""
    from tvr_convbench.bench import wandb_mirror

    monkeypatch.setattr(wandb_mirror, "probe_server", lambda timeout=None: None)


WANDB_FAULTS = {
    # name: (wandb mode, environment, monkeypatch, warning fragment)
    "online-no-network": (
        "online",
        {"WANDB_API_KEY": "k" * 40},
        None,
        "no answer from the wandb server http://127.0.0.1:9 within the probe",
    ),
    "bad-key": ("online", {"WANDB_API_KEY": "bad"}, _server_answers, "wandb init failed (AuthenticationError"),
    "init-crash": ("offline", {}, _break_init, "injected crash inside wandb.init"),
    "log-crash": ("offline", {}, _break_log, "wandb log failed (RuntimeError: injected crash inside run.log)"),
}


@pytest.mark.parametrize("fault", list(WANDB_FAULTS))
def test_wandb_trouble_warns_and_the_run_goes_on(
    tmp_path: Path, cache: Path, reference: list, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    mode, env, patch, fragment = WANDB_FAULTS[fault]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if patch is not None:
        patch(monkeypatch)
    path, runs = sweep_file(tmp_path, cache, wandb=mode), tmp_path / "runs"
    with pytest.warns(UserWarning, match="continuing with the local run log only|mirrors offline") as caught:
        assert sweep(path, runs) == 0
    assert any(fragment in str(w.message) for w in caught), [str(w.message) for w in caught]
    run_dir = runs / "s" / "meanp-s0"
    assert (run_dir / "status").read_text() == "done\n"
    assert values(run_dir / "metrics.csv") == reference


# --- the disk ----------------------------------------------------------------------------------------------------
def expect_usage_error(capsys: pytest.CaptureFixture, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_read_only_runs_dir_is_refused_before_training(tmp_path: Path, cache: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        assert sweep(sweep_file(tmp_path, cache), runs) == 2
    finally:
        runs.chmod(0o755)
    expect_usage_error(capsys, f"--runs-dir: {runs / 's'}: not writable (Permission denied); nothing was run")
    assert list(runs.iterdir()) == []


def test_runs_dir_that_cannot_be_a_folder_is_refused(tmp_path: Path, cache: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    assert sweep(sweep_file(tmp_path, cache), blocker / "runs") == 2
    expect_usage_error(capsys, f"--runs-dir: {blocker / 'runs' / 's'}: not writable (Not a directory)")
    assert blocker.read_text() == "not a folder\n"


def test_full_disk_is_refused_before_anything_is_written(
    tmp_path: Path, cache: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    runs = tmp_path / "runs"
    assert sweep(sweep_file(tmp_path, cache), runs) == 2
    expect_usage_error(capsys, f"--runs-dir: {runs / 's'}: only 10 MiB free, need 64 MiB; nothing was run")
    assert not runs.exists()


class _HalfWriter:
    """A binary file that writes half of what it is given, then fails like a full disk."""

    def __init__(self, handle) -> None:  # noqa: ANN001
        self.handle = handle

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.handle, name)

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.handle.close()


def _fill_disk_at_metrics_write(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The ``nth`` write of ``metrics.csv`` runs out of space half way (other files still write)."""
    calls = []

    def fake_open(path, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - returned to a with-block
        if Path(path).name.startswith(".metrics.csv."):
            calls.append(1)
            if len(calls) == nth:
                return _HalfWriter(handle)
        return handle

    monkeypatch.setattr(files, "open", fake_open, raising=False)


def _fill_disk_at_checkpoint(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The ``nth`` checkpoint runs out of space half way."""
    original, calls = torch.save, []

    def fake_save(obj, path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) != nth:
            return original(obj, path, *args, **kwargs)
        original(obj, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trainer.torch, "save", fake_save)


@pytest.mark.parametrize("target", ["metrics", "checkpoint"])
def test_disk_full_during_a_run_leaves_no_partial_file(
    tmp_path: Path, cache: Path, reference: list, monkeypatch: pytest.MonkeyPatch, target: str, capsys
) -> None:
    path, runs = sweep_file(tmp_path, cache), tmp_path / "runs"
    run_dir = runs / "s" / "meanp-s0"
    with monkeypatch.context() as patch:
        (_fill_disk_at_metrics_write if target == "metrics" else _fill_disk_at_checkpoint)(patch, 3)  # step 4
        assert sweep(path, runs) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert (run_dir / "status").read_text() == "failed\n"
    assert "No space left on device" in (run_dir / "traceback.txt").read_text()
    assert leftovers(runs) == []
    rows = values(run_dir / "metrics.csv")  # a whole file: the last complete version
    last = {"metrics": "2", "checkpoint": "4"}[target]  # the checkpoint fails after metrics.csv was written
    assert rows == reference[: len(rows)] and rows[-1][0] == last
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["step"] == 2
    assert sweep(path, runs) == 0  # space again: the retry resumes at step 2 and ends where an undisturbed run does
    assert values(run_dir / "metrics.csv") == reference and leftovers(runs) == []


def test_temporaries_of_a_killed_writer_are_removed_on_resume(
    tmp_path: Path, cache: Path, reference: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, runs = sweep_file(tmp_path, cache), tmp_path / "runs"
    run_dir = runs / "s" / "meanp-s0"
    with monkeypatch.context() as patch:
        original, calls = trainer.save_checkpoint, []

        def stop(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            original(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt

        patch.setattr(trainer, "save_checkpoint", stop)
        with pytest.raises(KeyboardInterrupt):
            sweep(path, runs)
    stale = [run_dir / ".metrics.csv.tmp4242", run_dir / ".last.ckpt.tmp"]
    for file in stale:
        file.write_bytes(b"half a file")
    assert sweep(path, runs) == 0
    assert leftovers(runs) == [] and values(run_dir / "metrics.csv") == reference


# --- bad feature stores through the CLI --------------------------------------------------------------------------
def store_sweep(tmp_path: Path, store: Path, max_frames: int = MAX_FRAMES) -> Path:
    path = tmp_path / "store.yaml"
    data = f"{{name: didemo, store: {store}, max_frames: {max_frames}, max_words: {MAX_WORDS}}}"
    path.write_text(SWEEP.format(methods="[meanp]", data=data, wandb="disabled"))
    return path


def test_nan_in_a_feature_store_is_a_usage_error(world: World, tmp_path: Path, capsys) -> None:  # noqa: F811
    store = tmp_path / "store"
    shutil.copytree(world.store, store)
    frames = np.load(store / "val" / "video_frames.npy", mmap_mode="r+")
    frames[2, 1, 5] = np.nan
    frames.flush()
    del frames
    path, runs = store_sweep(tmp_path, store), tmp_path / "runs"
    assert sweep(path, runs) == 2
    expect_usage_error(
        capsys,
        f"{path}: data: {store}/val/video_frames.npy: field 'video_frames': non-finite value (NaN or inf) in item 2",
    )
    assert not runs.exists()


def test_store_disagreeing_with_the_config_is_a_usage_error(world: World, tmp_path: Path, capsys) -> None:  # noqa: F811
    path, runs = store_sweep(tmp_path, world.store, max_frames=64), tmp_path / "runs"
    assert sweep(path, runs) == 2
    expect_usage_error(
        capsys,
        f"{path}: data: {world.store}/manifest.json: field 'settings.protocol.max_frames': the store has 32, "
        "requested 64",
    )
    assert not runs.exists()


def test_store_without_a_train_split_is_a_usage_error(world: World, tmp_path: Path, capsys) -> None:  # noqa: F811
    path, runs = store_sweep(tmp_path, world.store), tmp_path / "runs"
    assert sweep(path, runs) == 2
    expect_usage_error(
        capsys, f"{path}: data: {world.store}/manifest.json: field 'settings.splits': the store has no split 'train'"
    )
    assert not runs.exists()


def test_under_a_wandb_agent_the_agents_run_id_is_used(
    tmp_path: Path, cache: Path, reference: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")  # what `wandb agent` sets for the command it starts
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    path, runs = sweep_file(tmp_path, cache, wandb="offline"), tmp_path / "runs"
    assert sweep(path, runs) == 0
    run_dir = runs / "s" / "meanp-s0"
    assert (run_dir / "wandb_id").read_text() == "agentrun1\n"
    assert (
        [p.name for p in (runs / "s" / "wandb").glob("offline-run-*")]
        == [p.name for p in (runs / "s" / "wandb").glob("offline-run-*-agentrun1")]
        != []
    )
    assert values(run_dir / "metrics.csv") == reference


def test_a_run_with_nothing_to_train_runs_and_resumes(tmp_path: Path, cache: Path) -> None:
    """meanP on features without adapter has no parameter: no optimizer is built (torch refuses an empty one)."""
    path, runs = sweep_file(tmp_path, cache), tmp_path / "runs"
    path.write_text(path.read_text().replace("vocab_size: 200,", "vocab_size: 200, adapter: false,"))
    run_dir = runs / "s" / "meanp-s0"
    with interrupted_after_checkpoint(2), pytest.raises(KeyboardInterrupt):
        sweep(path, runs)
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["optimizer"] == {}
    assert sweep(path, runs) == 0
    rows = values(run_dir / "metrics.csv")
    val = {(r[0], r[2]): r[3] for r in rows if r[1] == "val"}
    assert {step for step, _ in val} == {"0", "2", "4", "6"}
    assert len({v for (_, metric), v in val.items() if metric == "t2v/R@1"}) == 1  # nothing trains
