"""Atomic file writes and output-folder checks, used by every writer of the project (run logs, reports, caches,
feature stores, the benchmark).

A file is written to a private temporary name in its own folder (``.<name>.<random>.tmp``), flushed to disk and
renamed into place with ``os.replace``: a reader, a resumed run or a crash never sees a half-written file. A writer
killed before the rename leaves only its temporary file, which ``remove_stale_temporaries`` deletes when the run
starts again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tvr_convbench.core.errors import ConfigError, OutputError

MIN_FREE_BYTES = 64 * 2**20
"""free space a run needs before it starts (checkpoints, logs)"""


def temporary_beside(path: Path) -> Path:
    """A new, empty, private temporary file in ``path``'s folder (created, so the name is ours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file into place (``mkstemp`` makes it private: give it the usual 0644 first)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then move it onto ``path``; on any error nothing is left."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'ed before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 1) -> None:
    """Pretty JSON (sorted keys, UTF-8), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float spelled ``"inf"``, ``"-inf"`` or ``"nan"`` (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def from_json_safe(value: Any) -> Any:
    """The inverse of ``json_safe``: ``"inf"``, ``"-inf"`` and ``"nan"`` read back as floats."""
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def atomic_write_yaml(path: str | Path, data: dict) -> None:
    """YAML in the mapping's own key order, written atomically."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp*``) a killed writer left in ``folder``; returns them."""
    stale = sorted(folder.glob(".*.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_writable(folder: Path, min_free: int = MIN_FREE_BYTES, leave_nothing: bool = False) -> None:
    """Raise ``OutputError`` unless ``folder`` has ``min_free`` bytes free and can be created and written.

    The free space is checked first, on the nearest existing ancestor, so a full disk leaves nothing behind. With
    ``leave_nothing`` the folders the check had to create are removed again (a preflight check that must not write
    anything when a later check fails).
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise OutputError(f"{folder}: only {free / 2**20:.0f} MiB free, need {min_free / 2**20:.0f} MiB")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    probe = folder / f".write-probe.tmp{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{folder}: not writable ({err.strerror or err})") from None
    finally:
        if leave_nothing:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()


def move_aside(*paths: Path) -> list[Path]:
    """Rename each existing file to ``<name>.damaged-<n>`` beside it (never deleted, never overwritten); returns
    the new paths."""
    moved = []
    for path in paths:
        if not path.exists():
            continue
        n = 1
        while (target := path.with_name(f"{path.name}.damaged-{n}")).exists():
            n += 1
        os.replace(path, target)
        moved.append(target)
    return moved


_HELD: dict[str, int] = {}
"""lock files this process holds (real path -> nesting depth): ``folder_lock`` is reentrant within a process"""


def _holder(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _locked_error(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path.parent}: another {what} is running on this folder (PID {_holder(path)})")


def check_unlocked(path: Path, what: str) -> None:
    """Raise the one-line ``ConfigError`` of ``folder_lock`` when another process holds the lock on ``path`` now;
    writes nothing (a lock file that is absent, or left by a dead process, passes)."""
    if os.path.realpath(path) in _HELD:
        return
    try:
        handle = open(path)  # noqa: SIM115 - closed below
    except OSError:
        return  # no lock file (or no folder): nobody holds it
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked_error(path, what) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def folder_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an OS file lock on ``path`` (its folder's one ``what``: a sweep, a run) for the ``with`` block.

    The lock is released on any exit, and by the OS when the holder dies, so a lock file left by a killed process
    never blocks; another process gets a one-line ``ConfigError`` naming the holder's PID (written in the file).
    Reentrant within one process (the sweep runner checks a run folder under the lock its trainer takes again).
    """
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    except OSError as err:
        raise OutputError(f"{path.parent}: not writable ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked_error(path, what) from None
        except OSError as err:  # e.g. a file system without locks
            raise OutputError(f"{path}: cannot be locked ({err.strerror or err})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        handle.close()  # closing releases the lock
