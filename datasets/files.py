"""Atomic file writes, used by every writer of the project (run logs, reports, caches, feature stores).

A file is written to a private temporary name in its own folder (``.<name>.<random>.tmp``), flushed to disk and
renamed into place with ``os.replace``: a reader, a resumed run or a crash never sees a half-written file. A writer
killed before the rename leaves only its temporary file, which ``bench.runlog.remove_stale_temporaries`` deletes.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON (sorted keys, UTF-8), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
