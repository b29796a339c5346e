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
        """A ``DataLoader`` that yields whole batches for the index lists of ``batch_sampler``."""
        workers = self.num_workers
        return DataLoader(
            self.split(name),
            sampler=batch_sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )


DATASETS: Registry[type[RetrievalDataModule]] = Registry("dataset")
register_dataset = DATASETS.register
