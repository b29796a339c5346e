"""Where a sweep is: one status line per finished run, and in a terminal an outer bar with run k/N, the done /
failed / skipped counts and an ETA from the runs finished so far.

In a terminal (stdout is a TTY and progress is on)::

    sweep smoke ███████████████▌     3/4 runs, 2 done, 0 failed, 1 skipped | 0:41 elapsed, ETA 0:20

The trainer's per-run bar (``tqdm(leave=False)``, no ``position``) takes the next free line under it and is
cleared when its run ends; every status line is written above the bars (``tqdm.write``), so nothing is torn. With
``--jobs N`` the workers draw no bars; the outer bar still moves at every finished run. The ETA is the remaining
runs times the wall time per finished run so far (so it accounts for parallel workers; skipped runs do not
count), counted down between finishes. When stdout is not a terminal (CI logs, ``| tee``) there is no bar and no
carriage return: only the status lines, each prefixed with ``[k/N]``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

FORMAT = "{desc} {bar} {n_fmt}/{total_fmt} runs{postfix}"
"""the outer bar (tqdm writes the postfix as ", <status>")"""


class SweepProgress:
    """The progress of one sweep. ``start`` once, ``finished`` per run outcome (``done`` / ``diverged`` /
    ``failed`` / ``skipped``, with its one-line ``line``), ``close`` at the end (also on an error; idempotent)."""

    def __init__(
        self,
        name: str,
        enabled: bool = True,
        out: TextIO | None = None,
        err: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: float | None = 1.0,
    ) -> None:
        """
        Args:
            name: the sweep's name (the bar's label).
            enabled: draw the bar at all (``--no-progress`` turns it off; the status lines stay).
            out: where the bar and the status lines go (default: ``sys.stdout`` at ``start``).
            err: where the lines of failed runs go (default: ``sys.stderr`` at ``start``).
            clock: seconds, monotonic (tests pass a fake one).
            tick: seconds between redraws of the elapsed time and ETA while no run finishes (None: only at
                events).
        """
        self.name = name
        self.enabled = enabled
        self.out, self.err = out, err
        self.clock = clock
        self.tick = tick
        self.total = 0
        self.counts = {"done": 0, "diverged": 0, "failed": 0, "skipped": 0}
        self.bar: Any = None
        self._start = 0.0
        self._last = 0.0
        self._estimate: float | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- events ------------------------------------------------------------------------------------------------
    def start(self, total: int, already_done: int = 0) -> SweepProgress:
        """Begin a sweep of ``total`` runs of which ``already_done`` were finished before (their lines are the
        caller's)."""
        self.out = self.out or sys.stdout
        self.err = self.err or sys.stderr
        self.total = total
        self.counts["skipped"] = already_done
        self._start = self._last = self.clock()
        if self.enabled and _is_terminal(self.out) and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                initial=already_done,
                desc=f"sweep {self.name}",
                file=self.out,
                bar_format=FORMAT,
                dynamic_ncols=True,
                leave=True,
                position=0,
            )
            self._render()
            if self.tick:
                self._ticker = threading.Thread(target=self._tick, name="sweep-progress", daemon=True)
                self._ticker.start()
        return self

    def finished(self, outcome: Any) -> Any:
        """One run's outcome (``.status``: done / diverged / failed / skipped; ``.line``): its status line (stderr
        for a failed run), the counts and the ETA. Returns it."""
        status = outcome.status if outcome.status in self.counts else "done"
        self.counts[status] += 1
        now = self.clock()
        if status != "skipped":
            self._last = now
            runs = self.finished_count - self.counts["skipped"]
            self._estimate = self.remaining * (now - self._start) / runs if runs else None
        line = f"[{self.finished_count}/{self.total}] {outcome.line}"
        self.write(line, error=status == "failed")
        if self.bar is not None:
            self.bar.update(1)
            self._render()
        return outcome

    def write(self, line: str, error: bool = False) -> None:
        """Any other line of the sweep (e.g. the targets once fixed), above the bar like the status lines."""
        stream = self.err if error else self.out
        if self.bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(line, file=stream)
        else:
            print(line, file=stream or (sys.stderr if error else sys.stdout), flush=True)

    def close(self) -> None:
        """Stop the ticker and leave the bar's last state on screen (then a newline)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        if self.bar is not None:
            self._render()
            self.bar.close()
            self.bar = None

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the bar shows --------------------------------------------------------------------------------------
    @property
    def finished_count(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return max(self.total - self.finished_count, 0)

    def eta(self) -> float | None:
        """Seconds left: the estimate at the last finished run, counted down since (None before any run)."""
        if self.remaining == 0:
            return 0.0
        if self._estimate is None:
            return None
        return max(self._estimate - (self.clock() - self._last), 0.0)

    def status(self) -> str:
        """``2 done, 0 failed, 1 skipped | 0:41 elapsed, ETA 0:20`` (the bar shows ``3/4 runs`` before it; a
        diverged run, a censored result, is counted when there is one)."""
        c = self.counts
        diverged = f", {c['diverged']} diverged" if c["diverged"] else ""
        eta = self.eta()
        when = "ETA ?" if eta is None else ("finished" if self.remaining == 0 else f"ETA {_clock(eta)}")
        elapsed = _clock(self.clock() - self._start)
        return f"{c['done']} done{diverged}, {c['failed']} failed, {c['skipped']} skipped | {elapsed} elapsed, {when}"

    def _render(self) -> None:
        bar = self.bar
        if bar is not None:
            bar.set_postfix_str(self.status(), refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self._render()
            except Exception:  # noqa: BLE001 - a redraw must never break the sweep
                return


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
