"""Every method, paired with its backbone, as a ``LightningModule`` a stock ``lightning.Trainer`` fits (DESIGN 7a).

    import lightning as L
    from tvr_convbench.bench.lightning import RetrievalModule
    from tvr_convbench.datasets import dataset_class

    L.seed_everything(0)
    data = dataset_class("proxy")(train_videos=800, val_videos=300)
    model = RetrievalModule("glscl", data=data, lr=1e-4, batch_size=32)
    trainer = L.Trainer(max_steps=600, gradient_clip_val=1.0, val_check_interval=60, check_val_every_n_epoch=None)
    trainer.fit(model, datamodule=data)            # logs train/loss, train/loss/<part>, train/t2v/R@1, val/t2v/R@1 ...

The module is the harness's own pieces, in Lightning's hooks (``tvr_convbench.bench.trainer`` is the reference):

- ``__init__``: the method (dims from the data module) and ``data.backbone()``, as ``Run.build`` pairs them
  (``RunModel``), with ``request_patches()`` first for a method that ``needs_patches``;
- ``training_step``: encode, gather the reps of all processes with gradients under DDP (``bench.distributed.
  gather_reps`` through ``self.all_gather(..., sync_grads=True)``), ``training_forward``; logs the loss, every part
  and the in-batch recall (``core.metrics.in_batch_recall``) at every step;
- validation / test: every item encoded once (``bench.evaluate.encode_split``; under DDP each process encodes its
  contiguous shard and ``bench.distributed.reassemble`` puts them back in order, each item once), then
  ``blockwise_similarity`` and ``retrieval_metrics``, logged as ``val/t2v/R@1`` ...;
- ``configure_optimizers``: the harness's parameter groups and optimizer (``bench.trainer.run_optimizer``), and
  ``lr_multiplier`` as a ``LambdaLR`` stepped per optimizer step (step k uses the harness's multiplier of step k, over
  the Trainer's ``max_steps``); the logit-scale clamp after every optimizer step (``optimizer_step``). Gradient
  clipping is the Trainer's ``gradient_clip_val`` (it also sets BertAdam's per-tensor clip, as ``grad_clip`` does in
  the harness).

Settings: the data is the data module's; the training protocol's data-side settings (``batch_size``, ``data_seed``,
``eval_batch_size``) are hyperparameters of this module, which hands them to the data module in ``setup``
(``RetrievalDataModule.configure_loaders``), so no ``data:`` key duplicates them; ``max_steps``, clipping, precision,
devices and the validation interval are the Trainer's. ``trainer_settings`` maps a harness ``TrainerConfig`` onto
both. With the same seed, the same data order and ``num_sanity_val_steps=0``, a fit gives the harness loop's
per-step losses and its validation metrics (tests/test_lightning.py, every registered method).

What the stock loop does not give (why the protocol keeps its own loop): the step-0 evaluation (run
``trainer.validate`` before ``fit``), a training clock paused during evaluation, and bit-exact mid-epoch resume (a
Lightning resume restarts the epoch's batches). Checkpoints: the hyperparameters (method, its arguments, the data
module's keywords, the dims, the protocol) rebuild the module: ``RetrievalModule.load_from_checkpoint(path)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import lightning as L
import torch
from torch import Tensor

from tvr_convbench.bench.config import TrainerConfig, validate_data, validate_method_args
from tvr_convbench.bench.distributed import gather_reps, reassemble
from tvr_convbench.bench.evaluate import cat_reps, encode_split, evaluate_reps
from tvr_convbench.bench.trainer import RunModel, build_pair, needs_patches, run_optimizer, step_metrics
from tvr_convbench.datasets import DATASETS, dataset_class
from tvr_convbench.datasets.base import RetrievalDataModule
from tvr_convbench.methods.base import Rep, RetrievalMethod
from tvr_convbench.methods.parts.optim import OptimizerName, ScheduleName, lr_multiplier

_PROTOCOL = TrainerConfig()
"""the harness's defaults of the protocol settings this module takes"""
PROTOCOL_KEYS = (
    "lr", "backbone_lr", "optimizer", "schedule", "warmup", "weight_decay", "batch_size", "eval_batch_size",
    "eval_block",
)  # fmt: skip
"""the ``TrainerConfig`` fields that are hyperparameters of the module (the rest are the Trainer's)"""


class RetrievalModule(L.LightningModule):
    """A registered retrieval method and its data module's backbone, trained by the harness's protocol.

    Args:
        method: a registered method name (``tvr-convbench list``).
        method_args: the method's constructor arguments (its config schema; the dims come from the data).
        data: the data module (not set up yet: a method that needs patch tokens asks for them first), or its
            ``data:`` section as a mapping (``{"name": "proxy", ...}``; a checkpoint rebuilds it so).
        lr: learning rate of the method's new modules.
        backbone_lr: learning rate of the backbone (and of a learnable logit scale).
        optimizer: ``bertadam`` (no bias correction, the CLIP4Clip family's) or ``adamw``.
        schedule: ``warmup_cosine`` over the Trainer's ``max_steps``, or ``constant``.
        warmup: warmup fraction of the steps.
        weight_decay: decoupled weight decay (biases excluded).
        batch_size: the global training batch (summed over processes).
        eval_batch_size: items per encoding batch in evaluation.
        eval_block: texts x videos per similarity block in evaluation.
        data_seed: seed of the training data order (the harness's run seed); None: the seed given to
            ``lightning.seed_everything`` (``PL_GLOBAL_SEED``), else 0.
        dims: the feature dims the method is built for; a checkpoint records them and checks them on rebuild.
    """

    def __init__(
        self,
        method: str,
        method_args: dict[str, Any] | None = None,
        data: RetrievalDataModule | dict[str, Any] | None = None,
        *,
        lr: float = _PROTOCOL.lr,
        backbone_lr: float = _PROTOCOL.backbone_lr,
        optimizer: OptimizerName = _PROTOCOL.optimizer,
        schedule: ScheduleName = _PROTOCOL.schedule,
        warmup: float = _PROTOCOL.warmup,
        weight_decay: float = _PROTOCOL.weight_decay,
        batch_size: int = _PROTOCOL.batch_size,
        eval_batch_size: int = _PROTOCOL.eval_batch_size,
        eval_block: int = _PROTOCOL.eval_block,
        data_seed: int | None = None,
        dims: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        method_args = validate_method_args(method, dict(method_args or {}), f"method {method!r}: method_args")
        settings = {
            "lr": lr, "backbone_lr": backbone_lr, "optimizer": optimizer, "schedule": schedule, "warmup": warmup,
            "weight_decay": weight_decay, "batch_size": batch_size, "eval_batch_size": eval_batch_size,
            "eval_block": eval_block,
        }  # fmt: skip
        self.protocol = TrainerConfig(**settings)  # checks the values as a sweep's trainer section is checked
        self.datamodule, data_config = _data_module(data)
        if needs_patches(method):
            self.datamodule.request_patches()
        found = self.datamodule.dims.as_kwargs()
        if dims is not None and dict(dims) != found:
            raise ValueError(f"{method}: built for dims {dict(dims)}, but the data module has {found}")
        if data_seed is None:
            data_seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.save_hyperparameters(
            {"method": method, "method_args": method_args, "data": data_config, **settings, "data_seed": data_seed,
             "dims": found}
        )  # fmt: skip
        self.model = RunModel(*build_pair(method, method_args, self.datamodule))

    @property
    def method(self) -> RetrievalMethod:
        return self.model.method

    def forward(self, batch: dict[str, Tensor]) -> tuple[Rep, Rep]:
        """(text reps, video reps) of a batch: the backbone, then the method's encoders."""
        return self.model(batch)

    # --- data ---------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Hand the protocol's loader settings to the data module the Trainer uses (its ``datamodule``, else ours)."""
        data = self.trainer.datamodule if self.trainer.datamodule is not None else self.datamodule
        if isinstance(data, RetrievalDataModule):
            hp = self.hparams
            if data.dims.as_kwargs() != hp["dims"]:
                raise ValueError(f"the method is built for dims {hp['dims']}, the data module has {data.dims}")
            if needs_patches(hp["method"]) and getattr(data, "patches", True) is False:
                raise ValueError(
                    f"{hp['method']} needs patch tokens: fit with the data module the model was built with (it asked "
                    "for them), or call request_patches() on this one before anything sets it up"
                )
            data.configure_loaders(hp["batch_size"], hp["data_seed"], hp["eval_batch_size"])

    def train_dataloader(self) -> Any:  # used by ``trainer.fit(model)`` without a datamodule
        return self.datamodule.train_dataloader()

    def val_dataloader(self) -> Any:
        return self.datamodule.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.datamodule.test_dataloader()

    # --- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        text, video = self.model(batch)
        if self.trainer.world_size > 1:  # every loss sees the global batch; gradients reach each process's items
            text, video = gather_reps(self, text), gather_reps(self, video)
        losses = self.method.training_forward(text, video)
        logged = step_metrics(losses)  # the harness's: loss, loss/<part>, the in-batch recall
        logged["optimizer_step"] = float(self.trainer.global_step + 1)  # the harness's ``step`` of this row
        size = losses.similarity.shape[0]
        self.log("train/loss", logged.pop("loss"), prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, on_step=True, on_epoch=False, batch_size=size)
        # a loss that reaches no parameter (``random``) trains nothing: no backward (the harness skips the update)
        return losses["loss"] if losses["loss"].requires_grad else None

    def configure_optimizers(self) -> Any:
        """The harness's optimizer over its parameter groups, and its lr schedule as a per-step ``LambdaLR``."""
        clip = float(self.trainer.gradient_clip_val or 0.0)
        protocol = dataclasses.replace(self.protocol, grad_clip=clip)
        optimizer = run_optimizer(self.model, protocol)
        if optimizer is None:  # nothing trains (e.g. meanP on frozen features without adapter)
            return None
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else int(self.trainer.estimated_stepping_batches)
        schedule = LrMultiplier(self.protocol.schedule, total, self.protocol.warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        optimizer.step(closure=optimizer_closure)
        self.method.after_optimizer_step()  # the logit-scale clamp, after every optimizer step

    # --- evaluation ---------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._encoded: list[tuple[Rep, Rep, Tensor]] = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._encoded.append(encode_split(self.method, [batch], self.model.backbone))

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    on_test_epoch_start = on_validation_epoch_start
    test_step = validation_step

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def evaluate_encoded(self) -> dict[str, float] | None:
        """The retrieval metrics of the items encoded this epoch (``None`` in the sanity check: a partial split)."""
        encoded, self._encoded = getattr(self, "_encoded", []), []
        if self.trainer.sanity_checking or not encoded:
            return None
        text, video = cat_reps([e[0] for e in encoded]), cat_reps([e[1] for e in encoded])
        if self.trainer.world_size > 1:  # each process encoded one shard: put them back in item order, each once
            index = torch.cat([e[2] for e in encoded])
            counts = self.all_gather(torch.tensor(index.shape[0])).reshape(-1)
            text, video = reassemble(self, [text, video], index, int(counts.sum()), int(counts.max()))
        metrics = evaluate_reps(self.method, text, video, self.hparams["eval_block"]) if self.global_rank == 0 else None
        return self.trainer.strategy.broadcast(metrics, src=0)

    def _log_metrics(self, split: str) -> None:
        metrics = self.evaluate_encoded()
        if metrics is None:
            return
        logged = {f"{split}/{k}": v for k, v in metrics.items()}
        logged[f"{split}/optimizer_step"] = float(self.trainer.global_step)  # optimizer steps taken (the harness's)
        # every process holds the same (broadcast) values: "max" syncs them without changing a bit, so a callback can
        # monitor them on every rank
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=1, sync_dist=True, reduce_fx="max")


# --- the harness's pieces, in the shapes Lightning wants ---------------------------------------------------------
@dataclasses.dataclass
class LrMultiplier:
    """``lr_multiplier`` of optimizer step k, as ``LambdaLR`` calls it (a callable object, so a checkpoint of the
    scheduler keeps the schedule)."""

    schedule: str
    total_steps: int
    warmup: float

    def __call__(self, step: int) -> float:
        return lr_multiplier(self.schedule, step, self.total_steps, self.warmup)


def _data_module(data: RetrievalDataModule | dict[str, Any] | None) -> tuple[RetrievalDataModule, dict | None]:
    """The data module and its resolved ``data:`` section (None for a module of an unregistered class)."""
    if data is None:
        raise ValueError("RetrievalModule needs a data module (or its data: section): it provides the backbone")
    if isinstance(data, RetrievalDataModule):
        name = registered_name(type(data))
        config = None if name is None else validate_data({"name": name, **data.init_kwargs}, "data")
        return data, _plain(config)
    config = validate_data(dict(data), "data")
    module = dataset_class(config["name"])(**{k: v for k, v in config.items() if k != "name"})
    return module, _plain(config)


def registered_name(cls: type) -> str | None:
    """The dataset name ``cls`` (or the registered class it derives from) is registered under."""
    for klass in cls.__mro__:
        for name in DATASETS.names():
            if DATASETS.get(name) is klass:
                return name
    return None


def _plain(value: Any) -> Any:
    """A config as plain YAML values (paths as strings, tuples as lists), for the checkpoint's hyperparameters."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def trainer_settings(tc: TrainerConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """A harness protocol as (``RetrievalModule`` keywords, ``lightning.Trainer`` keywords): the same steps, lr,
    schedule, clipping, batch, precision and devices, validation every ``val_every`` steps (the stock loop has no
    step-0 evaluation: run ``trainer.validate`` first) and every step logged."""
    module = {key: getattr(tc, key) for key in PROTOCOL_KEYS}
    strategy = "ddp_spawn" if tc.strategy == "ddp" and tc.devices > 1 else "auto"
    trainer = {
        "max_steps": tc.max_steps,
        "gradient_clip_val": tc.grad_clip or None,
        "val_check_interval": tc.val_every,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "precision": tc.precision,
        "accelerator": tc.accelerator,
        "devices": tc.devices if strategy != "auto" else 1,
        "strategy": strategy,
    }
    return module, trainer
