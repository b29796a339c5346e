"""Typed configuration: dataclasses hold every default, YAML files hold only overrides.

A sweep file (``bench/configs/sweeps/<name>.yaml``) looks like::

    methods: all                      # or a list: [glscl, {method: glscl, label: glscl-global, args: {score: global}}]
    seeds: [0, 1, 2]
    data: {name: proxy, val_videos: 300}
    trainer: {max_steps: 600, val_every: 60}
    overrides:                        # per-method (by label) method args and/or trainer settings
      xpool: {args: {dropout: 0.4}}
    report: {targets: [0.5, 0.8, 0.9, 0.95]}

Every key is checked against its dataclass or constructor signature: an unknown key, a wrong type, a bad value,
an empty method list or colliding seeds raise ``ConfigError`` with one line naming the file and the key (the CLI
prints it and exits with code 2 before anything is written).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tvr_convbench.core.errors import ConfigError, RegistryError
from tvr_convbench.core.registry import suggest

SWEEPS_DIR = Path(__file__).parent / "configs" / "sweeps"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- YAML ----------------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``) and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 - PyYAML signature
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: Path) -> dict:
    """Parse a YAML mapping, with file-named errors."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # ReaderError spans two lines
        raise ConfigError(f"{path}:{where} malformed YAML ({problem})") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# --- type checking -------------------------------------------------------------------------------------------
def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation (ints are accepted for floats); return the typed value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        item = args[0] if args else Any
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where)
    return _coerce_scalar(value, annotation, where)


def _coerce_union(value: Any, args: tuple, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, where)
        except ConfigError as err:
            errors.append(str(err).split(": ", 1)[-1])
    raise ConfigError(f"{where}: {'; '.join(errors)}")


def _coerce_scalar(value: Any, annotation: Any, where: str) -> Any:
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {_describe(value)}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {_describe(value)}")
    return value


def _type_name(annotation: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(annotation, getattr(annotation, "__name__", "?"))


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) else type(value).__name__


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping of overrides (unknown keys and wrong types raise)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(str(key), fields)} (valid: {', '.join(fields)})")
    values = {key: coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def check_signature(params: dict[str, inspect.Parameter], data: dict, where: str, hints: dict) -> dict:
    """Check keyword arguments against a constructor's parameters (the method/dataset config schema)."""
    out = {}
    for key, value in data.items():
        if key not in params:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(str(key), params)} (valid: {', '.join(params)})")
        out[key] = coerce(value, hints.get(key, Any), f"{where}.{key}")
    return out


# --- the configs ---------------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    """The training protocol shared by every run of a sweep."""

    max_steps: int = 600
    """optimizer-step budget (the schedule's total steps)"""
    val_every: int = 60
    """validate on the whole val split every this many optimizer steps (and at step 0 and at the end)"""
    batch_size: int = 32
    """global batch (summed over processes)"""
    lr: float = 1e-4
    """learning rate of the method's new modules"""
    backbone_lr: float = 1e-7
    """learning rate of the backbone (CLIP, or the proxy's adapter) and of a learnable logit scale"""
    optimizer: Literal["bertadam", "adamw"] = "bertadam"
    schedule: Literal["warmup_cosine", "constant"] = "warmup_cosine"
    warmup: float = 0.1
    """warmup fraction of max_steps"""
    weight_decay: float = 0.2
    grad_clip: float = 1.0
    """global gradient-norm clip (0 disables)"""
    eval_batch_size: int = 256
    """items per encoding batch during evaluation"""
    eval_block: int = 256
    """texts x videos per similarity block during evaluation (a method may cap it lower)"""
    eval_test: bool = False
    """also evaluate the test split at every evaluation (only the val-selected step is reported)"""
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    """where a run trains (``auto``: a GPU when one is visible); timings are only comparable on one accelerator"""
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    """Lightning precision of the training step (``16-mixed``: the clean AMP alternative to the official fp16 CLIP)"""
    strategy: Literal["auto", "ddp"] = "auto"
    devices: int = 1
    """processes for ``strategy: ddp`` (CPU: gloo; GPU: one per device)"""
    num_threads: int = 0
    """torch intra-op threads per process (0: torch's default)"""
    keep_checkpoint: bool = False
    """keep last.ckpt after a run finishes (it is always kept while a run is unfinished)"""

    def __post_init__(self) -> None:
        for key in ("max_steps", "val_every", "batch_size", "eval_batch_size", "eval_block", "devices"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("lr", "backbone_lr", "weight_decay", "grad_clip", "num_threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must not be negative, got {getattr(self, key)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by devices {self.devices}")


@dataclass
class WandbConfig:
    """The wandb mirror (the local run log is the source of truth)."""

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when an account is configured (WANDB_API_KEY or a wandb login), else offline; WANDB_MODE wins"""
    project: str = "tvr-convbench"
    entity: str | None = None


@dataclass
class MethodSpec:
    """One line of a sweep: a registered method, its label (run names, report legends) and its overrides."""

    method: str
    label: str = ""
    args: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    """trainer overrides for this method only (breaks the one-protocol rule: reports flag it)"""

    def __post_init__(self) -> None:
        self.label = self.label or self.method
        if not NAME_PATTERN.match(self.label):
            raise ValueError(f"label {self.label!r} must match {NAME_PATTERN.pattern}")


@dataclass
class RunConfig:
    """Everything one run needs; written as ``config.yaml`` next to its results."""

    sweep: str
    run: str
    label: str
    method: str
    method_args: dict
    seed: int
    data: dict
    trainer: TrainerConfig
    wandb: WandbConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SweepConfig:
    """A resolved sweep: methods x seeds on one protocol."""

    name: str
    methods: list[MethodSpec]
    seeds: list[int]
    data: dict
    trainer: TrainerConfig
    wandb: WandbConfig
    report: dict
    source: str = ""

    def runs(self) -> list[RunConfig]:
        """Every (method, seed) run, method-major."""
        return [self.run_config(spec, seed) for spec in self.methods for seed in self.seeds]

    def run_config(self, spec: MethodSpec, seed: int) -> RunConfig:
        trainer = dataclasses.replace(self.trainer, **spec.trainer) if spec.trainer else self.trainer
        return RunConfig(
            sweep=self.name,
            run=f"{spec.label}-s{seed}",
            label=spec.label,
            method=spec.method,
            method_args=dict(spec.args),
            seed=seed,
            data=dict(self.data),
            trainer=trainer,
            wandb=self.wandb,
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


SWEEP_KEYS = ("name", "methods", "seeds", "data", "trainer", "wandb", "overrides", "report")


def resolve_sweep_path(name_or_path: str) -> Path:
    """A sweep file: an existing path, or the name of a shipped sweep (``bench/configs/sweeps/<name>.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.is_file():
            raise ConfigError(f"sweep file {name_or_path!r} does not exist")
        return path
    shipped = shipped_sweeps()
    if name_or_path not in shipped:
        hint = suggest(name_or_path, shipped)
        raise ConfigError(f"unknown sweep {name_or_path!r}{hint} (shipped: {', '.join(shipped)}; or give a path)")
    return SWEEPS_DIR / f"{name_or_path}.yaml"


def shipped_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``--set dotted.key=value`` overrides (values parsed as YAML) to a raw config mapping."""
    out = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. trainer.max_steps=200")
        try:
            value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        node, parts = out, key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a mapping")
            node[part] = node = dict(child)
        node[parts[-1]] = value
    return out


def load_sweep(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Load, validate and resolve a sweep file (methods and data are checked against their registries).

    ``overrides`` are ``dotted.key=value`` strings (the CLI's ``--set``) applied before validation.
    """
    path = resolve_sweep_path(name_or_path)
    raw = apply_overrides(load_yaml(path), overrides)
    where = f"{path} (with --set {' '.join(overrides)})" if overrides else str(path)
    for key in raw:
        if key not in SWEEP_KEYS:
            raise ConfigError(
                f"{where}: unknown key {key!r}{suggest(str(key), SWEEP_KEYS)} (valid: {', '.join(SWEEP_KEYS)})"
            )
    name = coerce(raw.get("name", path.stem), str, f"{where}: name")
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: name {name!r} must be a plain name ({NAME_PATTERN.pattern}), no path separators")
    trainer = from_mapping(TrainerConfig, raw.get("trainer", {}), f"{where}: trainer")
    wandb = from_mapping(WandbConfig, raw.get("wandb", {}), f"{where}: wandb")
    methods = _methods(raw, where)
    sweep = SweepConfig(
        name=name,
        methods=methods,
        seeds=_seeds(raw, where),
        data=_data(raw.get("data", {}), where),
        trainer=trainer,
        wandb=wandb,
        report=coerce(raw.get("report", {}), dict, f"{where}: report"),
        source=where,
    )
    _check_methods(sweep, where)
    return sweep


def _seeds(raw: dict, where: str) -> list[int]:
    seeds = coerce(raw.get("seeds", [0]), list[int], f"{where}: seeds")
    if not seeds:
        raise ConfigError(f"{where}: seeds is empty")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise ConfigError(f"{where}: seeds collide: {duplicates} listed more than once")
    out_of_range = sorted({s for s in seeds if not 0 <= s < 2**32})
    if out_of_range:
        raise ConfigError(f"{where}: seeds must be in [0, 2**32) (NumPy and Lightning seeds), got {out_of_range}")
    return seeds


def _methods(raw: dict, where: str) -> list[MethodSpec]:
    from tvr_convbench.methods import list_methods

    entries = raw.get("methods")
    if entries is None or entries == []:
        raise ConfigError(
            f"{where}: methods is empty (list method names, or 'all'; registered: {', '.join(list_methods())})"
        )
    if entries == "all":
        entries = [m for m in list_methods() if m != "random"]
    entries = coerce(entries, list, f"{where}: methods")
    specs = [_method_spec(e, f"{where}: methods[{i}]") for i, e in enumerate(entries)]
    overrides = coerce(raw.get("overrides", {}), dict, f"{where}: overrides")
    specs = [_apply_override(s, overrides.get(s.label), f"{where}: overrides.{s.label}") for s in specs]
    unknown = set(overrides) - {s.label for s in specs}
    if unknown:
        labels = [s.label for s in specs]
        first = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: overrides.{first} matches no method label{suggest(first, labels)} ({', '.join(labels)})"
        )
    labels = [s.label for s in specs]
    duplicates = sorted({lab for lab in labels if labels.count(lab) > 1})
    if duplicates:
        raise ConfigError(f"{where}: method labels collide: {duplicates} (give each entry a distinct 'label')")
    return specs


def _method_spec(entry: Any, where: str) -> MethodSpec:
    if isinstance(entry, str):
        entry = {"method": entry}
    return from_mapping(MethodSpec, entry, where)


def _apply_override(spec: MethodSpec, override: Any, where: str) -> MethodSpec:
    if override is None:
        return spec
    extra = from_mapping(_Override, override, where)
    return dataclasses.replace(spec, args={**spec.args, **extra.args}, trainer={**spec.trainer, **extra.trainer})


@dataclass
class _Override:
    args: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)


def _data(data: Any, where: str) -> dict:
    data = dict(coerce(data, dict, f"{where}: data"))
    data.setdefault("name", "proxy")
    return data


def _check_methods(sweep: SweepConfig, where: str) -> None:
    """Validate every method's args and trainer overrides, and the data section, against their schemas."""
    for i, spec in enumerate(sweep.methods):
        validate_method_args(spec.method, spec.args, f"{where}: methods[{i}] ({spec.label}).args")
        if spec.trainer:
            merged = {**dataclasses.asdict(sweep.trainer), **spec.trainer}
            from_mapping(TrainerConfig, merged, f"{where}: methods[{i}] ({spec.label}).trainer")
    sweep.data = validate_data(sweep.data, f"{where}: data")


def validate_method_args(method: str, args: dict, where: str) -> dict:
    from tvr_convbench.methods import METHODS, method_parameters

    try:
        params = method_parameters(method)
    except RegistryError as err:
        raise ConfigError(f"{where.rsplit('.', 1)[0]}: {err}") from None
    hints = typing.get_type_hints(METHODS.get(method).cls.__init__)
    return check_signature(params, args, where, hints)


def validate_data(data: dict, where: str) -> dict:
    """Check the ``data`` section against the dataset's constructor signature; returns it resolved (defaults filled
    in, so the run log records every knob and a changed default is detected as a changed config)."""
    from tvr_convbench.datasets import dataset_class

    try:
        cls = dataset_class(coerce(data.get("name"), str, f"{where}.name"))
    except RegistryError as err:
        raise ConfigError(f"{where}.name: {err}") from None
    kwargs = {k: v for k, v in data.items() if k != "name"}
    params = cls.config_parameters()
    typed = check_signature(params, kwargs, where, {k: p.annotation for k, p in params.items()})
    try:
        cls(**typed)  # constructors validate values (sizes, paths) without loading anything
    except (ValueError, OSError) as err:
        raise ConfigError(f"{where}: {err}") from None
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {"name": data["name"], **defaults, **typed}  # resolved: every knob recorded with the run
