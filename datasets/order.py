"""The training data order: a pure function of (seed, epoch), so a resumed run consumes exactly the batches the
uninterrupted run would.

Global batch ``step`` is slice ``pos`` of epoch ``e``'s permutation (``e, pos = divmod(step, batches_per_epoch)``,
drop_last), and each process takes its contiguous share of it (``BatchOrder``). ``BatchStream`` serves those
batches of a data module from any step on (the harness loop, ``tvr_convbench.bench.trainer``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from tvr_convbench.datasets.base import RetrievalDataModule


def epoch_order(num_items: int, seed: int, epoch: int) -> Tensor:
    """The training permutation of ``epoch``: a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class BatchOrder:
    """The item indices of every global training batch (and of this process's share of it)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.num_items = num_items
        self.batch = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.per_epoch = num_items // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"train split has {num_items} items, fewer than batch_size {batch_size}")
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> list[int]:
        """This process's share of global batch ``step`` (0-based)."""
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:  # one permutation per epoch (still a pure function of seed and epoch)
            self._epoch = epoch
            self._order = epoch_order(self.num_items, self.seed, epoch)
        batch = self._order[pos * self.batch : (pos + 1) * self.batch]
        share = self.batch // self.world
        return batch[self.rank * share : (self.rank + 1) * share].tolist()


class BatchStream(BatchOrder):
    """Training batches of a data module from any step on, for the harness loop."""

    def __init__(self, data: RetrievalDataModule, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        super().__init__(len(data.split("train")), batch_size, seed, rank, world)
        self.data = data

    def iterate(self, start: int, stop: int) -> Iterator[dict[str, Tensor]]:
        """Yield the local batches of steps ``start .. stop-1`` (DataLoader workers when the data asks for them)."""
        if self.data.num_workers == 0:
            split = self.data.split("train")
            for step in range(start, stop):
                yield split[self.indices(step)]
            return
        yield from self.data.loader("train", [self.indices(s) for s in range(start, stop)])
