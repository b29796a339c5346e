"""Retrieval methods behind one contract (``tvr_convbench.methods.base.RetrievalMethod``), resolved by name.

    from tvr_convbench.methods import build_method, list_methods
    method = build_method("glscl", width=512, max_frames=64, max_words=64)

Each module in this package registers its classes with ``@register_method(name, **preset)``; a preset fixes
constructor arguments, so one class can back several names (``meanp`` and ``seqtransf`` are one CLIP4Clip class
with a different ``header``). Every module here is imported on package import (shared pieces live in
``tvr_convbench.methods.parts``), so a new method file needs no other edit to be registered and contract-tested.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from tvr_convbench.core.errors import RegistryError, UnknownNameError
from tvr_convbench.core.registry import Registry, check_kwargs, init_parameters
from tvr_convbench.methods.base import CostClass, RetrievalMethod

HARNESS_ARGS = ("width", "max_frames", "max_words")
"""constructor arguments the harness fills from the data (never set in a config)"""


@dataclass(frozen=True)
class MethodEntry:
    cls: type[RetrievalMethod]
    preset: dict[str, Any] = field(default_factory=dict)


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(name: str, **preset: Any):
    """Class decorator: register ``cls`` under ``name``, with ``preset`` constructor arguments fixed."""

    def decorator(cls: type[RetrievalMethod]) -> type[RetrievalMethod]:
        check_kwargs(cls, preset, f"register_method({name!r})")
        METHODS.register(name)(MethodEntry(cls, dict(preset)))
        return cls

    return decorator


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def method_parameters(name: str) -> dict:
    """The configurable constructor parameters of method ``name`` (its config schema): ``{key: inspect.Parameter}``."""
    entry = METHODS.get(name)
    params = init_parameters(entry.cls)
    return {k: p for k, p in params.items() if k not in HARNESS_ARGS and k not in entry.preset}


def build_method(name: str, **config: Any) -> RetrievalMethod:
    """Instantiate method ``name``; ``config`` holds the harness dims plus any method-specific overrides."""
    entry = METHODS.get(name)
    for key in config:
        if key in entry.preset:
            raise UnknownNameError(f"method {name!r}: {key!r} is fixed to {entry.preset[key]!r} by this method name")
    check_kwargs(entry.cls, config, f"method {name!r}")
    method = entry.cls(**entry.preset, **config)
    method.method_name = name
    return method


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "registry", "parts") and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = [
    "CostClass",
    "METHODS",
    "RegistryError",
    "RetrievalMethod",
    "UnknownNameError",
    "build_method",
    "list_methods",
    "method_parameters",
    "register_method",
]
