"""``tvr-convbench config SWEEP [--set ...]``: the fully resolved sweep, like LightningCLI's ``--print_config``.

Every trainer, data, report and wandb field with its value, and every method's constructor arguments, each line
commented with its default (when the value differs from it) and its one-line doc. The output is YAML: saved to a
file, it loads back as the same sweep.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import yaml

from tvr_convbench.bench.config import MethodSpec, SweepConfig
from tvr_convbench.bench.typed import argument_docs, field_docs
from tvr_convbench.datasets import dataset_class
from tvr_convbench.methods import METHODS, method_parameters

Entry = tuple[str, Any, Any, str]
"""(key, value, default, doc); default ``inspect.Parameter.empty`` when there is none"""


def render_config(sweep: SweepConfig) -> str:
    """The resolved sweep as commented YAML."""
    lines = [f"# {sweep.name}: resolved from {sweep.source} (value  # default if different | doc)"]
    lines += [f"name: {_scalar(sweep.name)}", f"seeds: {_scalar(sweep.seeds)}"]
    sections = ("trainer", "wandb", "report", "targets", "tuning", "slurm")
    for key in sections:
        lines += _section(key, dataclass_entries(getattr(sweep, key)))
    lines += _section("data", data_entries(sweep.data))
    lines.append("methods:")
    for spec in sweep.methods:
        lines += method_lines(spec)
    return "\n".join(lines) + "\n"


def dataclass_entries(section: Any) -> list[Entry]:
    docs = field_docs(type(section))
    return [
        (f.name, getattr(section, f.name), _default(f), docs.get(f.name, ""))
        for f in dataclasses.fields(section)
        if f.init
    ]


def data_entries(data: dict) -> list[Entry]:
    cls = dataset_class(data["name"])
    params = cls.config_parameters()
    docs = {**argument_docs(cls), **_settings_docs(cls)}
    entries = [("name", data["name"], inspect.Parameter.empty, f"registered dataset ({cls.__name__})")]
    return entries + [(k, data.get(k, p.default), p.default, docs.get(k, "")) for k, p in params.items()]


def method_lines(spec: MethodSpec) -> list[str]:
    entry = METHODS.get(spec.method)
    docs = argument_docs(entry.cls)
    args = [
        (k, spec.args.get(k, p.default), p.default, docs.get(k, "")) for k, p in method_parameters(spec.method).items()
    ]
    lines = [f"  - label: {_scalar(spec.label)}", f"    method: {_scalar(spec.method)}  # {entry.cls.__name__}"]
    lines += [f"    {line}" for line in _section("args", args)]
    if spec.trainer:
        lines.append(f"    trainer: {_scalar(spec.trainer)}  # per-method override: breaks the one-protocol rule")
    return lines


def _section(key: str, entries: list[Entry]) -> list[str]:
    return [f"{key}:", *(f"  {_line(entry)}" for entry in entries)]


def _line(entry: Entry) -> str:
    key, value, default, doc = entry
    notes = []
    if default is not inspect.Parameter.empty and _plain(default) != _plain(value):
        notes.append(f"default {_scalar(default)}")
    if doc:
        notes.append(doc)
    comment = f"  # {' | '.join(notes)}" if notes else ""
    return f"{key}: {_scalar(value)}{comment}"


def _scalar(value: Any) -> str:
    """One-line YAML of a value (flow style)."""
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def _settings_docs(cls: type) -> dict[str, str]:
    """Attribute docs of a data module's settings dataclass, when its knobs live in one (the proxy's)."""
    settings = getattr(cls, "settings_class", None)
    return field_docs(settings) if settings is not None else {}
