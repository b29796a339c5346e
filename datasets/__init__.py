"""Data: the synthetic DiDeMo proxy (the offline default) and real DiDeMo (annotations, videos, CLIP features).

Datasets register lazily: a name maps to the module defining it, imported only when that dataset is used (real
DiDeMo pulls in ``transformers`` and PyAV, which the proxy does not need).
"""

from __future__ import annotations

import importlib

from datasets.base import DATASETS, RetrievalDataModule
from methods.registry import UnknownNameError, suggest

DATASET_MODULES = {"proxy": "datasets.proxy", "didemo": "datasets.didemo_module"}


def dataset_class(name: str) -> type[RetrievalDataModule]:
    """The data module registered as ``name`` (imports its module on first use)."""
    if name not in DATASET_MODULES:
        valid = ", ".join(sorted(DATASET_MODULES))
        raise UnknownNameError(f"unknown dataset {name!r}{suggest(name, DATASET_MODULES)} (valid: {valid})")
    importlib.import_module(DATASET_MODULES[name])
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return sorted(DATASET_MODULES)
