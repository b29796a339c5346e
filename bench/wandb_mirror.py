"""Mirror of the run log to Weights & Biases. Optional by design: a wandb failure (no network, a bad key, a crash
inside wandb) prints one warning and turns the mirror off; the run and its local log go on untouched.

- one wandb run per harness run: ``group`` = method label (dashboards band seeds per method), ``job_type`` = sweep,
  tags = dataset and regime, the resolved run config as the wandb config;
- every row carries the explicit axes ``step`` (optimizer steps) and ``train_seconds`` (evaluation excluded);
  every metric is defined against ``step`` by name (no glob precedence surprises), so any of the two can be chosen
  as the x axis in the UI;
- mode ``auto``: ``WANDB_MODE`` when set, else online when an account is configured (``WANDB_API_KEY`` or a netrc
  entry for api.wandb.ai), else offline (runs land in ``runs/<sweep>/wandb/``; ``wandb sync`` uploads them later);
- a resumed run reuses its wandb id (kept in ``<run>/wandb_id``), first replays the local rows up to its
  checkpoint (``replay``), then logs on. A process killed with SIGKILL can leave nothing in wandb (measured, wandb
  0.31 offline: the killed process's ``.wandb`` file held only its 7-byte header), so the newest offline folder of
  a run holds its whole history and is the one to ``wandb sync`` (each process writes its own
  ``offline-run-*-<id>`` folder; wandb does not merge such folders reliably, wandb#3841, #5865). Rows that did
  reach wandb appear twice with the same ``step`` and (on CPU) the same value: keep the last row per step. No row
  passes wandb's own ``step=``, so a resume never hits "step must only increase";
- ``WANDB_INIT_TIMEOUT`` (seconds, default 30) bounds how long an unreachable server can hold up a run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tvr_convbench.core.files import atomic_write_text


def resolve_mode(mode: str) -> str:
    """The effective wandb mode for a configured ``mode`` (see the module docstring)."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if _has_account() else "offline"


def _has_account() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandbMirror:
    """Best-effort wandb logging for one run. All public methods are safe to call when disabled."""

    def __init__(self) -> None:
        self.run = None
        self.defined: set[str] = set()

    @property
    def active(self) -> bool:
        return self.run is not None

    def start(self, run_dir: Path, wandb_root: Path, cfg: Any, tags: list[str], mode: str) -> None:
        mode = resolve_mode(mode)
        if mode == "disabled":
            return
        run_id = _run_id(run_dir)
        try:
            import wandb

            wandb_root.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=cfg.run,
                id=run_id,
                resume="allow",
                group=cfg.label,
                job_type=cfg.sweep,
                tags=tags,
                config=cfg.to_dict(),
                dir=str(wandb_root),  # wandb writes <wandb_root>/wandb/offline-run-*
                mode=mode,
                reinit="create_new",
                settings=wandb.Settings(init_timeout=_init_timeout(), silent=True, console="off"),
            )
            self._call("define_metric", "step")
            self._call("define_metric", "train_seconds", step_metric="step")
        except Exception as err:  # noqa: BLE001 - wandb must never kill a run
            self._disable(f"wandb init failed ({type(err).__name__}: {err}); continuing with the local run log only")

    def log(self, step: int, train_seconds: float, metrics: dict[str, float]) -> None:
        """Log one row (``metrics`` keys are full names such as ``val/t2v/R@1``)."""
        if not self.active:
            return
        for name in metrics:
            if name not in self.defined:
                self.defined.add(name)
                self._call("define_metric", name, step_metric="step")
        self._call("log", {"step": step, "train_seconds": train_seconds, **metrics})

    def replay(self, rows: Iterable[tuple[int, float, str, str, float]]) -> None:
        """Log local run-log rows ``(step, train_seconds, split, metric, value)`` again, one wandb row per step and
        kind (training / evaluation) in their first order, as the trainer logged them (``split/metric`` keys)."""
        groups: dict[tuple[int, bool], tuple[float, dict[str, float]]] = {}
        for step, seconds, split, metric, value in rows:
            groups.setdefault((step, split == "train"), (seconds, {}))[1][f"{split}/{metric}"] = value
        for (step, _), (seconds, metrics) in groups.items():
            self.log(step, seconds, metrics)

    def summary(self, values: dict[str, Any]) -> None:
        if self.active:
            try:
                self.run.summary.update(values)
            except Exception as err:  # noqa: BLE001
                self._disable(f"wandb summary failed ({type(err).__name__}: {err})")

    def log_table(self, key: str, frame: Any) -> None:
        """Log a pandas DataFrame as a wandb Table."""
        if not self.active:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame)})
        except Exception as err:  # noqa: BLE001
            self._disable(f"wandb table failed ({type(err).__name__}: {err})")

    def finish(self, exit_code: int = 0) -> None:
        if self.active:
            run, self.run = self.run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"wandb finish failed ({type(err).__name__}: {err})", stacklevel=2)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        try:
            getattr(self.run, name)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._disable(f"wandb {name} failed ({type(err).__name__}: {err}); continuing with the local run log only")

    def _disable(self, message: str) -> None:
        warnings.warn(message, stacklevel=3)
        run, self.run = self.run, None
        if run is not None:
            with contextlib.suppress(Exception):  # already failing; the warning above says so
                run.finish(exit_code=1)


def _init_timeout() -> float:
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT", "30"))
    except ValueError:
        return 30.0


def _run_id(run_dir: Path) -> str:
    """The wandb id of this harness run, created once and kept next to it (so resumes continue the same run).
    Under ``wandb agent`` (``WANDB_SWEEP_ID`` set) the agent's ``WANDB_RUN_ID`` wins, so the sweep sees its run."""
    path = run_dir / "wandb_id"
    agent_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
    if path.exists() and not agent_id:
        return path.read_text().strip()
    run_id = agent_id or secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id
