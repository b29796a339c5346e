"""Data: the synthetic DiDeMo proxy (the offline default) and real DiDeMo (annotations, videos, CLIP features).

One registry (``DATASETS``): each data module registers with ``@register_dataset(name)`` where it is defined, and
every module of this package is imported on package import, so a new dataset needs no other edit. Heavy
dependencies stay lazy inside their modules (``transformers`` is imported only when CLIP is loaded).
"""

from __future__ import annotations

import importlib
import pkgutil

from tvr_convbench.datasets.base import DATASETS, RetrievalDataModule, register_dataset


def dataset_class(name: str) -> type[RetrievalDataModule]:
    """The data module registered as ``name`` (``UnknownNameError`` with suggestions otherwise)."""
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = ["DATASETS", "RetrievalDataModule", "dataset_class", "list_datasets", "register_dataset"]
