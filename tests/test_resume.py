"""Runs survive kills: a run interrupted at any moment resumes from its last checkpoint and ends with exactly the
metrics of an uninterrupted run (every val/test metric and every training loss, bit for bit on CPU; the clocks
differ), with a ``metrics.csv`` that never holds a duplicated or partial row.

The method is X-Pool: its dropout draws from the torch RNG at every training step, so an exact match also shows
that the RNG states and the data position are restored (and a resume without the RNG states does not match).

In-process tests interrupt with ``KeyboardInterrupt`` (fast). The slow test kills for real, four times in one
lineage: a small driver runs the CLI (``bench.cli.main``, what ``python -m bench`` runs) with one function wrapped
to ``SIGKILL`` its own process at a chosen moment; the last command is the plain ``python -m bench sweep <yaml>``.
It also reads the wandb offline logs: a SIGKILLed process may leave an empty one (it did with wandb 0.31: header
only), and the resumed run's log holds the whole history (the trainer replays the local rows up to its checkpoint).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import interrupted_after_checkpoint
from tvr_convbench.bench.cli import main
from tvr_convbench.bench.runlog import COLUMNS

REPO = Path(__file__).resolve().parent.parent
RUN = "xpool-s0"
SWEEP = """\
methods: [xpool]
seeds: [0]
data: {{name: proxy, train_videos: 40, val_videos: 16, test_videos: 16, width: 16, max_words: 12, max_frames: 4,
        frames_per_segment: 1, vocab_size: 200, cache_dir: {cache}}}
trainer: {{max_steps: 16, val_every: 4, batch_size: 8, eval_test: true, num_threads: 1, lr: 1.0e-3,
           backbone_lr: 1.0e-3}}
wandb: {{mode: {wandb}}}
"""
# 40 train videos / batch 8 = 5 steps per epoch: checkpoints at 4, 8, 12 fall mid-epoch.

DRIVER = '''\
"""python driver.py HOOK N ARGS...: bench.cli.main(ARGS) that SIGKILLs itself at the N-th call of HOOK."""
import os
import signal
import sys

from tvr_convbench.bench import runlog, trainer

HOOKS = {  # name: (owner, attribute, kill before the call?)
    "train_step": (trainer.Run, "train_step", True),  # between two optimizer steps
    "metrics": (trainer, "evaluate_reps", True),  # inside an evaluation: reps encoded, no metrics yet
    "checkpoint": (trainer, "save_checkpoint", False),  # right after last.ckpt was renamed into place
    "flush": (runlog.MetricsLog, "flush", False),  # metrics.csv written, its checkpoint not yet
}
owner, name, before = HOOKS[sys.argv[1]]
nth, original, calls = int(sys.argv[2]), getattr(owner, name), [0]


def wrapped(*args, **kwargs):
    calls[0] += 1
    if before and calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    out = original(*args, **kwargs)
    if not before and calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


setattr(owner, name, wrapped)
from tvr_convbench.bench.cli import main  # noqa: E402

sys.exit(main(sys.argv[3:]))
'''


def write_sweep(folder: Path, cache: Path, wandb: str = "disabled") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kill.yaml"
    path.write_text(SWEEP.format(cache=cache, wandb=wandb))
    return path


def cli_args(sweep: Path, runs: Path) -> list[str]:
    return ["sweep", str(sweep), "--runs-dir", str(runs), "--no-report", "--no-progress"]


def read_metrics(path: Path) -> list[tuple[int, str, str, str]]:
    """(step, split, metric, value as written) of every row, checking the file is whole: the header, nine fields
    per row, parseable numbers, no duplicated (step, split, metric), steps never decreasing."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS, rows[0]
    out = []
    for row in rows[1:]:
        assert len(row) == len(COLUMNS), f"partial row {row}"
        float(row[5]), float(row[8])
        out.append((int(row[4]), row[6], row[7], row[8]))
    keys = [r[:3] for r in out]
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert [r[0] for r in out] == sorted(r[0] for r in out), "steps out of order"
    return out


def results(rows: list[tuple[int, str, str, str]]) -> list[tuple[int, str, str, str]]:
    """The rows that must be reproduced exactly: all but the clocks (split ``time``)."""
    return [row for row in rows if row[1] != "time"]


def checkpoint_step(run_dir: Path) -> int:
    return torch.load(run_dir / "last.ckpt", weights_only=True)["step"]


def reference_metrics(tmp_path: Path, cache: Path) -> list[tuple[int, str, str, str]]:
    """The uninterrupted run, in this process."""
    sweep = write_sweep(tmp_path / "reference", cache)
    assert main(cli_args(sweep, tmp_path / "reference" / "runs")) == 0
    return read_metrics(tmp_path / "reference" / "runs" / "kill" / RUN / "metrics.csv")


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name]


# --- in-process interruptions (fast) -----------------------------------------------------------------------------
class Interrupt(KeyboardInterrupt):
    pass


def test_interrupted_run_resumes_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    expected = reference_metrics(tmp_path, cache)
    assert {r[1] for r in expected} == {"train", "val", "test", "time"}
    assert len({r[3] for r in expected if r[2] == "loss"}) > 1  # it trains
    sweep, runs = write_sweep(tmp_path / "killed", cache), tmp_path / "killed" / "runs"
    run_dir = runs / "kill" / RUN
    from tvr_convbench.bench import trainer

    # (owner, attribute, interrupt after the n-th call, checkpoint step left behind)
    stops = [(trainer, "save_checkpoint", 2, 4), (trainer.Run, "train_step", 5, 8)]
    for owner, name, nth, ckpt in stops:
        original, calls = getattr(owner, name), []

        def interrupt(*args, _original=original, _calls=calls, _nth=nth, **kwargs):
            out = _original(*args, **kwargs)
            _calls.append(1)
            if len(_calls) == _nth:
                raise Interrupt
            return out

        monkeypatch.setattr(owner, name, interrupt)
        with pytest.raises(Interrupt):
            main(cli_args(sweep, runs))
        monkeypatch.setattr(owner, name, original)
        assert checkpoint_step(run_dir) == ckpt and (run_dir / "status").read_text() == "running\n"
    assert main(cli_args(sweep, runs)) == 0
    assert results(read_metrics(run_dir / "metrics.csv")) == results(expected)
    assert (run_dir / "status").read_text() == "done\n" and not (run_dir / "last.ckpt").exists()


def test_the_comparison_sees_the_rng_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same interruption, resumed without restoring the RNG states: X-Pool's dropout draws differ and the run
    ends elsewhere, so the exact match above does depend on the restored states."""
    cache = tmp_path / "cache"
    expected = reference_metrics(tmp_path, cache)
    sweep, runs = write_sweep(tmp_path / "killed", cache), tmp_path / "killed" / "runs"
    from tvr_convbench.bench import checkpoint

    with interrupted_after_checkpoint(8, exc=Interrupt), pytest.raises(Interrupt):
        main(cli_args(sweep, runs))
    monkeypatch.setattr(checkpoint, "set_rng_state", lambda state: None)
    assert main(cli_args(sweep, runs)) == 0
    rows = results(read_metrics(runs / "kill" / RUN / "metrics.csv"))
    split = next(i for i, row in enumerate(results(expected)) if row[0] > 8)
    assert rows[:split] == results(expected)[:split] and rows[split:] != results(expected)[split:]


# --- SIGKILL at several moments (subprocesses) --------------------------------------------------------------------
def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline ``.wandb`` transaction log (LevelDB log framing: 32 KiB blocks, 7-byte record
    headers; a 7-byte file header). Only for this test: the format is wandb's internal one."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending, rows = run_file.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", run_file
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending, pos = pending + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def run_driver(driver: Path, hook: str, nth: int, args: list[str], env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, str(driver), hook, str(nth), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    expected = reference_metrics(tmp_path, cache)
    sweep, runs = write_sweep(tmp_path / "killed", cache, wandb="offline"), tmp_path / "killed" / "runs"
    run_dir = runs / "kill" / RUN
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_SERVICE", None)  # a wandb service of this test process would outlive each killed driver's stream
    # (hook, call, checkpoint step left behind, last step in metrics.csv)
    kills = [
        ("train_step", 7, 4, 4),  # during training: steps 5-6 done, not yet logged
        ("metrics", 3, 8, 8),  # resumed at 4; killed inside the evaluation at step 12 (val)
        ("checkpoint", 1, 12, 12),  # resumed at 8; killed right after the checkpoint of step 12
        ("flush", 1, 12, 16),  # resumed at 12; metrics.csv holds step 16, the checkpoint does not
    ]
    for hook, nth, ckpt, last in kills:
        result = run_driver(driver, hook, nth, cli_args(sweep, runs), env)
        assert result.returncode == -9, (hook, result.stdout, result.stderr[-3000:])
        rows = results(read_metrics(run_dir / "metrics.csv"))
        assert rows == results(expected)[: len(rows)], hook  # a prefix of the uninterrupted run, whole rows only
        assert max(r[0] for r in rows) == last and checkpoint_step(run_dir) == ckpt, hook
        assert (run_dir / "status").read_text() == "running\n"
    result = subprocess.run(
        [sys.executable, "-m", "tvr_convbench", *cli_args(sweep, runs)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(resumed at step 12)" in result.stdout
    assert "wandb" not in result.stderr.lower(), result.stderr  # no mirror warning on any resume
    assert results(read_metrics(run_dir / "metrics.csv")) == results(expected)
    assert (run_dir / "status").read_text() == "done\n" and no_temporaries(runs)

    # the wandb mirror: one offline folder per process, all with the run's id; the newest holds the whole history
    # (the resumed process replays the rows up to its checkpoint: a SIGKILLed process leaves nothing behind)
    run_id = (run_dir / "wandb_id").read_text().strip()
    files = sorted((runs / "kill" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == len(kills) + 1
    history = wandb_history(files[-1])
    steps = [row["step"] for row in history]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 16
    mirrored = {(row["step"], key): value for row in history for key, value in row.items() if "/" in key}
    local = {
        (step, f"{split}/{metric}"): float(value)
        for step, split, metric, value in read_metrics(run_dir / "metrics.csv")
    }
    assert mirrored == local
