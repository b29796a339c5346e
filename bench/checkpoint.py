"""The resume point of a run: model, optimizer, step, both clocks and every RNG state, in one ``last.ckpt``.

NumPy's RNG state is stored as plain lists, so ``torch.load(weights_only=True)`` reads the file. Because the data
position follows from the step (``tvr_convbench.datasets.order``), restoring this state resumes a run
bit-identically on CPU.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tvr_convbench.core.files import atomic_write


def rng_state() -> dict:
    """The Python, NumPy and torch RNG states (NumPy's as plain lists)."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, model: nn.Module, optimizer: Any, clock: dict, step: int) -> None:
    """Write the resume point atomically (a failed save, e.g. a full disk, leaves the previous one intact)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "clock": clock,
        "rng": rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


class DamagedCheckpoint(ValueError):
    """A resume point that cannot be read (truncated, empty, not a checkpoint): one line naming the file."""


def read_checkpoint(path: Path) -> dict:
    """The state saved at ``path``, fully read and checked before anything is restored from it; an unreadable file
    (empty, truncated, random bytes, not a checkpoint of this harness) is a ``DamagedCheckpoint``."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(state, dict) or not {"model", "optimizer", "step", "clock", "rng"} <= set(state):
            raise ValueError("not a checkpoint of this harness")
        if not isinstance(state["step"], int) or isinstance(state["step"], bool) or state["step"] < 0:
            raise ValueError(f"its step is {state['step']!r}")
        return state
    except Exception as err:  # noqa: BLE001 - torch.load raises anything from EOFError to zipfile errors
        raise DamagedCheckpoint(f"{path}: unreadable checkpoint ({_why(path, err)})") from None


def _why(path: Path, err: Exception) -> str:
    """The reason in a few words: torch's texts span lines and suggest ``weights_only=False``, never an option."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
    except OSError:
        pass
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = lines[0] if lines else ""
    if isinstance(err, pickle.UnpicklingError) or len(detail) > 160:
        detail = "not a torch checkpoint" if isinstance(err, pickle.UnpicklingError) else detail[:157] + "..."
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


def load_checkpoint(state: dict, model: nn.Module, optimizer: Any) -> tuple[int, dict]:
    """Restore model, optimizer and RNG states from a read checkpoint; returns (step, clock)."""
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state["step"], dict(state["clock"])
