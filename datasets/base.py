"""The data contract: a ``RetrievalDataModule`` gives three splits of (paragraph, video) pairs and the backbone that
turns its batches into method features.

- A split (``RetrievalSplit``) is indexed by a *list* of item indices and returns a whole batch (a dict of
  tensors with ``index`` = the item indices). Fetching whole batches lets in-memory feature stores slice
  tensors once per batch instead of collating per item; a split that decodes videos does its per-item work
  inside ``__getitem__`` and runs in ``DataLoader`` workers.
- The batch of a frozen-regime split already holds features (``methods.base.FeatureBatch`` keys); the batch of
  a trainable-backbone split holds raw inputs (token ids, pixels) and ``backbone()`` encodes them.
- Data order is the harness's (``bench.trainer``): a pure function of (seed, epoch), so runs resume exactly.
"""

from __future__ import annotations

import abc
import inspect
import typing
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tvr_convbench.core.errors import DataError
from tvr_convbench.core.registry import Registry, init_parameters

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FeatureDims:
    """Shapes the methods are built for: feature width D, frame slots F, token slots L."""

    width: int
    max_frames: int
    max_words: int

    def as_kwargs(self) -> dict[str, int]:
        return {"width": self.width, "max_frames": self.max_frames, "max_words": self.max_words}


class RetrievalSplit(Dataset, abc.ABC):
    """One split; ``split[[i, j, ...]]`` returns the batch of those items."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]: ...


class Backbone(nn.Module):
    """Maps a split's batch to a ``FeatureBatch``. Its trainable parameters train at the backbone lr."""

    text_model: nn.Module | None = None
    """a CLIP text tower to initialise temporal modules from (``None`` without a real CLIP)"""

    def enable_token_shift(self, layers: int) -> bool:
        """Install TS2-Net's token shift in the last ``layers`` blocks of the vision tower (a method's
        ``token_shift_layers``); returns whether this backbone could. Without a vision tower (features cached
        before the method existed) it cannot: False."""
        return False

    def param_groups(self, weight_decay: float) -> list[dict]:
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") else decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay, "role": "backbone"},
            {"params": no_decay, "weight_decay": 0.0, "role": "backbone"},
        ]


class FeatureBackbone(Backbone):
    """Frozen regime: the batch already holds features. With ``adapter=True`` an identity-initialised linear map
    (one for frames, one for tokens and the sentence) is trained on top, at the backbone lr; patch tokens
    (``video_patches``, when the batch has them) live in the frames' projected space and share the frame map."""

    def __init__(self, width: int, adapter: bool = False) -> None:
        super().__init__()
        self.frame_adapter = _identity_linear(width) if adapter else None
        self.text_adapter = _identity_linear(width) if adapter else None

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.frame_adapter is None:
            return batch
        out = {
            **batch,
            "text_tokens": self.text_adapter(batch["text_tokens"]),
            "text_eot": self.text_adapter(batch["text_eot"]),
            "video_frames": self.frame_adapter(batch["video_frames"]),
        }
        if "video_patches" in batch:
            out["video_patches"] = self.frame_adapter(batch["video_patches"])  # [B, F, P, D]
        return out


def _identity_linear(width: int) -> nn.Linear:
    layer = nn.Linear(width, width)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width))
        layer.bias.zero_()
    return layer


class RetrievalDataModule(L.LightningDataModule, abc.ABC):
    """A dataset behind the harness. Subclasses register with ``@register_dataset(name)``; their typed
    constructor signature is their config schema (the ``data:`` section of a run config)."""

    @classmethod
    def config_parameters(cls) -> dict[str, inspect.Parameter]:
        """The keys of the ``data:`` section this module accepts (its config schema), each an ``inspect.Parameter``
        with its resolved annotation and default: by default every keyword of the constructor."""
        hints = typing.get_type_hints(cls.__init__)
        return {name: p.replace(annotation=hints.get(name, p.annotation)) for name, p in init_parameters(cls).items()}

    @classmethod
    def resolve_config(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The full ``data:`` section a run records: every key of ``config_parameters`` with its default, the
        given (type-checked) values on top."""
        defaults = {
            k: p.default for k, p in cls.config_parameters().items() if p.default is not inspect.Parameter.empty
        }
        return {**defaults, **given}

    synthetic: bool = False
    """True for generated data: reports then say "synthetic proxy" in their title"""
    title: str = "?"

    @property
    @abc.abstractmethod
    def dims(self) -> FeatureDims: ...

    @abc.abstractmethod
    def split(self, name: str) -> RetrievalSplit:
        """The split ``name`` (one of ``SPLITS``); call after ``setup()``."""

    @abc.abstractmethod
    def backbone(self) -> Backbone:
        """A fresh backbone for one run (identity for feature stores, CLIP for trainable regimes)."""

    def request_patches(self) -> None:
        """Ask for ``video_patches [B, F, P, D]`` in every batch (the harness calls this, before ``setup``, only for
        a method that ``needs_patches``; other methods never load them). The patches are what the backbone maps to
        features: in a frozen-regime split the batch holds them (the store's or the proxy's), in a trainable one
        the backbone returns them from the same vision forward as the frame CLS. A dataset without patch tokens
        refuses with a one-line ``DataError``."""
        raise DataError(type(self).__name__, "this dataset has no patch tokens (video_patches)", field="patches")

    def describe(self) -> dict[str, Any]:
        """Facts written next to every run (loaded counts per split, missing files, calibration, protocol)."""
        return {"name": type(self).__name__, "synthetic": self.synthetic, "title": self.title}

    @property
    def num_workers(self) -> int:
        return 0

    def loader(self, name: str, batch_sampler) -> DataLoader:  # noqa: ANN001 - any iterable of index lists
        """A ``DataLoader`` that yields whole batches for the index lists of ``batch_sampler``.

        It draws its workers' base seed from a generator of its own, not from torch's global one: otherwise every
        loader started (each evaluation's, every Lightning epoch's) would shift the dropout masks of all later
        training steps, and the training curve would depend on the evaluation schedule."""
        workers = self.num_workers
        return DataLoader(
            self.split(name),
            sampler=batch_sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
            generator=torch.Generator(),
        )

    # --- the dataloader hooks of a stock lightning.Trainer (tvr_convbench.bench.lightning) --------------------------
    init_kwargs: dict[str, Any]
    """the constructor's keywords: this module's ``data:`` section less ``name`` (a ``RetrievalModule`` records them
    in its hyperparameters, so that its checkpoint rebuilds the backbone)"""

    def __new__(cls, *args: Any, **kwargs: Any) -> RetrievalDataModule:
        module = super().__new__(cls)
        module.init_kwargs = dict(kwargs)
        return module

    loader_settings: tuple[int, int, int] | None = None
    """(batch_size, seed, eval_batch_size) for the dataloader hooks (``configure_loaders``)"""

    def configure_loaders(self, batch_size: int, seed: int, eval_batch_size: int = 256) -> None:
        """Set what the dataloader hooks serve: training batches of ``batch_size`` items (the global batch, over all
        processes) in the harness's order for ``seed``, and evaluation batches of ``eval_batch_size``. These are
        settings of the training protocol, not of the data, so they are no ``data:`` keys: ``RetrievalModule.setup``
        passes its own (call this yourself to use the hooks with another ``LightningModule``)."""
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}.configure_loaders: {key} must be positive, got {value!r}")
        self.loader_settings = (batch_size, int(seed), eval_batch_size)

    def train_dataloader(self) -> DataLoader:
        """One epoch of the harness's training order (``tvr_convbench.datasets.order.BatchOrder``): batch ``i`` of
        epoch ``e`` is global batch ``e * batches_per_epoch + i``, this process's contiguous share of it (the
        Trainer's rank and world size), so step k trains on the harness's batch k."""
        from tvr_convbench.datasets.order import BatchOrder  # order imports this module

        batch_size, seed, _ = self._loader_settings()
        rank, world = self._process()
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes")
        order = BatchOrder(len(self.split("train")), batch_size, seed, rank, world)
        return self.loader("train", RetrievalDataModule.Batches(order=order, rank=rank, world=world))

    def val_dataloader(self) -> DataLoader:
        """This process's contiguous shard of val (``eval_shard``), in order, in batches of ``eval_batch_size``."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """This process's contiguous shard of test, as ``val_dataloader``."""
        return self._eval_loader("test")

    @staticmethod
    def eval_shard(num_items: int, rank: int, world: int) -> list[int]:
        """The items of process ``rank`` in an evaluation: contiguous shards of ceil(n / world) items (the last ones
        may be shorter), as the harness shards (``tvr_convbench.bench.distributed.shard``)."""
        size = -(-num_items // world)
        return list(range(rank * size, min(num_items, (rank + 1) * size)))

    def _eval_loader(self, name: str) -> DataLoader:
        _, _, batch = self._loader_settings()
        rank, world = self._process()
        mine = self.eval_shard(len(self.split(name)), rank, world)
        batches = [mine[i : i + batch] for i in range(0, len(mine), batch)]
        return self.loader(name, RetrievalDataModule.Batches(lists=batches, rank=rank, world=world))

    def _loader_settings(self) -> tuple[int, int, int]:
        if self.loader_settings is None:
            raise RuntimeError(
                f"{type(self).__name__}: call configure_loaders(batch_size, seed, eval_batch_size) before asking for a "
                "dataloader (tvr_convbench.bench.lightning.RetrievalModule does it in its setup)"
            )
        return self.loader_settings

    def _process(self) -> tuple[int, int]:
        """(rank, world size) of the attached Trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    class Batches(torch.utils.data.DistributedSampler):
        """The index lists a hook's ``DataLoader`` fetches (``loader``): a fixed list (evaluation), or one epoch of a
        ``BatchOrder`` (training; the Trainer calls ``set_epoch`` before every epoch). Every list is this process's
        share already; it is a ``DistributedSampler`` only so that Lightning keeps it under DDP instead of putting its
        own in its place (which would hand out single items and repeat some to even out the shards)."""

        def __init__(self, *, lists: list[list[int]] | None = None, order=None, rank: int = 0, world: int = 1) -> None:  # noqa: ANN001 - a BatchOrder
            # DistributedSampler.__init__ is not called: it wants a dataset and a process group. Its attributes:
            self.lists, self.order = lists, order
            self.rank, self.num_replicas, self.epoch = rank, world, 0
            self.shuffle, self.drop_last = order is not None, order is not None
            self.seed = order.seed if order is not None else 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):  # noqa: ANN204
            if self.order is None:
                return iter(self.lists)
            first = self.epoch * self.order.per_epoch
            return (self.order.indices(step) for step in range(first, first + self.order.per_epoch))

        def __len__(self) -> int:
            return len(self.lists) if self.order is None else self.order.per_epoch


DATASETS: Registry[type[RetrievalDataModule]] = Registry("dataset")
register_dataset = DATASETS.register
