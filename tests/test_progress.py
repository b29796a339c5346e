"""The sweep's progress (``bench.progress.SweepProgress``), driven with a fake terminal and a fake clock: the outer
bar (run k/N, done/failed/skipped counts, ETA from the runs finished so far, also with parallel workers), one
status line per finished run above it, the trainer's per-run bar beside it, and no bar at all when stdout is not a
terminal."""

from __future__ import annotations

import io
import re
import sys
import time
from types import SimpleNamespace

import pytest
from tqdm.auto import tqdm

from tvr_convbench.bench.progress import SweepProgress


class Terminal(io.StringIO):
    """A stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outcome(status: str, line: str) -> SimpleNamespace:
    return SimpleNamespace(status=status, line=line)


def frames(text: str) -> list[str]:
    """What the bar showed, frame by frame (tqdm redraws its line after a carriage return)."""
    return [f.strip() for f in re.split(r"[\r\n]", text) if f.strip().startswith("sweep ")]


def test_the_bar_shows_k_of_n_counts_and_an_eta_and_lines_go_above_it() -> None:
    out, err, clock = Terminal(), Terminal(), Clock()
    progress = SweepProgress("smoke", out=out, err=err, clock=clock, tick=None).start(4, already_done=1)
    assert frames(out.getvalue())[-1].endswith("1/4 runs, 0 done, 0 failed, 1 skipped | 0:00 elapsed, ETA ?")
    clock.now += 10
    progress.finished(outcome("done", "meanp-s1: best val t2v R@1 33.1 at step 20"))
    assert frames(out.getvalue())[-1].endswith("2/4 runs, 1 done, 0 failed, 1 skipped | 0:10 elapsed, ETA 0:20")
    # the bar's line is cleared, the status line written on it, then the bar redrawn under it
    assert re.search(r"\r *\r\[2/4\] meanp-s1: best val t2v R@1 33\.1 at step 20\n\rsweep smoke", out.getvalue())
    clock.now += 15  # no run finished meanwhile: the ETA counts down
    assert progress.status().endswith("0:25 elapsed, ETA 0:05")
    progress.finished(outcome("failed", "seqtransf-s0: FAILED (RuntimeError: boom)"))
    assert err.getvalue() == "[3/4] seqtransf-s0: FAILED (RuntimeError: boom)\n"
    assert frames(out.getvalue())[-1].endswith("3/4 runs, 1 done, 1 failed, 1 skipped | 0:25 elapsed, ETA 0:12")
    clock.now += 5
    progress.finished(outcome("diverged", "xpool-s1: diverged at optimizer step 7"))
    progress.close()
    last = frames(out.getvalue())[-1]
    assert last.startswith("sweep smoke") and last.endswith(
        "4/4 runs, 1 done, 1 diverged, 1 failed, 1 skipped | 0:30 elapsed, finished"
    )
    assert out.getvalue().endswith("\n")
    progress.close()  # idempotent


def test_with_parallel_workers_the_eta_uses_the_wall_time_per_finished_run() -> None:
    out, clock = Terminal(), Clock()
    progress = SweepProgress("default", out=out, err=out, clock=clock, tick=None).start(6)
    clock.now += 60  # two workers finish their first runs together
    progress.finished(outcome("done", "a-s0: ok"))
    progress.finished(outcome("done", "b-s0: ok"))
    assert progress.eta() == pytest.approx(4 * 60 / 2)
    assert frames(out.getvalue())[-1].endswith("2/6 runs, 2 done, 0 failed, 0 skipped | 1:00 elapsed, ETA 2:00")
    assert [line for line in out.getvalue().splitlines() if line.startswith("[")] == [
        "[1/6] a-s0: ok",
        "[2/6] b-s0: ok",
    ]
    progress.close()


def test_quiet_when_stdout_is_not_a_terminal() -> None:
    out, err, clock = io.StringIO(), io.StringIO(), Clock()
    with SweepProgress("smoke", out=out, err=err, clock=clock).start(3, already_done=1) as progress:
        clock.now += 5
        progress.finished(outcome("done", "meanp-s1: best val t2v R@1 30.0 at step 20"))
        progress.finished(outcome("failed", "seqtransf-s0: FAILED (boom)"))
        assert progress.bar is None
    assert out.getvalue() == "[2/3] meanp-s1: best val t2v R@1 30.0 at step 20\n"  # no bar, no carriage return
    assert err.getvalue() == "[3/3] seqtransf-s0: FAILED (boom)\n"


def test_skipped_runs_and_other_lines_go_through_it_too() -> None:
    out, clock = Terminal(), Clock()
    with SweepProgress("smoke", out=out, err=out, clock=clock, tick=None).start(3) as progress:
        progress.finished(outcome("skipped", "meanp-s0: done, skipped"))
        progress.write("targets (post hoc): 50% 12.00")
        clock.now += 4
        progress.finished(outcome("done", "meanp-s1: ok"))
        assert progress.eta() == pytest.approx(4.0)  # one run in 4 s, one left; the skipped one took no time
    lines = [line.strip("\r ") for line in re.split(r"\n", out.getvalue())]
    assert "[1/3] meanp-s0: done, skipped" in lines[0] and "targets (post hoc): 50% 12.00" in lines[1]
    assert "[2/3] meanp-s1: ok" in lines[2]


def test_no_progress_draws_no_bar_in_a_terminal_either() -> None:
    out = Terminal()
    with SweepProgress("smoke", enabled=False, out=out, err=out).start(1) as progress:
        progress.finished(outcome("done", "meanp-s0: ok"))
    assert out.getvalue() == "[1/1] meanp-s0: ok\n"


def test_the_trainers_per_run_bar_takes_the_next_line_and_leaves_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's bar as ``Run._progress_bar`` makes it (stderr, ``leave=False``, no position): it is drawn on
    the line under the outer bar and cleared when its run ends, the outer bar staying."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = SweepProgress("smoke", out=terminal, err=terminal, tick=None).start(2)
    run_bar = tqdm(total=20, desc="meanp-s0", leave=False, dynamic_ncols=True, disable=None)
    assert abs(run_bar.pos) == 1 and abs(progress.bar.pos) == 0
    run_bar.update(20)
    run_bar.close()
    progress.finished(outcome("done", "meanp-s0: ok"))
    progress.close()
    text = terminal.getvalue()
    assert "meanp-s0:" in text.split("[1/2] meanp-s0: ok")[0]  # the run's bar was drawn before its status line
    assert frames(text)[-1].split(" | ")[0].endswith("1/2 runs, 1 done, 0 failed, 0 skipped")


def test_the_elapsed_time_ticks_between_finished_runs() -> None:
    out, clock = Terminal(), Clock()
    progress = SweepProgress("smoke", out=out, err=out, clock=clock, tick=0.01).start(2)
    clock.now += 7
    deadline = time.monotonic() + 5
    while "0:07 elapsed" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.close()
    assert "0:07 elapsed, ETA ?" in out.getvalue()
