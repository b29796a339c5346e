"""``tvr-convbench-fit``: Lightning's own command line (``LightningCLI``) over every registered method and dataset.

    tvr-convbench-fit fit --model glscl --data proxy --trainer.max_steps 400 --print_config
    tvr-convbench-fit fit --model xpool --model.dropout 0.4 --model.lr 1e-4 --data proxy --data.val_videos 300 \\
        --trainer.logger+=CSVLogger --trainer.logger.save_dir runs-lightning \\
        --trainer.logger+=WandbLogger --trainer.logger.offline true
    tvr-convbench-fit validate --config runs-lightning/lightning_logs/version_0/config.yaml --ckpt_path ...

``--model NAME`` is a registered method (``tvr-convbench list``): each has a class here, named after it, whose
arguments are the method's own (``--model.<arg>``) and the protocol's (``RetrievalModule``: ``lr``, ``batch_size``,
``data_seed`` ...). ``--data NAME`` is a registered dataset, whose arguments are its ``data:`` keys. The data module
reaches the model by an instantiation link (``data`` -> ``model.data``: the method is built for its dims, on its
backbone, and asks it for patch tokens when it needs them). Trainer defaults are the harness's protocol
(``trainer_settings(TrainerConfig())``: 600 steps, validation every 60, clip 1.0, every step logged); the data order
seed defaults to ``--seed_everything`` (0).

This entry is for using a method elsewhere; the harness CLI (``tvr-convbench``) stays the protocol's front door
(step-0 evaluation, paused training clock, exact resume, sweeps, reports).
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from tvr_convbench.bench.config import TrainerConfig
from tvr_convbench.bench.lightning import RetrievalModule, trainer_settings
from tvr_convbench.bench.typed import argument_docs, field_docs
from tvr_convbench.core.errors import RegistryError
from tvr_convbench.datasets import DATASETS
from tvr_convbench.datasets.base import RetrievalDataModule
from tvr_convbench.methods import METHODS, list_methods, method_parameters

_KW = inspect.Parameter.KEYWORD_ONLY
_SELF = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
_MODULE_ONLY = ("method", "method_args", "dims")
"""``RetrievalModule`` arguments a per-method class fixes (its name, its own arguments) or derives (dims)"""


def method_class(name: str) -> type[RetrievalModule]:
    """``RetrievalModule`` for method ``name``, as a class called ``name`` whose constructor takes the method's
    arguments and the protocol's, typed and documented (what ``--model NAME`` resolves to)."""
    entry = METHODS.get(name)
    hints = _hints(entry.cls)
    own = [p.replace(kind=_KW, annotation=hints.get(k, p.annotation)) for k, p in method_parameters(name).items()]
    base_hints = typing.get_type_hints(RetrievalModule.__init__)
    protocol = [
        p.replace(kind=_KW, annotation=base_hints[k])
        for k, p in inspect.signature(RetrievalModule.__init__).parameters.items()
        if k != "self" and k not in _MODULE_ONLY
    ]
    clash = {p.name for p in own} & {p.name for p in protocol}
    if clash:
        raise RegistryError(f"method {name!r}: arguments {sorted(clash)} clash with RetrievalModule's own")
    keys = tuple(p.name for p in own)

    def __init__(self: RetrievalModule, **kwargs: Any) -> None:
        method_args = {k: kwargs.pop(k) for k in keys if k in kwargs}
        RetrievalModule.__init__(self, name, method_args, **kwargs)

    __init__.__signature__ = inspect.Signature([_SELF, *own, *protocol])  # type: ignore[attr-defined]
    docs = argument_docs(entry.cls) | argument_docs(RetrievalModule)
    summary = (inspect.getdoc(entry.cls) or name).splitlines()[0]
    __init__.__doc__ = _google_doc(
        f"Method {name!r} ({summary}) with its backbone, trained by the harness's protocol.", own + protocol, docs
    )
    return _new_class(name, RetrievalModule, __init__)


def data_class(name: str) -> type[RetrievalDataModule]:
    """The data module registered as ``name``, as a class called ``name`` whose constructor shows its ``data:`` keys
    (``config_parameters``: the proxy's knobs are keywords its own signature only forwards)."""
    cls = DATASETS.get(name)
    params = [p.replace(kind=_KW) for p in cls.config_parameters().values()]

    def __init__(self: RetrievalDataModule, **kwargs: Any) -> None:
        cls.__init__(self, **kwargs)

    __init__.__signature__ = inspect.Signature([_SELF, *params])  # type: ignore[attr-defined]
    settings = getattr(cls, "settings_class", None)
    docs = argument_docs(cls) | (field_docs(settings) if settings is not None else {})
    summary = (inspect.getdoc(cls) or name).splitlines()[0]
    __init__.__doc__ = _google_doc(f"Dataset {name!r}: {summary}", params, docs)
    return _new_class(name, cls, __init__)


def _new_class(name: str, base: type, init: Any) -> type:
    if name in globals():
        raise RegistryError(f"{__name__}: {name!r} is taken (a method and a dataset, or a name of this module)")
    init.__qualname__ = f"{name}.__init__"
    cls = type(name, (base,), {"__init__": init, "__module__": __name__, "__qualname__": name, "__doc__": init.__doc__})
    globals()[name] = cls  # importable as tvr_convbench.bench.fit_cli.<name>: the class_path in a saved config
    return cls


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of every constructor along the MRO (a subclass forwards ``**base`` keywords)."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            try:
                hints |= typing.get_type_hints(klass.__init__)
            except (NameError, TypeError):
                continue
    return hints


def _google_doc(summary: str, params: list[inspect.Parameter], docs: dict[str, str]) -> str:
    lines = [summary, "", "Args:"]
    lines += [f"    {p.name}: {docs[p.name]}" for p in params if docs.get(p.name)]
    return "\n".join(lines)


CANONICAL = "tvr_convbench.bench.fit_cli"
"""the module the classes live in (a saved config names them ``tvr_convbench.bench.fit_cli.<name>``)"""
if __name__ == CANONICAL:  # not again as ``__main__`` (python -m): two classes per name would be ambiguous
    METHOD_CLASSES = {name: method_class(name) for name in list_methods()}
    DATA_CLASSES = {name: data_class(name) for name in DATASETS.names()}


class FitCLI(LightningCLI):
    """``LightningCLI`` with the data module linked into the model (the method is built for it)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data", "model.init_args.data", apply_on="instantiate")


def trainer_defaults() -> dict[str, Any]:
    """The harness's protocol defaults as Trainer defaults (device, precision and strategy stay Lightning's)."""
    _, trainer = trainer_settings(TrainerConfig())
    return {k: v for k, v in trainer.items() if k not in ("accelerator", "devices", "strategy", "precision")}


def main(args: list[str] | None = None) -> None:
    """Run ``LightningCLI`` (``fit``, ``validate``, ``test``; ``--help`` lists the options)."""
    FitCLI(
        RetrievalModule,
        RetrievalDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults=trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the protocol's optimizer and schedule (configure_optimizers)
        args=args,  # None: sys.argv
    )


if __name__ == "__main__":
    import importlib

    importlib.import_module(CANONICAL).main()
