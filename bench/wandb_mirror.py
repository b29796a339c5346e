"""Mirror of the run log to Weights & Biases. Optional by design: a wandb failure (no network, a bad key, a crash
inside wandb) prints one warning and turns the mirror off; the run and its local log go on untouched.

- one wandb run per harness run, always: ``group`` = ``<sweep>/<label>`` (dashboards band seeds per method within
  one protocol, so syncing two sweeps into one project never averages them together; a reference run, which fixes
  the targets and is never scored, bands in ``<sweep>/<label>/reference``, a tuning trial's seeds in
  ``<sweep>/<label>/t<k>``), ``job_type`` = the phase (``scored``, ``tuning``, ``reference``), tags =
  ``dataset:``, ``regime:``, ``seed:``, ``method:`` (the registered method, for filtering across sweeps) and
  ``sweep:``; the resolved run config as the wandb config;
- every row carries the explicit axes ``step`` (optimizer steps) and ``train_seconds`` (evaluation excluded);
  every metric is defined against ``step`` by name (no glob precedence surprises), so any of the two can be chosen
  as the x axis in the UI;
- mode ``auto``: ``WANDB_MODE`` when set, else online when an account is configured (``WANDB_API_KEY`` or a netrc
  entry for the wandb host), else offline (runs land in ``runs/<sweep>/wandb/``; ``wandb sync`` uploads them);
- online without a network (``sweep_mode``): before the first online ``wandb.init`` of a sweep a short probe
  (``TVR_CONVBENCH_WANDB_PROBE_TIMEOUT`` seconds, default 5) asks the wandb server for any answer; when none comes,
  or when an online init fails anyway, the rest of the sweep mirrors offline, with one warning. The decision is
  kept per sweep folder for this process and, through ``TVR_CONVBENCH_WANDB_OFFLINE``, for the processes it starts
  afterwards (``--jobs``); so no run waits for ``WANDB_INIT_TIMEOUT`` (default 30 s) more than once, and every
  harness run calls ``wandb.init`` once while it trains;
- a resumed run reuses its wandb id (kept in ``<run>/wandb_id``), first replays the local rows up to its
  checkpoint (``replay``), then logs on. A process killed with SIGKILL can leave nothing in wandb (measured, wandb
  0.31 offline: the killed process's ``.wandb`` file held only its 7-byte header), which is why it replays. Rows
  that did reach wandb appear twice with the same ``step`` and (on CPU) the same value: keep the last row per
  step. No row passes wandb's own ``step=``, so a resume never hits "step must only increase";
- summaries known only after a run (time to target, selected step: ``write_run_summary``) go into the run's own
  record, never a second one. wandb 0.31 writes one ``offline-run-<time>-<id>`` folder per ``wandb.init``, also
  for a resume of the same id (measured), so for a record that is still only on this disk (offline, never
  synced) the summary writer rebuilds it: one new offline folder from the local run log (the source of truth:
  every row, the same id, group, tags, job type and config) plus the summaries, then removes the folders it
  replaces. Online, or once a record was synced, it resumes the same id and adds only the summaries (the server
  merges them). What a user syncs: exactly one unsynced folder per harness run (``wandb sync runs/<sweep>/wandb``).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tvr_convbench.core.files import atomic_write_json, atomic_write_text

DEFAULT_BASE_URL = "https://api.wandb.ai"
FALLBACK_ENV = "TVR_CONVBENCH_WANDB_OFFLINE"
"""``os.pathsep``-joined sweep folders whose online mirror fell back to offline (inherited by child processes)"""
PROBE_TIMEOUT_ENV = "TVR_CONVBENCH_WANDB_PROBE_TIMEOUT"
SUMMARY_FILE = "wandb_summary.json"
"""beside a run's ``wandb_id``: the summary values last written into its wandb record, and which record"""
RESULTS_ID_FILE = "wandb_results_id"
"""in the sweep folder: the wandb id of the sweep's ``<sweep>-results`` run"""
RECORD = re.compile(r"^(offline-)?run-(\d{8}_\d{6})-(.+)$")

_decisions: dict[str, str] = {}
"""sweep folder -> "online" / "offline": the network decision of this process"""


# --- mode --------------------------------------------------------------------------------------------------------
def resolve_mode(mode: str) -> str:
    """The configured wandb mode for ``mode`` (see the module docstring), before any network check."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if _has_account() else "offline"


def sweep_mode(mode: str, wandb_root: Path) -> str:
    """The mode the runs of the sweep in ``wandb_root`` mirror in: ``resolve_mode``, and offline once the wandb
    server proved unreachable for this sweep (a probe before the first online init, or a failed init; one warning).

    The sweep runner may call it once before it starts worker processes, so they inherit the decision."""
    mode = resolve_mode(mode)
    if mode != "online":
        return mode
    key = _key(wandb_root)
    if key in os.environ.get(FALLBACK_ENV, "").split(os.pathsep):
        return "offline"
    if key not in _decisions:
        reason = probe_server()
        if reason is None:
            _decisions[key] = "online"
        else:
            fall_back(wandb_root, f"no answer from the wandb server {base_url()} within the probe ({reason})")
    return _decisions[key]


def fall_back(wandb_root: Path, reason: str) -> None:
    """Mirror the rest of the sweep in ``wandb_root`` offline (warned once per sweep and process)."""
    key = _key(wandb_root)
    if _decisions.get(key) == "offline":
        return
    _decisions[key] = "offline"
    folders = [p for p in os.environ.get(FALLBACK_ENV, "").split(os.pathsep) if p]
    os.environ[FALLBACK_ENV] = os.pathsep.join([*folders, key])
    where = Path(key) / "wandb"
    warnings.warn(
        f"wandb: {reason}; the rest of this sweep mirrors offline (`wandb sync {where}` uploads it later)",
        stacklevel=3,
    )


def probe_server(timeout: float | None = None) -> str | None:
    """None when the wandb server answers at all (any HTTP status), else why not (no network, refused, timeout)."""
    timeout = _seconds(PROBE_TIMEOUT_ENV, 5.0) if timeout is None else timeout
    try:
        with urllib.request.urlopen(urllib.request.Request(base_url(), method="HEAD"), timeout=timeout):  # noqa: S310
            return None
    except urllib.error.HTTPError:
        return None  # an answer: the server is there
    except (urllib.error.URLError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {getattr(err, 'reason', err)}"


def base_url() -> str:
    """The wandb server: ``WANDB_BASE_URL``, else the ``base_url`` of wandb's settings file, else the cloud."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url.rstrip("/")
    folder = Path(os.environ.get("WANDB_CONFIG_DIR", Path.home() / ".config" / "wandb"))
    parser = configparser.ConfigParser()
    with contextlib.suppress(OSError, configparser.Error):
        parser.read(folder / "settings")
    return parser.get("default", "base_url", fallback=DEFAULT_BASE_URL).rstrip("/")


def _has_account() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        text = netrc.read_text()
    except OSError:
        return False
    host = urllib.parse.urlparse(base_url()).hostname or "api.wandb.ai"
    return "api.wandb.ai" in text or host in text


def _key(wandb_root: Path) -> str:
    return str(Path(wandb_root).resolve())


# --- names -------------------------------------------------------------------------------------------------------
def run_group(cfg: Any) -> str:
    """``<sweep>/<label>``: one band per method entry and protocol; a reference run bands in
    ``<sweep>/<label>/reference``, a tuning run with the other seeds of its trial in ``<sweep>/<label>/t<k>``
    (never with the scored seeds, which ran another setting)."""
    group, phase = f"{cfg.sweep}/{cfg.label}", getattr(cfg, "phase", "scored")
    if phase == "tuning":
        return f"{group}/t{cfg.trial}"
    return group + "/reference" if phase == "reference" else group


def run_tags(cfg: Any, extra: Iterable[str] = ()) -> list[str]:
    """The run's tags: ``extra`` first, then dataset, regime, seed, method, sweep (and phase for a reference run),
    without duplicates."""
    data = cfg.data or {}
    tags = [
        *extra,
        f"dataset:{data.get('name', '?')}",
        f"regime:{data.get('regime', 'frozen')}",
        f"seed:{cfg.seed}",
        f"method:{cfg.method}",
        f"sweep:{cfg.sweep}",
    ]
    if getattr(cfg, "phase", "scored") != "scored":
        tags.append(f"phase:{cfg.phase}")
    return list(dict.fromkeys(tags))


# --- the mirror of one run -----------------------------------------------------------------------------------------
class WandbMirror:
    """Best-effort wandb logging for one run. All public methods are safe to call when disabled."""

    def __init__(self) -> None:
        self.run = None
        self.defined: set[str] = set()
        self.run_dir: Path | None = None
        self.written: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return self.run is not None

    def start(self, run_dir: Path, wandb_root: Path, cfg: Any, tags: list[str], mode: str) -> None:
        """Open (or resume) the wandb run of ``cfg`` (one ``wandb.init``); on failure warn once and stay off."""
        mode = sweep_mode(mode, wandb_root)
        if mode == "disabled":
            return
        self.run_dir = Path(run_dir)
        try:
            self.run = init_record(wandb_root, _run_id(run_dir), mode, **record_fields(cfg, tags))
            self._define("step")
            self._call("define_metric", "train_seconds", step_metric="step")
        except Exception as err:  # noqa: BLE001 - wandb must never kill a run
            message = f"wandb init failed ({type(err).__name__}: {err}); continuing with the local run log only"
            self.run = None
            if mode == "online":  # one warning, and the rest of the sweep goes offline: no run waits again
                fall_back(wandb_root, f"{message} for {cfg.run}")
            else:
                self._disable(message)

    def log(self, step: int, train_seconds: float, metrics: dict[str, float]) -> None:
        """Log one row (``metrics`` keys are full names such as ``val/t2v/R@1``)."""
        if not self.active:
            return
        for name in metrics:
            self._define(name)
        self._call("log", {"step": step, "train_seconds": train_seconds, **metrics})

    def replay(self, rows: Iterable[tuple[int, float, str, str, float]]) -> None:
        """Log local run-log rows ``(step, train_seconds, split, metric, value)`` again, one wandb row per step and
        kind (training / evaluation) in their first order, as the trainer logged them (``split/metric`` keys)."""
        for step, seconds, metrics in grouped_rows(rows):
            self.log(step, seconds, metrics)

    def summary(self, values: dict[str, Any]) -> None:
        """Set summary values of this run's record (e.g. ``best/*``, and ``target/*`` when the targets are known
        before the run ends: then no summary writer has to touch the record again at sweep end)."""
        if self.active:
            try:
                self.run.summary.update(_json_values(values))
                self.written.update(values)
            except Exception as err:  # noqa: BLE001
                self._disable(f"wandb summary failed ({type(err).__name__}: {err})")

    def log_table(self, key: str, frame: Any) -> None:
        """Put a pandas DataFrame into the run's summary as a wandb Table (a summary value, not a history row:
        wandb's terminal viewer plots a logged table's ``ncols``/``nrows`` as metrics, a summary table it lists)."""
        if not self.active:
            return
        try:
            import wandb

            self.run.summary[key] = wandb.Table(dataframe=table_frame(frame))
        except Exception as err:  # noqa: BLE001
            self._disable(f"wandb table failed ({type(err).__name__}: {err})")

    def finish(self, exit_code: int = 0) -> None:
        if self.active:
            run, self.run = self.run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"wandb finish failed ({type(err).__name__}: {err})", stacklevel=2)
                return
            if self.written and self.run_dir is not None:
                _write_summary_file(self.run_dir, self.written, record_name(run))

    def _define(self, name: str) -> None:
        if name not in self.defined:
            self.defined.add(name)
            if name == "step":
                self._call("define_metric", "step")
            else:
                self._call("define_metric", name, step_metric="step")

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


def record_fields(cfg: Any, tags: Iterable[str] = ()) -> dict[str, Any]:
    """The identity of a harness run's wandb record (the same for its training and any later summary write)."""
    return {
        "project": cfg.wandb.project,
        "entity": cfg.wandb.entity,
        "name": cfg.run,
        "group": run_group(cfg),
        "job_type": cfg.phase,
        "tags": run_tags(cfg, tags),
        "config": cfg.to_dict(),
    }


def init_record(wandb_root: Path, run_id: str, mode: str, *, rebuild: bool = False, **fields: Any):  # noqa: ANN201
    """``wandb.init`` of one record in ``<wandb_root>/wandb/`` (``fields``: ``record_fields``). ``rebuild``: a
    record written after the fact (from the local run log, or summaries only): no system metrics of this process
    in it."""
    import wandb

    Path(wandb_root).mkdir(parents=True, exist_ok=True)
    settings = {"init_timeout": _seconds("WANDB_INIT_TIMEOUT", 30.0), "silent": True, "console": "off"}
    if rebuild:
        settings |= {"x_disable_stats": True, "x_save_requirements": False}
    return wandb.init(
        id=run_id,
        resume="allow",
        dir=str(wandb_root),  # wandb writes <wandb_root>/wandb/offline-run-*
        mode=mode,
        reinit="create_new",
        settings=wandb.Settings(**settings),
        **fields,
    )


def record_name(run: Any) -> str:
    """The folder a wandb run writes (``offline-run-<time>-<id>`` or ``run-<time>-<id>``), or ``""``."""
    with contextlib.suppress(Exception):
        return Path(run.settings.sync_dir).name
    return ""


# --- summaries written after a run ---------------------------------------------------------------------------------
def records(wandb_root: Path, run_id: str) -> list[Path]:
    """Every local folder of the wandb record ``run_id`` under ``<wandb_root>/wandb/``, oldest first."""
    folder = Path(wandb_root) / "wandb"
    found = [p for p in folder.glob(f"*run-*-{run_id}") if (m := RECORD.match(p.name)) and m.group(3) == run_id]
    return sorted(found, key=lambda p: RECORD.match(p.name).group(2))


def is_offline(folder: Path) -> bool:
    return folder.name.startswith("offline-run-")


def is_synced(folder: Path) -> bool:
    """Whether ``wandb sync`` uploaded this folder (it leaves ``run-<id>.wandb.synced`` beside the log)."""
    return any(folder.glob("*.wandb.synced"))


def write_run_summary(
    run_dir: Path,
    wandb_root: Path,
    cfg: Any,
    values: dict[str, Any],
    rows: Iterable[tuple[int, float, str, str, float]] | None = None,
    tags: Iterable[str] = (),
) -> str:
    """Write ``values`` (computed by the caller: time to target, best, selected step, ...) into the run's own wandb
    record, keeping one record and one unsynced folder per harness run. Never raises; a failure warns.

    Args:
        run_dir: the run's folder (its ``wandb_id`` names the record).
        wandb_root: the ``dir`` of the run's ``wandb.init`` (the sweep folder).
        cfg: the run's ``RunConfig`` (group, tags, job type and config of the record).
        values: summary key -> value (None for a value that does not exist, e.g. a target never reached).
        rows: the run's local log as ``(step, train_seconds, split, metric, value)``, needed only when the record
            is rebuilt (default: read from ``<run>/metrics.csv``).
        tags: extra tags, as the trainer gave them.

    Returns:
        ``"unchanged"`` (these values are in the record already), ``"rebuilt"`` (one new folder written from the
        local run log, the replaced unsynced ones removed), ``"resumed"`` (the same id, summaries only: the record
        is online or was synced), ``"disabled"`` or ``"failed"``.
    """
    run_dir, wandb_root = Path(run_dir), Path(wandb_root)
    mode = "disabled"
    try:
        mode = sweep_mode(cfg.wandb.mode, wandb_root)
        if mode == "disabled":
            return "disabled"
        run_id = _run_id(run_dir)
        folders = records(wandb_root, run_id)
        if _already_written(run_dir, values, folders):
            _drop_superseded(run_dir, folders)
            return "unchanged"

        def fill(run: Any, rebuilt: bool) -> None:
            extra: dict[str, Any] = {}
            if rebuilt:
                log = list(read_rows(run_dir) if rows is None else rows)
                _replay_into(run, log)
                extra = _best(log)
            run.summary.update(_json_values({**extra, **values}))

        status = (run_dir / "status").read_text().strip() if (run_dir / "status").exists() else "done"
        how, run = write_record(wandb_root, run_id, mode, record_fields(cfg, tags), fill, 0 if status == "done" else 1)
        _write_summary_file(run_dir, values, record_name(run))
        return how
    except Exception as err:  # noqa: BLE001 - a summary must never fail a sweep
        message = f"wandb summary of {cfg.run} not written ({type(err).__name__}: {err})"
        if mode == "online":  # likely the server: the rest of the sweep goes offline, one warning
            fall_back(wandb_root, message)
        else:
            warnings.warn(message, stacklevel=2)
        return "failed"


def write_record(
    wandb_root: Path, run_id: str, mode: str, fields: dict[str, Any], fill: Any, exit_code: int = 0
) -> tuple[str, Any]:
    """Open the record ``run_id`` once, let ``fill(run, rebuilt)`` write into it, finish it, and keep one local
    folder for it: a record only on this disk (offline folders never synced, or none) is rebuilt
    (``rebuilt=True``: ``fill`` writes everything) and the folders it replaces are removed after the new one is
    finished; a record already on the server (online, or synced) is resumed (``rebuilt=False``: ``fill`` adds).
    Returns ``("rebuilt" | "resumed", the finished run)``; raises what ``fill`` or wandb raises (then the old
    folders stay and a half-written new one is removed)."""
    old = records(wandb_root, run_id)
    remote = any(not is_offline(f) or is_synced(f) for f in old)
    _after_second_of(old)  # a folder name has one-second resolution: never reopen an old folder's log
    run = init_record(wandb_root, run_id, mode, rebuild=True, **fields)
    try:
        fill(run, not remote)
    except BaseException:
        with contextlib.suppress(Exception):
            run.finish(exit_code=1)
        partial = Path(wandb_root) / "wandb" / record_name(run) if record_name(run) else None
        if partial is not None and partial.is_dir() and is_offline(partial) and partial not in old:
            shutil.rmtree(partial, ignore_errors=True)  # the half-written record goes; the old one stays
        raise
    run.finish(exit_code=exit_code)
    new = record_name(run)
    if not remote and new and (Path(wandb_root) / "wandb" / new).is_dir():
        for folder in old:
            if folder.name != new and is_offline(folder) and not is_synced(folder):
                shutil.rmtree(folder, ignore_errors=True)
    return ("resumed" if remote else "rebuilt"), run


def _replay_into(run: Any, rows: list[tuple[int, float, str, str, float]]) -> None:
    """The local rows into an open wandb run, as the trainer logged them (raises what wandb raises)."""
    run.define_metric("step")
    run.define_metric("train_seconds", step_metric="step")
    defined: set[str] = set()
    for step, seconds, metrics in grouped_rows(rows):
        for name in metrics.keys() - defined:
            run.define_metric(name, step_metric="step")
        defined |= metrics.keys()
        run.log({"step": step, "train_seconds": seconds, **metrics})


def grouped_rows(rows: Iterable[tuple[int, float, str, str, float]]) -> list[tuple[int, float, dict[str, float]]]:
    """Run-log rows ``(step, train_seconds, split, metric, value)`` as the trainer's wandb rows: one per step and
    kind (training / evaluation), in their first order, keys ``split/metric``."""
    groups: dict[tuple[int, bool], tuple[float, dict[str, float]]] = {}
    for step, seconds, split, metric, value in rows:
        groups.setdefault((step, split == "train"), (seconds, {}))[1][f"{split}/{metric}"] = value
    return [(step, seconds, metrics) for (step, _), (seconds, metrics) in groups.items()]


def read_rows(run_dir: Path) -> list[tuple[int, float, str, str, float]]:
    """``(step, train_seconds, split, metric, value)`` of every row of ``<run>/metrics.csv`` (empty when absent)."""
    import csv

    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [(int(r["step"]), float(r["train_seconds"]), r["split"], r["metric"], float(r["value"])) for r in reader]


def _best(rows: list[tuple[int, float, str, str, float]]) -> dict[str, Any]:
    """The trainer's own summary (``best/val/t2v/R@1``, ``best/step``) recomputed from the run log."""
    best = (-math.inf, 0)
    for step, _, split, metric, value in rows:
        if split == "val" and metric == "t2v/R@1" and value > best[0]:
            best = (value, step)
    return {"best/val/t2v/R@1": best[0], "best/step": best[1]} if math.isfinite(best[0]) else {}


def _after_second_of(folders: list[Path]) -> None:
    stamps = [RECORD.match(f.name).group(2) for f in folders]
    while stamps and time.strftime("%Y%m%d_%H%M%S") <= max(stamps):
        time.sleep(0.2)


def _already_written(run_dir: Path, values: dict, folders: list[Path]) -> bool:
    path = Path(run_dir) / SUMMARY_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    record = saved.get("record", "")
    present = {f.name for f in folders}
    if record and present and record not in present:
        return False  # its folder is gone and others are there (cleaned after a sync is fine: no folder at all)
    old = saved.get("values", {})
    return all(_same(old.get(k, _MISSING), v) for k, v in _json_values(values).items())


def _drop_superseded(run_dir: Path, folders: list[Path]) -> None:
    """Remove the unsynced offline folders older than the one the summaries went into: the processes of a resumed
    run each left one, and the newest holds the whole history (a resumed run replays its rows first)."""
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((Path(run_dir) / SUMMARY_FILE).read_text()).get("record", "")
        keep = RECORD.match(record)
        for folder in folders if keep else ():
            older = RECORD.match(folder.name).group(2) < keep.group(2)
            if older and is_offline(folder) and not is_synced(folder):
                shutil.rmtree(folder, ignore_errors=True)


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _write_summary_file(run_dir: Path, values: dict, record: str) -> None:
    with contextlib.suppress(OSError):
        atomic_write_json(Path(run_dir) / SUMMARY_FILE, {"record": record, "values": _json_values(values)})


def _json_values(values: dict[str, Any]) -> dict[str, Any]:
    """Summary values wandb stores as JSON: non-finite numbers (a target never reached) become None, numpy scalars
    plain numbers."""
    out = {}
    for key, value in values.items():
        if hasattr(value, "item") and not isinstance(value, str):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def table_frame(frame: Any) -> Any:
    """A DataFrame ready for ``wandb.Table``: infinities (censored times) and NaN as empty cells."""
    import numpy as np

    clean = frame.replace([np.inf, -np.inf], np.nan)
    return clean.astype(object).where(clean.notna(), None)


# --- ids -----------------------------------------------------------------------------------------------------------
def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _run_id(run_dir: Path) -> str:
    """The wandb id of this harness run, created once and kept next to it (so resumes continue the same run).
    Under ``wandb agent`` (``WANDB_SWEEP_ID`` set) the agent's ``WANDB_RUN_ID`` wins, so the sweep sees its run."""
    path = Path(run_dir) / "wandb_id"
    agent_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
    if path.exists() and not agent_id:
        return path.read_text().strip()
    run_id = agent_id or secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id


def stored_id(path: Path) -> str:
    """A wandb id kept in ``path`` (created on first use), e.g. the sweep's results run."""
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id
