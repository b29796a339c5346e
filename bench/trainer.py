"""The training loop: one protocol for every method, on ``lightning.Fabric``.

Per optimizer step (``StepFunction``): the lr from the warmup+cosine schedule, backbone -> method encoders (per
process), the reps of all processes gathered with gradients (``bench.distributed``), ``training_forward``
(similarity + loss: the contract's one way into the loss), backward, global grad-norm clip, optimizer step,
logit-scale clamp. At every step of ``TrainerConfig.eval_steps()`` (step 0, every ``val_every`` steps, the last
step): evaluate the whole val split with the clock paused, write ``metrics.csv`` and ``last.ckpt`` atomically,
mirror to wandb. Data order is a pure function of (seed, epoch) (``tvr_convbench.datasets.order``).

Several processes (``strategy: ddp``; Fabric spawns them, gloo on CPU): each takes its contiguous share of the
global batch, and evaluation shards the split and rank 0 reassembles it. Every process is seeded alike, so dropout
draws repeat across ranks: the same masks for each rank's local items, and identical draws after the gather, where
all ranks must compute the same loss.

Two clocks: ``train_seconds`` counts everything of a training step (data fetch included) and excludes
evaluation, logging and checkpointing; ``wall_seconds`` counts everything. Both survive a resume.

Resume (``bench.checkpoint``): ``last.ckpt`` holds the model, optimizer, step, both clocks and every RNG state;
because the data position follows from the step, a resumed run consumes exactly the batches the uninterrupted run
would, and (on CPU) its metrics are bit-identical (tests/test_resume.py: SIGKILL during training, during an
evaluation, right after a checkpoint, between ``metrics.csv`` and its checkpoint). A resumed run first replays its
logged rows into the wandb mirror, which may have lost what a killed process logged. Damaged resume state (a
checkpoint that does not read or load, a log missing, cut short or not UTF-8) is moved aside and the run restarts from
scratch, as a fresh run (``Run.restore``).

A non-finite loss stops the run at that step (``Diverged``): the training rows up to it are logged, the broken model
is not evaluated, ``traceback.txt`` names the step and the values, and the run is marked ``diverged`` (a result: a
rerun skips it). One process trains a run folder at a time (``core.files.folder_lock`` on ``<run>/.lock``).
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from tvr_convbench.bench.calibration import describe_data
from tvr_convbench.bench.checkpoint import (
    DamagedCheckpoint,
    load_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tvr_convbench.bench.config import RunConfig, TrainerConfig
from tvr_convbench.bench.distributed import gather_reps, reassemble, shard
from tvr_convbench.bench.evaluate import encode_split, evaluate_reps
from tvr_convbench.bench.runlog import DamagedLog, MetricsLog, write_fingerprint, write_status
from tvr_convbench.bench.wandb_mirror import WandbMirror
from tvr_convbench.core.errors import one_line
from tvr_convbench.core.files import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    check_writable,
    folder_lock,
    move_aside,
    remove_stale_temporaries,
)
from tvr_convbench.core.metrics import in_batch_recall
from tvr_convbench.core.schema import Row, RunPaths
from tvr_convbench.datasets import dataset_class
from tvr_convbench.datasets.base import Backbone, RetrievalDataModule
from tvr_convbench.datasets.order import BatchStream
from tvr_convbench.methods import METHODS, build_method
from tvr_convbench.methods.base import Losses, RetrievalMethod
from tvr_convbench.methods.parts.optim import build_optimizer, lr_multiplier


class RunModel(nn.Module):
    """Backbone + method, the unit Fabric wraps (so DDP sees every trainable parameter in one forward)."""

    def __init__(self, backbone: Backbone, method: RetrievalMethod) -> None:
        super().__init__()
        self.backbone = backbone
        self.method = method

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
    diverged_at: int | None = None
    """the optimizer step whose loss or in-batch recall was non-finite (the run stopped there)"""


class Diverged(RuntimeError):
    """A non-finite loss or recall: the run stops and is marked ``diverged``."""

    def __init__(self, step: int, values: dict[str, float]) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        super().__init__(f"diverged at optimizer step {step}: {bad}")
        self.step = step


def build_pair(method_name: str, method_args: dict, data: RetrievalDataModule) -> tuple[Backbone, RetrievalMethod]:
    """The backbone of ``data`` and the method built on its shapes, as every run pairs them: temporal modules
    initialised from CLIP's text tower when there is one, the token shift installed when the method asks (a live
    vision tower only)."""
    method = build_method(method_name, **data.dims.as_kwargs(), **method_args)
    backbone = data.backbone()
    if backbone.text_model is not None:
        method.init_from_clip_text(backbone.text_model)
    if method.token_shift_layers:  # TS2-Net/UCoFiA's token shift lives in the vision tower (live CLIP only)
        backbone.enable_token_shift(method.token_shift_layers)
    return backbone, method


def run_optimizer(model: RunModel, tc: TrainerConfig) -> torch.optim.Optimizer | None:
    """The optimizer over the method's and the backbone's parameter groups (``None`` when nothing trains, e.g.
    meanP on a frozen store without adapter)."""
    groups = model.method.param_groups(tc.weight_decay) + model.backbone.param_groups(tc.weight_decay)
    if not any(g["params"] for g in groups):
        return None
    return build_optimizer(groups, tc.optimizer, tc.lr, tc.backbone_lr, tc.grad_clip)


def build_run_model(backbone: Backbone, method: RetrievalMethod, tc: TrainerConfig, fabric: L.Fabric):  # noqa: ANN201
    """The model (``RunModel``, set up by Fabric) and its optimizer (``run_optimizer``)."""
    model = RunModel(backbone, method)
    optimizer = run_optimizer(model, tc)
    return (model, None) if optimizer is None else fabric.setup(model, optimizer)


def step_metrics(losses: Losses) -> dict[str, float]:
    """What a training step logs: the loss, each part as ``loss/<part>``, and the in-batch recall of the loss's
    own similarity (``t2v/R@1`` ...)."""
    logged = {("loss" if k == "loss" else f"loss/{k}"): v.detach().item() for k, v in losses.items()}
    return logged | in_batch_recall(losses.similarity)


class StepFunction:
    """One optimizer step of the protocol: ``step_fn(batch, step) -> {"loss": ..., "loss/<part>": ...,
    "t2v/R@1": ..., "t2v/R@5": ..., "v2t/R@1": ..., "v2t/R@5": ...}`` (the in-batch recall of the global batch).

    ``step`` is the 0-based index of the optimizer step (it sets the lr). The harness loop and ``bench perf`` call
    this same object, so the benchmark times the trainer's own step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, fabric: L.Fabric, tc: TrainerConfig):
        self.model = model
        self.method = _unwrap(model).method
        self.optimizer = optimizer
        self.fabric = fabric
        self.tc = tc
        # One CPU process in full precision: call the module itself (Fabric's wrapper, its device move and its
        # autocast context would only add per-step overhead there); otherwise go through Fabric.
        plain = fabric.world_size == 1 and fabric.device.type == "cpu" and tc.precision == "32-true"
        self.forward = _unwrap(model) if plain else model
        self.to_device = (lambda batch: batch) if plain else fabric.to_device

    def __call__(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        self._set_lr(step)
        text, video = self.forward(self.to_device(batch))
        if self.fabric.world_size > 1:
            text, video = gather_reps(self.fabric, text), gather_reps(self.fabric, video)
        with self.fabric.autocast():  # the wrapped forward above runs under it already
            losses = self.method.training_forward(text, video)
        if self.optimizer is not None and losses["loss"].requires_grad:
            self._update(losses["loss"])
        return step_metrics(losses)

    def _set_lr(self, step: int) -> None:
        multiplier = lr_multiplier(self.tc.schedule, step, self.tc.max_steps, self.tc.warmup)
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] = group["base_lr"] * multiplier

    def _update(self, loss: Tensor) -> None:
        self.fabric.backward(loss)
        if self.tc.grad_clip > 0:
            self.fabric.clip_gradients(self.model, self.optimizer, max_norm=self.tc.grad_clip, error_if_nonfinite=False)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_optimizer_step()


# --- the run -------------------------------------------------------------------------------------------------
class Run:
    """One training run of one method on one seed (see the module docstring)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, wandb_root: Path, fabric: L.Fabric, progress: bool) -> None:
        self.cfg = cfg
        self.paths = RunPaths(run_dir)
        self.wandb_root = wandb_root
        self.fabric = fabric
        self.progress = progress
        self.tc = cfg.trainer
        self.eval_steps = frozenset(self.tc.eval_steps())
        self.is_main = fabric.global_rank == 0
        self.log = MetricsLog(
            self.paths.metrics, {"sweep": cfg.sweep, "run": cfg.run, "method": cfg.label, "seed": cfg.seed}
        )
        self.mirror = WandbMirror()
        self.pending_train: list[tuple[int, float, dict[str, float]]] = []
        self.clock = {"train_seconds": 0.0, "wall_seconds": 0.0, "eval_seconds": 0.0}
        self.step = 0
        self.resumed_from: int | None = None
        self.diverged_at: int | None = None
        self.reference_seconds = 0.0
        self.best = (-math.inf, 0)

    # setup
    def build(self) -> None:
        L.seed_everything(self.cfg.seed, verbose=False)
        self.data = build_data(self.cfg.data, needs_patches(self.cfg.method))
        backbone, method = build_pair(self.cfg.method, self.cfg.method_args, self.data)
        self.model, self.optimizer = build_run_model(backbone, method, self.tc, self.fabric)
        self.method = method
        self.step_fn = StepFunction(self.model, self.optimizer, self.fabric, self.tc)
        self.stream = BatchStream(
            self.data, self.tc.batch_size, self.cfg.seed, self.fabric.global_rank, self.fabric.world_size
        )

    def restore(self) -> None:
        """Resume from ``last.ckpt`` and its ``metrics.csv``. Damaged state (the checkpoint unreadable or not
        loadable into this model, or the log missing, cut short or not UTF-8) is moved aside (``<name>.damaged-<n>``,
        never deleted) with a one-line warning, and the run restarts from scratch exactly as a fresh run would."""
        if not self.paths.checkpoint.exists():
            return
        try:
            state = read_checkpoint(self.paths.checkpoint)
            self.log.load_until(state["step"])
        except (DamagedCheckpoint, DamagedLog) as err:
            self._restart_from_scratch(str(err))
            return
        fresh = rng_state()  # where a fresh run would be now
        try:
            self.step, self.clock = load_checkpoint(state, _unwrap(self.model), self.optimizer)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:  # loaded in part: build anew
            self.step, self.clock = 0, {key: 0.0 for key in self.clock}
            self._restart_from_scratch(f"{self.paths.checkpoint}: does not load ({type(err).__name__}: {err})")
            self.build()
            set_rng_state(fresh)
            return
        self.resumed_from = self.step
        self.best = _best_so_far(self.log.rows)

    def _restart_from_scratch(self, why: str) -> None:
        if self.is_main:  # every process read the same files; one moves them
            moved = move_aside(self.paths.checkpoint, self.paths.metrics)
            names = ", ".join(path.name for path in moved)
            warnings.warn(one_line(f"{why}; moved aside ({names}), restarting from scratch"), stacklevel=3)
        self.fabric.barrier()
        self.log.rows = []

    # loop
    def train(self) -> RunSummary:
        start = time.perf_counter()
        wall_before = self.clock["wall_seconds"]
        self._start_mirror()
        if self.resumed_from is not None:  # wandb may have lost what a killed process logged
            self.mirror.replay(row[4:] for row in self.log.rows)
        bar = self._progress_bar()
        if self.resumed_from is None:  # a resumed run's step-0 evaluation is in its log already
            self.evaluate_and_save(start, wall_before)
        stream = self.stream.iterate(self.step, self.tc.max_steps)
        while self.step < self.tc.max_steps:
            try:
                self.advance(stream)
            except Diverged as err:
                self.stop_diverged(err, start, wall_before)
                break
            if bar is not None:
                bar.update(1)
            if self.step in self.eval_steps:
                self.evaluate_and_save(start, wall_before)
                if bar is not None:
                    bar.set_postfix_str(f"val t2v R@1 {self.last_r1:.1f}")
        if bar is not None:
            bar.close()
        return self.summary()

    def advance(self, stream) -> None:  # noqa: ANN001 - an iterator of batches
        """One iteration of the training loop: fetch the next batch and take one optimizer step, on the clock."""
        t0 = time.perf_counter()
        losses = self.train_step(next(stream))
        self.step += 1
        self.clock["train_seconds"] += time.perf_counter() - t0
        self.pending_train.append((self.step, self.clock["train_seconds"], losses))
        if not all(math.isfinite(v) for v in losses.values()):
            raise Diverged(self.step, losses)

    def stop_diverged(self, err: Diverged, start: float, wall_before: float) -> None:
        """Log the steps up to the diverging one (no evaluation of the broken model) and stop."""
        self.diverged_at = err.step
        self.clock["wall_seconds"] = wall_before + (time.perf_counter() - start)
        if self.is_main:
            self._flush_train()
            self.log.flush()
            atomic_write_text(self.paths.traceback, f"{err}\n(the run stopped; it is marked diverged)\n")
        self.fabric.barrier()

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """The optimizer step at ``self.step`` on ``batch`` (``StepFunction``)."""
        return self.step_fn(batch, self.step)

    # evaluation + persistence
    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        model = _unwrap(self.model)
        model.eval()
        try:
            text, video = self._encode(model, split)
            if not self.is_main:
                return {}
            return evaluate_reps(self.method, text, video, self.tc.eval_block)
        finally:
            model.train()

    def _encode(self, model: RunModel, split: str) -> tuple[dict, dict]:
        """Encode every item once; with several processes each encodes a shard and rank 0 reassembles them."""
        n, world = len(self.data.split(split)), self.fabric.world_size
        mine, size = shard(n, self.fabric.global_rank, world)
        batch = self.tc.eval_batch_size
        batches = [mine[i : i + batch] for i in range(0, len(mine), batch)]
        features = lambda items: model.backbone(self.step_fn.to_device(items))  # noqa: E731
        with self.fabric.autocast():
            text, video, index = encode_split(self.method, self.data.loader(split, batches), features)
        if world > 1:
            text, video = reassemble(self.fabric, [text, video], index, n, size)
        if self.method.needs_reference_texts and self.is_main:  # opt-in post-processing (e.g. UCoFiA's SK-norm)
            video = self.method.calibrate_videos(video, self._reference_texts(model))
        return text, video

    def _reference_texts(self, model: RunModel) -> dict:
        """The training split's text reps, for a method that post-processes evaluation with them; the seconds it
        takes are logged as ``time/reference_seconds`` (a cost of the post-processing, inside evaluation)."""
        t0 = time.perf_counter()
        n, batch = len(self.data.split("train")), self.tc.eval_batch_size
        batches = [list(range(i, min(n, i + batch))) for i in range(0, n, batch)]
        texts = [
            self.method.encode_text(model.backbone(self.step_fn.to_device(items)))
            for items in self.data.loader("train", batches)
        ]
        self.reference_seconds = time.perf_counter() - t0
        return {key: torch.cat([t[key] for t in texts]) for key in texts[0]}

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
        save_checkpoint(self.paths.checkpoint, _unwrap(self.model), self.optimizer, self.clock, self.step)
        self.fabric.barrier()

    def _flush_train(self) -> None:
        for step, seconds, losses in self.pending_train:
            self.log.add(step, seconds, "train", losses)
            self.mirror.log(step, seconds, {f"train/{k}": v for k, v in losses.items()})
        self.pending_train = []

    def _record(self, results: dict[str, dict[str, float]], eval_seconds: float) -> None:
        self._flush_train()
        now = self.clock["train_seconds"]
        for split, metrics in results.items():
            self.log.add(self.step, now, split, metrics)
        timing = {"eval_seconds": eval_seconds, "wall_seconds": self.clock["wall_seconds"]}
        if self.method.needs_reference_texts:
            timing["reference_seconds"] = self.reference_seconds
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
            self.mirror.start(self.paths.root, self.wandb_root, self.cfg, tags, self.cfg.wandb.mode)

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
            diverged_at=self.diverged_at,
        )


def build_data(data: dict, patches: bool = False) -> RetrievalDataModule:
    """The data module of a resolved ``data:`` section, set up for training (with patch tokens when asked)."""
    module = dataset_class(data["name"])(**{k: v for k, v in data.items() if k != "name"})
    if patches:
        module.request_patches()
    module.setup("fit")
    return module


def needs_patches(method: str) -> bool:
    """Whether a registered method reads ``video_patches`` (then, and only then, the data path carries them)."""
    return METHODS.get(method).cls.needs_patches


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model) if not isinstance(model, RunModel) else model


def _best_so_far(rows: list[Row]) -> tuple[float, int]:
    best = (-math.inf, 0)
    for row in rows:
        if row.split == "val" and row.metric == "t2v/R@1" and row.value > best[0]:
            best = (row.value, row.step)
    return best


# --- entry points --------------------------------------------------------------------------------------------
def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Check the run folder (free space, writable), drop temporaries a killed run left, write config.yaml and
    status=running."""
    check_writable(run_dir)
    remove_stale_temporaries(run_dir)
    atomic_write_yaml(RunPaths(run_dir).config, cfg.to_dict())
    write_fingerprint(cfg, run_dir)
    write_status(run_dir, "running")


def train_process(fabric: L.Fabric, cfg: RunConfig, run_dir: Path, wandb_root: Path, progress: bool) -> RunSummary:
    """The body of one run in one process (called directly, or per process by Fabric's launcher)."""
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    run = Run(cfg, run_dir, wandb_root, fabric, progress)
    run.build()
    if run.is_main:
        atomic_write_json(run.paths.data, describe_data(run.data, run.tc.eval_batch_size, run.tc.eval_block), indent=2)
    run.restore()
    try:
        summary = run.train()
    except BaseException:
        run.mirror.finish(exit_code=1)
        raise
    run.mirror.summary({"best/val/t2v/R@1": summary.best, "best/step": summary.best_step})
    if run.is_main and cfg.phase == "scored":  # targets fixed in advance: the run's own record gets them now
        from tvr_convbench.bench.mirror_report import run_summary_from_targets

        run.mirror.summary(run_summary_from_targets(run_dir, wandb_root))  # {} for post hoc targets; never raises
    run.mirror.finish()
    return summary


def train(cfg: RunConfig, run_dir: Path, wandb_root: Path, progress: bool = True) -> RunSummary:
    """Train (or resume) one run; marks it ``done``, ``diverged`` (a non-finite loss stopped it; traceback.txt says
    where), or ``failed`` with ``traceback.txt`` (and re-raises). One process per run folder (a file lock)."""
    with folder_lock(RunPaths(run_dir).lock, "training process"):
        return _train_locked(cfg, run_dir, wandb_root, progress)


def _train_locked(cfg: RunConfig, run_dir: Path, wandb_root: Path, progress: bool) -> RunSummary:
    prepare_run_dir(cfg, run_dir)
    try:
        summary = _launch(cfg, run_dir, wandb_root, progress)
    except KeyboardInterrupt:
        raise  # status stays "running": the next sweep resumes from the last checkpoint
    except BaseException:
        atomic_write_text(RunPaths(run_dir).traceback, traceback.format_exc())
        write_status(run_dir, "failed")
        raise
    write_status(run_dir, "done" if summary.diverged_at is None else "diverged")
    if not cfg.trainer.keep_checkpoint:
        RunPaths(run_dir).checkpoint.unlink(missing_ok=True)
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
