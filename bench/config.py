"""Typed configuration: dataclasses hold every default, YAML files hold only overrides.

A sweep file (``bench/configs/sweeps/<name>.yaml``) looks like::

    methods: all                      # or a list: [glscl, {method: glscl, label: glscl-global, args: {score: global}}]
    seeds: [0, 1, 2]
    data: {name: proxy, val_videos: 300}
    trainer: {max_steps: 600, val_every: 60}
    overrides:                        # per-method (by label) method args and/or trainer settings
      xpool: {args: {dropout: 0.4}}
    report: {targets: [0.5, 0.8, 0.9, 0.95]}

Every key of every section (``report`` included) is checked by one engine (``bench.typed``) against its dataclass or
constructor signature when the sweep is loaded: an unknown key, a wrong type, a bad value, an empty method list or
colliding seeds raise ``ConfigError`` with one line naming the file and the key (the CLI prints it and exits with
code 2 before anything is written).

A saved ``sweep.yaml`` / ``config.yaml`` is read back only through ``SweepConfig.from_dict`` /
``RunConfig.from_dict`` (the sweep compatibility check, the wandb mirror, the exports and the analysis), which type-
check every section again and fill in defaults added since the file was written.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tvr_convbench.bench.export import SlurmConfig
from tvr_convbench.bench.tuning import TuningConfig, check_official
from tvr_convbench.bench.typed import YamlLoader, check_signature, coerce, from_mapping, load_yaml
from tvr_convbench.core.errors import ConfigError, RegistryError
from tvr_convbench.core.registry import suggest
from tvr_convbench.core.schema import METRIC_NAMES

SWEEPS_DIR = Path(__file__).parent / "configs" / "sweeps"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- the configs ---------------------------------------------------------------------------------------------
@dataclass
class ValSchedule:
    """When the whole val split is evaluated, the same for every method of a sweep (step 0 and the last step are
    always added): ``every`` (each ``trainer.val_every`` steps), ``geometric`` (``first``, then each step
    ``factor`` times the previous one, rounded, never the same step twice: dense where the curves rise) or
    ``steps`` (an explicit list)."""

    kind: Literal["every", "geometric", "steps"] = "every"
    """how the evaluation steps are laid out"""
    first: int = 10
    """geometric: the first evaluation step after step 0"""
    factor: float = 1.1
    """geometric: the ratio of consecutive evaluation steps (above 1): a crossing is resolved to about
    ``factor - 1`` of its own step count"""
    steps: tuple[int, ...] = ()
    """steps: the evaluation steps (each in 1..max_steps)"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.first < 1:
            raise ValueError(f"val_schedule.first must be positive, got {self.first}")
        if not self.factor > 1.0:
            raise ValueError(f"val_schedule.factor must be above 1, got {self.factor}")
        if self.kind == "steps" and not self.steps:
            raise ValueError("val_schedule.steps is empty (kind: steps needs a list of evaluation steps)")
        if any(s < 1 for s in self.steps) or len(set(self.steps)) != len(self.steps):
            raise ValueError(f"val_schedule.steps must be distinct positive steps, got {list(self.steps)}")
        if self.steps and self.kind != "steps":
            raise ValueError(f"val_schedule.steps is set but kind is {self.kind!r} (it would be ignored): kind: steps")

    def steps_within(self, max_steps: int, val_every: int) -> tuple[int, ...]:
        """The evaluation steps of a ``max_steps`` run: ascending, no duplicates, step 0 and the last included."""
        if self.kind == "every":
            inner = set(range(0, max_steps + 1, val_every))
        elif self.kind == "geometric":
            inner = set(_geometric(self.first, self.factor, max_steps))
        else:
            inner = {s for s in self.steps if s <= max_steps}
        return tuple(sorted({0, *inner, max_steps}))


def _geometric(first: int, factor: float, stop: int) -> list[int]:
    out, step = [], first
    while step <= stop:
        out.append(step)
        step = max(step + 1, round(step * factor))
    return out


@dataclass
class TrainerConfig:
    """The training protocol shared by every run of a sweep."""

    max_steps: int = 600
    """optimizer-step budget (the schedule's total steps)"""
    val_every: int = 60
    """validate on the whole val split every this many optimizer steps (and at step 0 and at the end), unless
    ``val_schedule`` says otherwise"""
    val_schedule: ValSchedule = field(default_factory=ValSchedule)
    """when to evaluate (``every``: each ``val_every`` steps; ``geometric``; or an explicit list of ``steps``)"""
    batch_size: int = 32
    """global batch (summed over processes)"""
    lr: float = 1e-4
    """learning rate of the method's new modules"""
    backbone_lr: float = 1e-7
    """learning rate of the backbone (CLIP, or the proxy's adapter) and of a learnable logit scale"""
    optimizer: Literal["bertadam", "adamw"] = "bertadam"
    """BertAdam (no bias correction, the CLIP4Clip family's) or torch AdamW"""
    schedule: Literal["warmup_cosine", "constant"] = "warmup_cosine"
    """learning-rate schedule over max_steps"""
    warmup: float = 0.1
    """warmup fraction of max_steps"""
    weight_decay: float = 0.2
    """decoupled weight decay (biases excluded)"""
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
    """``ddp``: one run over several processes (``devices``)"""
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

    def eval_steps(self) -> tuple[int, ...]:
        """The optimizer steps after which the whole val split is evaluated (``val_schedule``): ascending, no
        duplicates, step 0 and the last step included. The one rule the trainer, the analysis and the benchmark
        all use."""
        return self.val_schedule.steps_within(self.max_steps, self.val_every)

    def schedule_text(self) -> str:
        """The evaluation grid in words, for reports."""
        steps, schedule = self.eval_steps(), self.val_schedule
        how = {
            "every": f"every {self.val_every} optimizer steps",
            "geometric": f"geometric from step {schedule.first} (factor {schedule.factor:g})",
            "steps": "at listed steps",
        }[schedule.kind]
        shown = ", ".join(map(str, steps)) if len(steps) <= 40 else f"{', '.join(map(str, steps[:20]))}, ..."
        return f"{len(steps)} evaluations, {how}, step 0 and step {self.max_steps} included: {shown}"


@dataclass
class WandbConfig:
    """The wandb mirror (the local run log is the source of truth)."""

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: online when an account is configured (WANDB_API_KEY or a wandb login), else offline; WANDB_MODE wins"""
    project: str = "tvr-convbench"
    """wandb project"""
    entity: str | None = None
    """wandb entity (user or team; None: the account's default)"""


Aggregate = Literal["iqm", "median"]
METRIC_PATTERN = re.compile(r"^(t2v|v2t)/(R@\d+|MdR|MnR)$")


def higher_is_better(metric: str) -> bool:
    """Recall (``R@K``) grows with quality; the rank metrics (``MdR``, ``MnR``) shrink."""
    return "/R@" in metric


@dataclass(frozen=True)
class ReportConfig:
    """What the convergence report measures and how (the ``report`` section of a sweep)."""

    metric: str = "t2v/R@1"
    """validation metric for model selection, targets, curves and AUC: one of the ten retrieval metrics"""
    aggregate: Aggregate = "iqm"
    """central statistic over seeds for curves, best value and AUC (time to target reports median and IQM)"""
    confidence: float = 0.95
    """coverage of the interval estimates, in (0, 1)"""
    bootstrap_reps: int = 10_000
    """bootstrap resamples per interval (at least 100)"""
    band_reps: int = 2_000
    """bootstrap resamples per point of the figures' curve bands (visual only; rliable uses 2,000 for profiles)"""
    bootstrap_seed: int = 0
    """seed of the bootstrap; every interval is a deterministic function of it, the data and the method label"""
    profile_max_ratio: float = 4.0
    """AlgoPerf's tau_max: ratios to the fastest above it are infinite, and the profile's score is its area over
    [1, tau_max] / (tau_max - 1) (AlgoPerf uses 4); above 1"""
    profile_points: int = 100
    """points of the tau grid the profile and its score are evaluated on (AlgoPerf uses 100; at least 2)"""
    curve_points: int = 50
    """points of the common train-seconds grid the metric curves are interpolated onto (at least 2)"""
    loss_window: int = 0
    """moving-average window (optimizer steps) of the training-loss figure; 0 = max_steps // 50"""
    dpi: int = 150
    """resolution of the PNG figures (at least 50)"""
    bench: str = "reports/bench/bench.json"
    """the ``make bench`` results whose train-step times at DiDeMo shapes project each method's steps to target
    onto DiDeMo (a projection, never mixed with the measured seconds; "" = none)"""

    def __post_init__(self) -> None:
        self._check_metric()
        self._check_numbers()

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None, where: str = "report") -> ReportConfig:
        """Build from a ``report`` mapping (None -> defaults) with the config engine (``ConfigError`` otherwise)."""
        return from_mapping(cls, dict(mapping or {}), where)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def _check_metric(self) -> None:
        if not METRIC_PATTERN.match(self.metric) or self.metric not in METRIC_NAMES:
            raise ValueError(f"ReportConfig.metric: expected one of {', '.join(METRIC_NAMES)}, got {self.metric!r}")

    def _check_numbers(self) -> None:
        checks = {
            "confidence": 0 < self.confidence < 1,
            "bootstrap_reps": self.bootstrap_reps >= 100,
            "band_reps": self.band_reps >= 100,
            "bootstrap_seed": self.bootstrap_seed >= 0,
            "profile_max_ratio": self.profile_max_ratio > 1,
            "curve_points": self.curve_points >= 2,
            "profile_points": self.profile_points >= 2,
            "loss_window": self.loss_window >= 0,
            "dpi": self.dpi >= 50,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ReportConfig.{name}: invalid value {getattr(self, name)!r}")


@dataclass(frozen=True)
class TargetsConfig:
    """How the targets are fixed: before any scored run, from reference runs on seeds that are never scored (or as
    absolute values), and written with their provenance to ``runs/<sweep>/targets.json``. Every target is one
    absolute value of the report metric shared by all methods. Without a ``targets`` section they are fixed post
    hoc, from the scored runs themselves, and the report says so."""

    source: Literal["reference", "tuning", "absolute", "posthoc"] = "posthoc"
    """``reference``: from the reference runs (every method of the sweep on ``seeds``), fixed before any scored run;
    ``tuning``: from the tuning trials (the ``tuning`` section), fixed before the selection and the scored runs;
    ``absolute``: ``values``; ``posthoc``: from the scored runs (they set their own finish line: flagged)"""
    seeds: tuple[int, ...] = ()
    """reference seeds: runs on them fix the targets and are never scored (disjoint from the sweep's seeds)"""
    rule: Literal["gain", "fraction"] = "gain"
    """``gain``: floor + f x (reference - floor), the floor being zero-shot meanP on the same data (common to every
    method); ``fraction``: f x reference"""
    reference: Literal["median_best", "best"] = "median_best"
    """the reference value: the highest over methods of the median over reference seeds of each run's best
    (``median_best``, AlgoPerf's rule) or the best of any reference run (``best``)"""
    fractions: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
    """the fractions f in (0, 1] that make the targets"""
    values: tuple[float, ...] = ()
    """``absolute``: the targets in metric units"""

    def __post_init__(self) -> None:
        for key in ("seeds", "fractions", "values"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if (
            not self.fractions
            or not all(0 < f <= 1 for f in self.fractions)
            or len(set(self.fractions)) < len(self.fractions)
        ):
            raise ValueError(f"fractions: need distinct fractions in (0, 1], got {list(self.fractions)}")
        if self.source == "absolute" and (not self.values or len(set(self.values)) < len(self.values)):
            raise ValueError(f"values: source 'absolute' needs distinct target values, got {list(self.values)}")
        if self.source == "reference" and not self.seeds:
            raise ValueError("seeds: source 'reference' needs reference seeds (never scored), e.g. seeds: [100]")
        if len(set(self.seeds)) < len(self.seeds) or any(not 0 <= s < 2**32 for s in self.seeds):
            raise ValueError(f"seeds: need distinct seeds in [0, 2**32), got {list(self.seeds)}")


@dataclass
class MethodSpec:
    """One line of a sweep: a registered method, its label (run names, report legends) and its overrides."""

    method: str
    """a registered method name (``tvr-convbench list``)"""
    label: str = ""
    """the name of this entry in run names and report legends (default: the method name)"""
    args: dict = field(default_factory=dict)
    """method constructor arguments (checked against the method's signature)"""
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
    phase: Literal["scored", "reference", "tuning"] = "scored"
    """``reference``/``tuning``: a run that fixes the targets (a tuning trial also competes for its method's
    setting) and is never scored"""
    trial: int | None = None
    """the tuning trial this run belongs to (its settings are in ``trainer``)"""

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: Any, where: str = "config.yaml") -> RunConfig:
        """A saved ``config.yaml`` read back, every section type-checked (``ConfigError`` naming the key)."""
        return from_mapping(cls, raw, where)

    @classmethod
    def from_file(cls, path: Path) -> RunConfig:
        return cls.from_dict(load_yaml(path), str(path))


@dataclass
class SweepConfig:
    """A resolved sweep: methods x seeds on one protocol."""

    name: str
    methods: list[MethodSpec]
    seeds: list[int]
    data: dict
    trainer: TrainerConfig
    wandb: WandbConfig
    report: ReportConfig = field(default_factory=ReportConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    study: str = ""
    """the multi-world sweep this one is the world of (its ``worlds`` expand into one sweep per world)"""
    source: str = ""

    def runs(self, selection: Any = None) -> list[RunConfig]:
        """Every run of the sweep: the reference runs (tuning trials, or reference seeds) first, then the scored
        runs (with tuning, only once ``selection`` says which setting each method scores with)."""
        return self.reference_runs() + self.scored_runs(selection)

    def scored_runs(self, selection: Any = None) -> list[RunConfig]:
        """Every (method, seed) run that enters the statistics, method-major; with tuning, each method at its
        selected setting (``bench.tuning.Selection``; none before the selection exists)."""
        if self.tuning.enabled and selection is None:
            return []
        settings = (lambda spec: selection.settings(spec.label)) if self.tuning.enabled else (lambda spec: {})
        return [self.run_config(spec, seed, settings=settings(spec)) for spec in self.methods for seed in self.seeds]

    def phases(self) -> list[tuple[str, list[str]]]:
        """The run names in the order the protocol runs them, known before anything ran: ``[(phase, names)]``,
        the reference (or tuning) runs first and the scored runs after the targets (and the selection) are fixed
        from them; one phase, ``scored``, when the targets are not fixed in advance. A scored run's name does not
        depend on its selected setting."""
        first = self.reference_runs()
        scored = [self.run_config(spec, seed).run for spec in self.methods for seed in self.seeds]
        return ([(first[0].phase, [cfg.run for cfg in first])] if first else []) + [("scored", scored)]

    def reference_runs(self) -> list[RunConfig]:
        """The runs that fix the targets and are never scored: the tuning trials, or every method on the
        reference seeds (none for absolute or post hoc targets)."""
        if self.tuning.enabled:
            return self.tuning_runs()
        if self.targets.source != "reference":
            return []
        return [self.run_config(spec, seed, "reference") for spec in self.methods for seed in self.targets.seeds]

    def tuning_runs(self) -> list[RunConfig]:
        """Every method x trial x tuning seed (the same trials for every method), named ``<label>-t<k>-s<seed>``."""
        trials = self.trials()
        return [
            self.run_config(spec, seed, "tuning", trial=k, settings=trial)
            for spec in self.methods
            for k, trial in enumerate(trials)
            for seed in self.tuning.seeds
        ]

    def trials(self) -> list[dict[str, float]]:
        """The tuning trials' settings (tied ones included), the same list for every method."""
        official = {key: getattr(self.trainer, key) for key in self.tuning.space}
        return self.tuning.trials(official)

    def run_config(
        self, spec: MethodSpec, seed: int, phase: str = "scored", trial: int | None = None, settings: dict | None = None
    ) -> RunConfig:
        name = f"{spec.label}-t{trial}-s{seed}" if trial is not None else f"{spec.label}-s{seed}"
        return RunConfig(
            phase=phase,
            trial=trial,
            sweep=self.name,
            run=name,
            label=spec.label,
            method=spec.method,
            method_args=dict(spec.args),
            seed=seed,
            data=dict(self.data),
            trainer=self.trainer_for(spec, settings),
            wandb=self.wandb,
        )

    def trainer_for(self, spec: MethodSpec, settings: dict | None = None) -> TrainerConfig:
        """The trainer settings of one method entry: the sweep's, with the entry's own overrides (if any) and a
        tuning trial's (or the selected) settings on top."""
        overrides = {**spec.trainer, **(settings or {})}
        if not overrides:
            return self.trainer
        merged = {**dataclasses.asdict(self.trainer), **overrides}
        return from_mapping(TrainerConfig, merged, f"{self.source}: methods ({spec.label}).trainer")

    def to_dict(self) -> dict:
        out = _plain(dataclasses.asdict(self))
        out.pop("source")
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "sweep.yaml") -> SweepConfig:
        """A saved, resolved ``sweep.yaml`` read back: every section type-checked, defaults filled in. Method and
        dataset names are not looked up (they were when the sweep was loaded), so an old run log stays readable."""
        raw = coerce(raw, dict, where)
        _check_keys(raw, RESOLVED_KEYS, where)
        entries = coerce(raw.get("methods"), list, f"{where}: methods")
        specs = [_method_spec(e, f"{where}: methods[{i}]") for i, e in enumerate(entries)]
        study = coerce(raw.get("study", ""), str, f"{where}: study")
        return cls(**_sections(raw, where, None), methods=_distinct_labels(specs, where), study=study, source=where)

    @classmethod
    def from_file(cls, path: Path) -> SweepConfig:
        return cls.from_dict(load_yaml(path), str(path))


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (YAML's safe dumper writes lists, not tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


SWEEP_KEYS = (
    "name", "methods", "seeds", "data", "trainer", "wandb", "overrides", "report", "targets", "slurm", "tuning",
    "worlds", "study",
)  # fmt: skip
"""keys of a sweep file (``worlds``: the proxy worlds a study runs, one sweep ``<name>-<world>`` each)"""
RESOLVED_KEYS = tuple(k for k in SWEEP_KEYS if k not in ("overrides", "worlds"))


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
            value = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
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


def load_sweeps(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> list[SweepConfig]:
    """Load a sweep file: one sweep, or with ``worlds`` one sweep per proxy world (``<name>-<world>``, its
    ``data.world`` set), all validated before anything runs."""
    path, raw, where = _raw_sweep(name_or_path, overrides)
    worlds = coerce(raw.get("worlds", []), list[str], f"{where}: worlds")
    if not worlds:
        return [_build_sweep(raw, where, path.stem)]
    if len(set(worlds)) < len(worlds):
        raise ConfigError(f"{where}: worlds collide: {worlds}")
    name = coerce(raw.get("name", path.stem), str, f"{where}: name")
    return [_build_sweep(_world_raw(raw, name, world), f"{where} [world {world}]", name) for world in worlds]


def load_sweep(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), world: str | None = None) -> SweepConfig:
    """Load, validate and resolve a sweep file (methods and data are checked against their registries); of a
    multi-world sweep, the sweep of ``world``.

    ``overrides`` are ``dotted.key=value`` strings (the CLI's ``--set``) applied before validation.
    """
    sweeps = load_sweeps(name_or_path, overrides)
    if world is None and len(sweeps) == 1:
        return sweeps[0]
    names = {s.data.get("world"): s for s in sweeps} if sweeps[0].study else {}
    if world not in names:
        raise ConfigError(f"{name_or_path}: a sweep over the worlds {list(names) or '[]'}: name one with --world")
    return names[world]


def _raw_sweep(name_or_path: str, overrides: list[str] | tuple[str, ...]) -> tuple[Path, dict, str]:
    path = resolve_sweep_path(name_or_path)
    raw = apply_overrides(load_yaml(path), overrides)
    where = f"{path} (with --set {' '.join(overrides)})" if overrides else str(path)
    _check_keys(raw, SWEEP_KEYS, where)
    return path, raw, where


def _world_raw(raw: dict, name: str, world: str) -> dict:
    data = dict(coerce(raw.get("data", {}), dict, "data"))
    body = {k: v for k, v in raw.items() if k != "worlds"}
    return {**body, "name": f"{name}-{world}", "study": name, "data": {**data, "world": world}}


def _build_sweep(raw: dict, where: str, default_name: str) -> SweepConfig:
    study = coerce(raw.get("study", ""), str, f"{where}: study")
    sweep = SweepConfig(**_sections(raw, where, default_name), methods=_methods(raw, where), study=study, source=where)
    _check_methods(sweep, where)
    return sweep


def _check_keys(raw: dict, valid: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(str(key), valid)} (valid: {', '.join(valid)})")


def _sections(raw: dict, where: str, default_name: str | None) -> dict[str, Any]:
    """The typed sections a sweep file and a saved sweep share: name, seeds, data, trainer, wandb, report."""
    name = coerce(raw.get("name", default_name), str, f"{where}: name")
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: name {name!r} must be a plain name ({NAME_PATTERN.pattern}), no path separators")
    trainer, tuning = from_mapping(TrainerConfig, raw.get("trainer", {}), f"{where}: trainer"), _tuning(raw, where)
    check_official(tuning, {key: getattr(trainer, key) for key in tuning.space}, where)
    return {
        "name": name,
        "seeds": _seeds(raw, where),
        "data": _data(raw.get("data", {}), where),
        "trainer": trainer,
        "wandb": from_mapping(WandbConfig, raw.get("wandb", {}), f"{where}: wandb"),
        "report": from_mapping(ReportConfig, raw.get("report", {}), f"{where}: report"),
        "targets": _targets(raw, where),
        "slurm": from_mapping(SlurmConfig, raw.get("slurm", {}), f"{where}: slurm"),
        "tuning": tuning,
    }


def _tuning(raw: dict, where: str) -> TuningConfig:
    """The ``tuning`` section; its seeds are never scored seeds nor reference seeds, and it fixes the targets."""
    tuning = from_mapping(TuningConfig, raw.get("tuning", {}), f"{where}: tuning")
    if not tuning.enabled:
        return tuning
    seeds = set(coerce(raw.get("seeds", [0]), list, f"{where}: seeds"))
    reference = set((raw.get("targets") or {}).get("seeds") or ())
    overlap = sorted((seeds | reference) & set(tuning.seeds))
    if overlap:
        raise ConfigError(
            f"{where}: tuning.seeds {overlap} are also scored or reference seeds (tuning seeds are never scored)"
        )
    labels = target_labels(_targets(raw, where), _report_metric(raw))
    if tuning.rule.target not in labels:
        raise ConfigError(
            f"{where}: tuning.rule.target {tuning.rule.target!r} is not a target of the sweep ({', '.join(labels)})"
        )
    source = (raw.get("targets") or {}).get("source", "posthoc")
    if source not in ("tuning", "absolute"):
        raise ConfigError(
            f"{where}: targets.source: with a tuning section the tuning runs fix the targets "
            f"(source: tuning, or absolute values), got {source!r}"
        )
    return tuning


def target_labels(targets: TargetsConfig, metric: str) -> list[str]:
    """The labels the targets will have: ``90%`` for fractions, ``≥30`` for absolute values."""
    if targets.source == "absolute":
        sign = "≥" if higher_is_better(metric) else "≤"
        return [f"{sign}{v:g}" for v in targets.values]
    return [f"{100 * f:g}%" for f in targets.fractions]


def _report_metric(raw: dict) -> str:
    return str((raw.get("report") or {}).get("metric", ReportConfig.metric))


def _targets(raw: dict, where: str) -> TargetsConfig:
    """The ``targets`` section; its reference seeds must not be scored seeds (they would set their own targets)."""
    targets = from_mapping(TargetsConfig, raw.get("targets", {}), f"{where}: targets")
    if targets.source == "tuning" and not (raw.get("tuning") or {}).get("space"):
        raise ConfigError(f"{where}: targets.source is 'tuning' but the sweep has no tuning section")
    seeds = coerce(raw.get("seeds", [0]), list, f"{where}: seeds")
    overlap = sorted(set(seeds) & set(targets.seeds))
    if overlap:
        raise ConfigError(f"{where}: targets.seeds {overlap} are also scored seeds (reference runs are never scored)")
    return targets


def _seeds(raw: dict, where: str) -> list[int]:
    """The scored seeds: plain distinct integers in [0, 2**32), checked in linear time (a sweep may list many)."""
    seeds = raw.get("seeds", [0])
    if not (isinstance(seeds, list) and set(map(type, seeds)) <= {int}):  # plain ints need no per-item check
        seeds = coerce(seeds, list[int], f"{where}: seeds")  # names the first bad item
    if not seeds:
        raise ConfigError(f"{where}: seeds is empty")
    if len(set(seeds)) < len(seeds):
        duplicates = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
        raise ConfigError(f"{where}: seeds collide: {duplicates} listed more than once")
    if min(seeds) < 0 or max(seeds) >= 2**32:
        out_of_range = sorted({s for s in seeds if not 0 <= s < 2**32})
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
    unknown = set(overrides) - {s.label for s in specs} - set(list_methods())  # a method left out: not a typo
    if unknown:
        labels = [s.label for s in specs]
        first = sorted(unknown)[0]
        raise ConfigError(
            f"{where}: overrides.{first} matches no method label{suggest(first, labels)} ({', '.join(labels)})"
        )
    return _distinct_labels(specs, where)


def _distinct_labels(specs: list[MethodSpec], where: str) -> list[MethodSpec]:
    labels = [s.label for s in specs]
    duplicates = sorted({lab for lab in labels if labels.count(lab) > 1})
    if duplicates:
        raise ConfigError(f"{where}: method labels collide: {duplicates} (give each entry a distinct 'label')")
    if not specs:
        raise ConfigError(f"{where}: methods is empty")
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
    """Validate every method's args (kept as coerced: what reaches the method) and trainer overrides, and the data
    section, against their schemas."""
    for i, spec in enumerate(sweep.methods):
        spec.args = validate_method_args(spec.method, spec.args, f"{where}: methods[{i}] ({spec.label}).args")
        sweep.trainer_for(spec)  # a per-method trainer override must make a valid protocol too
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
    """Check the ``data`` section against the dataset's schema (``config_parameters``); returns it resolved
    (defaults filled in, so the run log records every knob and a changed default is detected as a changed config)."""
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
    return {"name": data["name"], **cls.resolve_config(typed)}  # resolved: every knob recorded with the run
