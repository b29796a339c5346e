"""The training loop: one protocol for every method, on ``lightning.Fabric``.

Per optimizer step: fetch the global batch (data order is a pure function of (seed, epoch)), backbone -> method
encoders (per process), gather the reps of all processes with gradients, ``training_forward`` (similarity +
loss), backward, global grad-norm clip, optimizer step (lr from the warmup+cosine schedule), logit-scale clamp.
Every ``val_every`` steps (and at step 0 and at the end): evaluate the whole val split with the clock paused,
write ``metrics.csv`` and ``last.ckpt`` atomically, mirror to wandb.

Several processes (``strategy: ddp``; Fabric spawns them, gloo on CPU): each takes its contiguous share of the
global batch and the reps are gathered with gradients, so the loss sees the single-process batch and the averaged
gradients are the single-process ones (tests/test_ddp.py, every method); evaluation shards the split and rank 0
reassembles it. Every process is seeded alike, so dropout draws repeat across ranks: the same masks for each
rank's local items, and identical draws after the gather, where all ranks must compute the same loss.

Two clocks: ``train_seconds`` counts everything of a training step (data fetch included) and excludes
evaluation, logging and checkpointing; ``wall_seconds`` counts everything. Both survive a resume.

Resume: ``last.ckpt`` holds the model, optimizer, step, both clocks and the Python/NumPy/torch RNG states (NumPy's
as plain lists, so ``torch.load(weights_only=True)`` works). Because the data position follows from the step, a
resumed run consumes exactly the batches the uninterrupted run would, and (on CPU) its metrics are bit-identical
(tests/test_resume.py: SIGKILL during training, during an evaluation, right after a checkpoint, between
``metrics.csv`` and its checkpoint). A resumed run first replays its logged rows into the wandb mirror, which may
have lost what a killed process logged.
"""

from __future__ import annotations

import math
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from tvr_convbench.bench.config import RunConfig
from tvr_convbench.bench.evaluate import blockwise_similarity, encode_split
from tvr_convbench.bench.runlog import MetricsLog, write_status
from tvr_convbench.bench.wandb_mirror import WandbMirror
from tvr_convbench.core.files import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    check_writable,
    remove_stale_temporaries,
)
from tvr_convbench.core.metrics import retrieval_metrics
from tvr_convbench.datasets import dataset_class
from tvr_convbench.datasets.base import Backbone, RetrievalDataModule
from tvr_convbench.methods import build_method
from tvr_convbench.methods.base import RetrievalMethod
from tvr_convbench.methods.parts.optim import build_optimizer, lr_multiplier

CHECKPOINT = "last.ckpt"


class RunModel(nn.Module):
    """Backbone + method, the unit Fabric wraps (so DDP sees every trainable parameter in one forward)."""

    def __init__(self, backbone: Backbone, method: RetrievalMethod) -> None:
        super().__init__()
        self.backbone, self.method = backbone, method

    def forward(self, batch: dict[str, Tensor]) -> tuple[dict, dict]:
        return self.method(self.backbone(batch))


@dataclass
class RunSummary:
    run: str
    steps: int
    train_seconds: float
    wall_seconds: float
    eval_seconds: float
    best: float
    best_step: int
    resumed_from: int | None


# --- data order ----------------------------------------------------------------------------------------------
def epoch_order(num_items: int, seed: int, epoch: int) -> Tensor:
    """The training permutation of ``epoch``: a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class BatchStream:
    """Training batches from any step on: global batch ``step`` = slice ``pos`` of epoch ``e``'s permutation
    (drop_last), and this process takes its contiguous share of it."""

    def __init__(self, data: RetrievalDataModule, cfg: RunConfig, rank: int, world: int) -> None:
        self.data, self.seed = data, cfg.seed
        self.batch, self.rank, self.world = cfg.trainer.batch_size, rank, world
        self.num_items = len(data.split("train"))
        self.per_epoch = self.num_items // self.batch
        if self.per_epoch == 0:
            raise ValueError(f"train split has {self.num_items} items, fewer than batch_size {self.batch}")
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:  # one permutation per epoch (still a pure function of seed and epoch)
            self._epoch, self._order = epoch, epoch_order(self.num_items, self.seed, epoch)
        batch = self._order[pos * self.batch : (pos + 1) * self.batch]
        share = self.batch // self.world
        return batch[self.rank * share : (self.rank + 1) * share].tolist()

    def iterate(self, start: int, stop: int):
        """Yield the local batches of steps ``start .. stop-1`` (DataLoader workers when the data asks for them)."""
        if self.data.num_workers == 0:
            split = self.data.split("train")
            for step in range(start, stop):
                yield split[self.indices(step)]
            return
        loader = self.data.loader("train", [self.indices(s) for s in range(start, stop)])
        yield from loader


# --- checkpoint ----------------------------------------------------------------------------------------------
def rng_state() -> dict:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, model: nn.Module, optimizer: Any, clock: dict, step: int) -> None:
    """Write the resume point atomically (a failed save, e.g. a full disk, leaves the previous one intact)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "clock": clock,
        "rng": rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


# --- the run -------------------------------------------------------------------------------------------------
class Run:
    """One training run of one method on one seed (see the module docstring)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, wandb_root: Path, fabric: L.Fabric, progress: bool) -> None:
        self.cfg, self.run_dir, self.wandb_root, self.fabric, self.progress = cfg, run_dir, wandb_root, fabric, progress
        self.tc = cfg.trainer
        self.is_main = fabric.global_rank == 0
        self.log = MetricsLog(
            run_dir / "metrics.csv", {"sweep": cfg.sweep, "run": cfg.run, "method": cfg.label, "seed": cfg.seed}
        )
        self.mirror = WandbMirror()
        self.pending_train: list[tuple[int, float, dict[str, float]]] = []
        self.clock = {"train_seconds": 0.0, "wall_seconds": 0.0, "eval_seconds": 0.0}
        self.step, self.resumed_from = 0, None
        self.best = (-math.inf, 0)

    # setup
    def build(self) -> None:
        L.seed_everything(self.cfg.seed, verbose=False)
        data_args = {k: v for k, v in self.cfg.data.items() if k != "name"}
        self.data = dataset_class(self.cfg.data["name"])(**data_args)
        self.data.setup("fit")
        method = build_method(self.cfg.method, **self.data.dims.as_kwargs(), **self.cfg.method_args)
        backbone = self.data.backbone()
        if backbone.text_model is not None:
            method.init_from_clip_text(backbone.text_model)
        model = RunModel(backbone, method)
        groups = method.param_groups(self.tc.weight_decay) + backbone.param_groups(self.tc.weight_decay)
        self.has_params = any(g["params"] for g in groups)
        if self.has_params:  # nothing trains (e.g. meanP on a frozen store without adapter): no optimizer
            optimizer = build_optimizer(groups, self.tc.optimizer, self.tc.lr, self.tc.backbone_lr, self.tc.grad_clip)
            self.model, self.optimizer = self.fabric.setup(model, optimizer)
        else:
            self.model, self.optimizer = model, None
        self.method = method
        # One CPU process in full precision: call the module itself (Fabric's wrapper, its device move and its
        # autocast context would only add per-step overhead there); otherwise go through Fabric.
        plain = self.fabric.world_size == 1 and self.fabric.device.type == "cpu" and self.tc.precision == "32-true"
        self.forward = _unwrap(self.model) if plain else self.model
        self.to_device = (lambda batch: batch) if plain else self.fabric.to_device
        self.stream = BatchStream(self.data, self.cfg, self.fabric.global_rank, self.fabric.world_size)

    def restore(self) -> None:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return
        state = torch.load(path, weights_only=True, map_location="cpu")
        _unwrap(self.model).load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.resumed_from = state["step"], state["step"]
        self.clock = dict(state["clock"])
        set_rng_state(state["rng"])
        self.log.load_until(self.step)
        self.best = _best_so_far(self.log.rows)

    # loop
    def train(self) -> RunSummary:
        start = time.perf_counter()
        wall_before = self.clock["wall_seconds"]
        self._start_mirror()
        if self.resumed_from is not None:  # wandb may have lost what a killed process logged
            self.mirror.replay(row[4:] for row in self.log.rows)
        bar = self._progress_bar()
        if self.step == 0:
            self.evaluate_and_save(start, wall_before)
        stream = self.stream.iterate(self.step, self.tc.max_steps)
        while self.step < self.tc.max_steps:
            t0 = time.perf_counter()
            losses = self.train_step(next(stream))
            self.step += 1
            self.clock["train_seconds"] += time.perf_counter() - t0
            self.pending_train.append((self.step, self.clock["train_seconds"], losses))
            if bar is not None:
                bar.update(1)
            if self.step % self.tc.val_every == 0 or self.step == self.tc.max_steps:
                self.evaluate_and_save(start, wall_before)
                if bar is not None:
                    bar.set_postfix_str(f"val t2v R@1 {self.last_r1:.1f}")
        if bar is not None:
            bar.close()
        return self.summary()

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        multiplier = lr_multiplier(self.tc.schedule, self.step, self.tc.max_steps, self.tc.warmup)
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] = group["base_lr"] * multiplier
        text, video = self.forward(self.to_device(batch))
        if self.fabric.world_size > 1:
            text, video = self._gather(text), self._gather(video)
        with self.fabric.autocast():  # the wrapped forward above runs under it already
            losses = self.method.training_forward(text, video)
        if self.has_params and losses["loss"].requires_grad:
            self.fabric.backward(losses["loss"])
            if self.tc.grad_clip > 0:
                self.fabric.clip_gradients(
                    self.model, self.optimizer, max_norm=self.tc.grad_clip, error_if_nonfinite=False
                )
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.method.after_optimizer_step()
        return {("loss" if k == "loss" else f"loss/{k}"): v.detach().item() for k, v in losses.items()}

    def _gather(self, rep: dict[str, Tensor]) -> dict[str, Tensor]:
        gathered = self.fabric.all_gather(rep, sync_grads=True)  # each [W, B, ...]
        return {k: _contiguous_grad(v).reshape(-1, *v.shape[2:]) for k, v in gathered.items()}

    # evaluation + persistence
    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        model = _unwrap(self.model)
        model.eval()
        try:
            text, video = self._encode(model, split)
            if not self.is_main:
                return {}
            return retrieval_metrics(blockwise_similarity(self.method, text, video, self.tc.eval_block))
        finally:
            model.train()

    def _encode(self, model: RunModel, split: str) -> tuple[dict, dict]:
        """Encode every item once; with several processes each encodes a shard and rank 0 reassembles them."""
        n, world, rank = len(self.data.split(split)), self.fabric.world_size, self.fabric.global_rank
        shard = math.ceil(n / world)
        mine = list(range(rank * shard, min(n, (rank + 1) * shard)))
        batches = [mine[i : i + self.tc.eval_batch_size] for i in range(0, len(mine), self.tc.eval_batch_size)]
        features = lambda batch: model.backbone(self.to_device(batch))  # noqa: E731
        with self.fabric.autocast():
            text, video, index = encode_split(self.method, self.data.loader(split, batches), features)
        if world == 1:
            return text, video
        return self._reassemble(text, video, index, n, shard)

    def _reassemble(self, text: dict, video: dict, index: Tensor, n: int, shard: int) -> tuple[dict, dict]:
        pad = shard - index.shape[0]
        padded = [_pad_rep(text, pad), _pad_rep(video, pad), torch.cat([index, torch.full((pad,), -1)])]
        text_all, video_all, index_all = (self.fabric.all_gather(x) for x in padded)
        flat = lambda rep: {k: v.reshape(-1, *v.shape[2:]) for k, v in rep.items()}  # noqa: E731
        keep = index_all.reshape(-1) >= 0
        order = torch.argsort(index_all.reshape(-1)[keep])
        select = lambda rep: {k: v[keep][order] for k, v in flat(rep).items()}  # noqa: E731
        if not torch.equal(index_all.reshape(-1)[keep][order], torch.arange(n)):
            raise RuntimeError("distributed evaluation did not cover every item exactly once")
        return select(text_all), select(video_all)

    def evaluate_and_save(self, start: float, wall_before: float) -> None:
        t0 = time.perf_counter()
        splits = ("val", "test") if self.tc.eval_test else ("val",)
        results = {split: self.evaluate(split) for split in splits}
        eval_seconds = time.perf_counter() - t0
        self.clock["eval_seconds"] += eval_seconds
        self.clock["wall_seconds"] = wall_before + (time.perf_counter() - start)
        if not self.is_main:
            self.fabric.barrier()
            return
        self._record(results, eval_seconds)
        self.log.flush()
        save_checkpoint(self.run_dir / CHECKPOINT, _unwrap(self.model), self.optimizer, self.clock, self.step)
        self.fabric.barrier()

    def _record(self, results: dict[str, dict[str, float]], eval_seconds: float) -> None:
        for step, seconds, losses in self.pending_train:
            self.log.add(step, seconds, "train", losses)
            self.mirror.log(step, seconds, {f"train/{k}": v for k, v in losses.items()})
        self.pending_train = []
        now = self.clock["train_seconds"]
        for split, metrics in results.items():
            self.log.add(self.step, now, split, metrics)
        timing = {"eval_seconds": eval_seconds, "wall_seconds": self.clock["wall_seconds"]}
        self.log.add(self.step, now, "time", timing)
        flat = {f"{split}/{k}": v for split, m in results.items() for k, v in m.items()}
        self.mirror.log(self.step, now, {**flat, **{f"time/{k}": v for k, v in timing.items()}})
        self.last_r1 = results["val"]["t2v/R@1"]
        if self.last_r1 > self.best[0]:
            self.best = (self.last_r1, self.step)

    def _start_mirror(self) -> None:
        if self.is_main:
            regime = self.cfg.data.get("regime", "frozen")
            tags = [f"dataset:{self.cfg.data['name']}", f"regime:{regime}", f"seed:{self.cfg.seed}"]
            self.mirror.start(self.run_dir, self.wandb_root, self.cfg, tags, self.cfg.wandb.mode)

    def _progress_bar(self):  # noqa: ANN202
        if not (self.progress and self.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.tc.max_steps, initial=self.step, desc=self.cfg.run, leave=False, dynamic_ncols=True, disable=None
        )

    def summary(self) -> RunSummary:
        return RunSummary(
            run=self.cfg.run,
            steps=self.step,
            train_seconds=self.clock["train_seconds"],
            wall_seconds=self.clock["wall_seconds"],
            eval_seconds=self.clock["eval_seconds"],
            best=self.best[0],
            best_step=self.best[1],
            resumed_from=self.resumed_from,
        )


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    The gloo backward of ``torch.distributed.nn.functional.all_gather`` receives each rank's gradient into
    ``empty_like(grad)``, which keeps the strides of a permuted gradient (e.g. from an einsum), and gloo's scatter
    writes contiguous bytes into it: the gradient arrives scrambled (torch 2.13; pytorch/pytorch#192920). Seen as
    wrong gradients for X-Pool, X-CLIP and GLCCL under 2-process DDP; tests/test_ddp.py pins the fix."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


def _contiguous_grad(x: Tensor) -> Tensor:
    return _ContiguousGrad.apply(x) if x.requires_grad else x


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model) if not isinstance(model, RunModel) else model


def _pad_rep(rep: dict[str, Tensor], pad: int) -> dict[str, Tensor]:
    return {k: torch.cat([v, v[:1].expand(pad, *v.shape[1:])]) if pad else v for k, v in rep.items()}


def _best_so_far(rows: list[tuple]) -> tuple[float, int]:
    best = (-math.inf, 0)
    for row in rows:
        if row[6] == "val" and row[7] == "t2v/R@1" and row[8] > best[0]:
            best = (row[8], row[4])
    return best


# --- entry points --------------------------------------------------------------------------------------------
def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Check the run folder (free space, writable), drop temporaries a killed run left, write config.yaml and
    status=running."""
    check_writable(run_dir)
    remove_stale_temporaries(run_dir)
    atomic_write_yaml(run_dir / "config.yaml", cfg.to_dict())
    write_status(run_dir, "running")


def train_process(fabric: L.Fabric, cfg: RunConfig, run_dir: Path, wandb_root: Path, progress: bool) -> RunSummary:
    """The body of one run in one process (called directly, or per process by Fabric's launcher)."""
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    run = Run(cfg, run_dir, wandb_root, fabric, progress)
    run.build()
    if run.is_main:
        atomic_write_json(run_dir / "data.json", run.data.describe(), indent=2)
    run.restore()
    try:
        summary = run.train()
    except BaseException:
        run.mirror.finish(exit_code=1)
        raise
    run.mirror.summary({"best/val/t2v/R@1": summary.best, "best/step": summary.best_step})
    run.mirror.finish()
    return summary


def train(cfg: RunConfig, run_dir: Path, wandb_root: Path, progress: bool = True) -> RunSummary:
    """Train (or resume) one run; marks it ``done``, or ``failed`` with ``traceback.txt`` (and re-raises)."""
    prepare_run_dir(cfg, run_dir)
    try:
        summary = _launch(cfg, run_dir, wandb_root, progress)
    except KeyboardInterrupt:
        raise  # status stays "running": the next sweep resumes from the last checkpoint
    except BaseException:
        atomic_write_text(run_dir / "traceback.txt", traceback.format_exc())
        write_status(run_dir, "failed")
        raise
    write_status(run_dir, "done")
    if not cfg.trainer.keep_checkpoint:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return summary


def _launch(cfg: RunConfig, run_dir: Path, wandb_root: Path, progress: bool) -> RunSummary:
    tc = cfg.trainer
    if tc.strategy == "ddp" and tc.devices > 1:
        from lightning.fabric.strategies import DDPStrategy

        backend = "gloo" if tc.accelerator == "cpu" else None  # None: nccl on GPUs
        strategy = DDPStrategy(start_method="spawn", process_group_backend=backend)
        fabric = L.Fabric(accelerator=tc.accelerator, devices=tc.devices, strategy=strategy, precision=tc.precision)
        return fabric.launch(train_process, cfg, run_dir, wandb_root, progress)
    fabric = L.Fabric(accelerator=tc.accelerator, devices=1, precision=tc.precision)
    return train_process(fabric, cfg, run_dir, wandb_root, progress)
