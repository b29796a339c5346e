"""Every method in a stock ``lightning.Trainer`` (``tvr_convbench.bench.lightning``), with the harness's numbers.

- Two loops, same numbers: for every registered method, 50 steps of ``Trainer.fit`` (CPU, fp32, seed 0, the harness's
  data order, ``num_sanity_val_steps=0``) give the per-step losses, loss parts and in-batch recall of the harness
  run (``bench.trainer.train``: its step-0 evaluation and data facts included) to 1e-5 relative, and its val metrics
  at step 50. Measured: bit-identical for every method (the same modules, kernels and random draws in the same
  order; the loaders draw nothing from torch's global generator, or the dropout masks of X-Pool and GLSCL and the
  perturbed top-k of TS2-Net and UCoFiA would differ from the first epoch boundary on).
- 2-process gloo DDP (``ddp_spawn``) trains like one process: the reps gathered with gradients, validation sharded
  and reassembled (25 items: 13 + 12, each once).
- The data module's hooks: the harness's order for any rank and epoch, the harness's evaluation shards, no global
  random draw, and a sampler Lightning keeps under DDP.
- ``tvr-convbench-fit`` (LightningCLI): ``--print_config`` over a registered method and dataset, a 5-step fit with
  ``CSVLogger`` and ``WandbLogger`` (offline) whose checkpoint rebuilds the module; the README's example runs.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tvr_convbench.bench.config import TrainerConfig, load_sweep
from tvr_convbench.bench.distributed import shard
from tvr_convbench.bench.lightning import RetrievalModule, trainer_settings
from tvr_convbench.bench.trainer import needs_patches, train
from tvr_convbench.datasets import dataset_class
from tvr_convbench.datasets.base import RetrievalDataModule
from tvr_convbench.datasets.order import BatchOrder, BatchStream
from tvr_convbench.methods import list_methods

REPO = Path(__file__).resolve().parent.parent
DATA = {
    "train_videos": 48, "val_videos": 16, "test_videos": 8, "width": 16, "max_words": 12, "max_frames": 4,
    "frames_per_segment": 1, "vocab_size": 200, "patches": 4,
}  # fmt: skip
PROTOCOL = {"batch_size": 8, "eval_batch_size": 8, "eval_block": 16, "lr": 1.0e-3, "backbone_lr": 1.0e-3}
STEPS = 50


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def proxy(cache: Path, **knobs: object) -> RetrievalDataModule:
    return dataset_class("proxy")(**{**DATA, **knobs}, cache_dir=str(cache))


def quiet_trainer(**kwargs: object) -> L.Trainer:
    defaults = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**{**defaults, "enable_model_summary": False, **kwargs})


class Record(L.Callback):
    """The logged values of every training step and of the last validation (as the loggers receive them)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.val: dict[str, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


# --- two loops, same numbers ---------------------------------------------------------------------------------------
def harness_run(method: str, folder: Path, cache: Path) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """The harness's run (``bench.trainer.train``) of ``method``: {step: train metrics}, the val metrics at the end."""
    trainer = {**PROTOCOL, "max_steps": STEPS, "val_every": STEPS, "num_threads": 1}
    sweep = {"methods": [method], "seeds": [0], "data": {"name": "proxy", **DATA, "cache_dir": str(cache)}}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**sweep, "trainer": trainer, "wandb": {"mode": "disabled"}}))
    cfg = load_sweep(str(path)).runs()[0]
    train(cfg, folder / "run", folder / "wandb", progress=False)
    steps: dict[int, dict[str, float]] = {}
    val: dict[str, float] = {}
    with open(folder / "run" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == "train":
                steps.setdefault(int(row["step"]), {})[f"train/{row['metric']}"] = float(row["value"])
            elif row["split"] == "val" and int(row["step"]) == STEPS:
                val[f"val/{row['metric']}"] = float(row["value"])
    return steps, val


def lightning_run(method: str, cache: Path) -> tuple[Record, L.Trainer]:
    """The same protocol in a stock Trainer (``trainer_settings`` of the harness's config)."""
    L.seed_everything(0, verbose=False)
    data = proxy(cache)
    module_kwargs, trainer_kwargs = trainer_settings(TrainerConfig(**PROTOCOL, max_steps=STEPS, val_every=STEPS))
    model = RetrievalModule(method, data=data, **module_kwargs)
    record = Record()
    trainer = quiet_trainer(**trainer_kwargs, callbacks=[record])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-workers hints; `random`'s training_step returns None
        trainer.fit(model, datamodule=data)
    return record, trainer


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_stock_trainer_gives_the_harness_numbers(method: str, tmp_path: Path, cache: Path) -> None:
    harness, harness_val = harness_run(method, tmp_path, cache)
    record, trainer = lightning_run(method, cache)
    assert trainer.global_step == STEPS and len(record.steps) == STEPS == len(harness)
    worst = 0.0
    for step, logged in enumerate(record.steps, start=1):
        expected = harness[step]
        assert logged.pop("train/optimizer_step") == step
        assert sorted(logged) == sorted(expected), step
        for key, value in expected.items():
            error = abs(logged[key] - value) / max(abs(value), 1e-12)
            assert error <= 1e-5, (method, step, key, logged[key], value)
            worst = max(worst, error) if "loss" in key else worst
    assert record.val.pop("val/optimizer_step") == STEPS
    assert sorted(record.val) == sorted(harness_val) and len(harness_val) == 10
    for key, value in harness_val.items():  # logged in float32 by Lightning, float64 in the harness's log
        assert math.isclose(record.val[key], value, rel_tol=1e-6), (method, key, record.val[key], value)
    print(f"{method}: largest relative loss difference {worst:.3g}, val t2v R@1 {harness_val['val/t2v/R@1']}")


# --- DDP ------------------------------------------------------------------------------------------------------------
def csv_fit(cache: Path, out: Path, **trainer_kwargs: object) -> list[dict[str, str]]:
    """6 steps of seqtransf (no dropout: the processes' local draws would differ from one process's) on 25 val items,
    validated every 3 steps, logged by ``CSVLogger``."""
    from lightning.pytorch.loggers import CSVLogger

    L.seed_everything(0, verbose=False)
    data = proxy(cache, val_videos=25)
    protocol = {**PROTOCOL, "eval_batch_size": 4, "eval_block": 8, "lr": 1.0e-2, "backbone_lr": 1.0e-2, "warmup": 0.0}
    model = RetrievalModule("seqtransf", data=data, **protocol)
    kwargs = {"max_steps": 6, "val_check_interval": 3, "check_val_every_n_epoch": None, "log_every_n_steps": 1}
    trainer = quiet_trainer(**kwargs, **trainer_kwargs, logger=CSVLogger(out, name="", version=""))
    trainer.fit(model, datamodule=data)
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def by_step(rows: list[dict[str, str]], prefix: str) -> dict[tuple[int, str], float]:
    return {(int(r["step"]), k): float(v) for r in rows for k, v in r.items() if k.startswith(prefix) and v}


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_fit_trains_like_one_process(tmp_path: Path, cache: Path) -> None:
    single = csv_fit(cache, tmp_path / "one")
    ddp = csv_fit(cache, tmp_path / "two", strategy="ddp_spawn", devices=2)
    losses = by_step(single, "train/")
    assert len({step for step, _ in losses}) == 6 and losses.keys() == by_step(ddp, "train/").keys()
    for key, value in losses.items():
        assert math.isclose(by_step(ddp, "train/")[key], value, rel_tol=1e-4), key
    val = by_step(single, "val/")
    assert {step for step, _ in val} == {2, 5} and val.keys() == by_step(ddp, "val/").keys()  # logged step = done - 1
    for key, value in val.items():  # a step later, parameters differ in the last bits: one of 25 ranks may move
        assert abs(by_step(ddp, "val/")[key] - value) <= (4.0 if "R@" in key[1] else 1.0), key


# --- the data module's dataloader hooks ---------------------------------------------------------------------------
class FakeTrainer:
    def __init__(self, rank: int, world: int) -> None:
        self.global_rank, self.world_size = rank, world


def loader_batches(data: RetrievalDataModule, name: str, epoch: int = 0) -> list[list[int]]:
    loader = getattr(data, f"{name}_dataloader")()
    loader.sampler.set_epoch(epoch)
    return [batch["index"].tolist() for batch in loader]


def test_train_loader_serves_the_harness_order_on_every_rank(cache: Path) -> None:
    data = proxy(cache)
    data.configure_loaders(batch_size=16, seed=3, eval_batch_size=8)
    stream = BatchStream(data, 16, 3)
    per_epoch = len(data.split("train")) // 16
    for epoch in range(3):
        single = loader_batches(data, "train", epoch)
        assert single == [stream.indices(epoch * per_epoch + i) for i in range(per_epoch)]
        shares = []
        for rank in (0, 1):
            data.trainer = FakeTrainer(rank, 2)
            shares.append(loader_batches(data, "train", epoch))
            assert shares[-1] == [BatchOrder(48, 16, 3, rank, 2).indices(epoch * per_epoch + i) for i in range(3)]
        data.trainer = None
        assert [a + b for a, b in zip(*shares)] == single  # the gathered batch is the single-process batch
    assert isinstance(data.train_dataloader().sampler, torch.utils.data.DistributedSampler)  # Lightning keeps it


@pytest.mark.parametrize(("items", "world"), [(16, 1), (25, 2), (10, 4), (7, 3), (3, 4)])
def test_eval_loaders_shard_as_the_harness(cache: Path, items: int, world: int) -> None:
    data = proxy(cache)
    data.configure_loaders(batch_size=8, seed=0, eval_batch_size=3)
    n = len(data.split("val"))
    assert all(data.eval_shard(items, r, world) == shard(items, r, world)[0] for r in range(world))
    covered = []
    for rank in range(min(world, 2)):
        data.trainer = FakeTrainer(rank, world)
        batches = loader_batches(data, "val")
        assert all(len(b) <= 3 for b in batches) and sum(batches, []) == shard(n, rank, world)[0]
        covered += sum(batches, [])
    data.trainer = None
    assert covered == list(range(len(covered)))


def test_loaders_draw_nothing_from_the_global_generator(cache: Path) -> None:
    data = proxy(cache)
    data.configure_loaders(batch_size=8, seed=0, eval_batch_size=8)
    state = torch.get_rng_state()
    for name in ("train", "val", "test"):
        loader_batches(data, name)
        loader_batches(data, name)
    assert torch.equal(torch.get_rng_state(), state)


def test_loaders_need_their_settings(cache: Path) -> None:
    data = proxy(cache)
    with pytest.raises(RuntimeError, match="configure_loaders"):
        data.train_dataloader()
    with pytest.raises(ValueError, match="batch_size"):
        data.configure_loaders(batch_size=0, seed=0)
    assert "batch_size" not in type(data).config_parameters()  # no data: key duplicates the protocol


# --- the module -----------------------------------------------------------------------------------------------------
def test_a_method_that_needs_patches_asks_the_data_first(cache: Path) -> None:
    for method in [m for m in list_methods() if needs_patches(m)]:  # ts2net, ucofia
        data = proxy(cache)
        RetrievalModule(method, data=data, **PROTOCOL)
        assert data.patches and "video_patches" in data.split("train")[[0, 1]]
    data = proxy(cache)
    RetrievalModule("meanp", data=data)
    assert not data.patches and "video_patches" not in data.split("train")[[0, 1]]
    if needs_patches("ts2net"):  # a data module the model did not ask, fitted anyway: one clear error
        with pytest.raises(ValueError, match="patch tokens"):
            quiet_trainer(max_steps=1).fit(RetrievalModule("ts2net", data=proxy(cache)), datamodule=data)


def test_fit_without_a_datamodule_and_rebuild_from_the_checkpoint(tmp_path: Path, cache: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(0, verbose=False)
    model = RetrievalModule("xclip", {"temporal_layers": 1}, proxy(cache), **PROTOCOL, optimizer="adamw")
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, callbacks=[checkpoint], enable_checkpointing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)  # the module serves its own data module's loaders
    assert trainer.global_step == 3
    rebuilt = RetrievalModule.load_from_checkpoint(tmp_path / "last.ckpt")
    assert rebuilt.hparams["method"] == "xclip" and rebuilt.hparams["method_args"]["temporal_layers"] == 1
    assert rebuilt.hparams["data"]["name"] == "proxy" and rebuilt.hparams["dims"] == model.hparams["dims"]
    state = model.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in rebuilt.state_dict().items())
    with pytest.raises(ValueError, match="dims"):
        RetrievalModule("xclip", data=proxy(cache), dims={"width": 8, "max_frames": 4, "max_words": 12})


# --- the LightningCLI entry point ---------------------------------------------------------------------------------
def test_cli_prints_the_config_of_a_registered_method(capsys: pytest.CaptureFixture, monkeypatch) -> None:  # noqa: ANN001
    from tvr_convbench.bench.fit_cli import main

    monkeypatch.setattr(sys, "argv", ["tvr-convbench-fit"])  # the arguments are main's, not pytest's
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--model", "glscl", "--data", "proxy", "--trainer.max_steps", "400", "--print_config"])
    assert stop.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["max_steps"] == 400 and config["trainer"]["gradient_clip_val"] == 1.0
    assert config["model"]["class_path"] == "tvr_convbench.bench.fit_cli.glscl"
    args = config["model"]["init_args"]
    assert args["num_queries"] == 8 and args["lr"] == 1e-4 and args["optimizer"] == "bertadam"
    assert "data" not in args  # linked from --data at instantiation
    assert config["data"]["class_path"] == "tvr_convbench.bench.fit_cli.proxy"
    assert config["data"]["init_args"]["val_videos"] == 500


@pytest.mark.slow
def test_cli_fit_with_csv_and_wandb_loggers(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    from tvr_convbench.bench.fit_cli import main

    monkeypatch.setattr(sys, "argv", ["tvr-convbench-fit"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    data = [f"--data.{k}={v}" for k, v in {**DATA, "cache_dir": cache}.items()]
    model = ["--model=xpool", "--model.dropout=0.4", *(f"--model.{k}={v}" for k, v in PROTOCOL.items())]
    loggers = [
        "--trainer.logger+=CSVLogger", f"--trainer.logger.save_dir={tmp_path / 'csv'}",
        "--trainer.logger+=WandbLogger", f"--trainer.logger.save_dir={tmp_path / 'wandb'}",
    ]  # fmt: skip
    trainer = ["--trainer.max_steps=5", "--trainer.val_check_interval=5", "--trainer.accelerator=cpu"]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(["fit", *model, "--data=proxy", *data, *trainer, *quiet, *loggers])
    finally:
        wandb.finish()
    version = tmp_path / "csv" / "lightning_logs" / "version_0"
    with open(version / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["train/optimizer_step"])) for r in rows if r["train/loss"]] == [1, 2, 3, 4, 5]
    assert [float(r["val/t2v/R@1"]) >= 0 for r in rows if r["val/t2v/R@1"]] == [True]
    assert yaml.safe_load((version / "config.yaml").read_text())["model"]["init_args"]["dropout"] == 0.4
    assert list((tmp_path / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    rebuilt = RetrievalModule.load_from_checkpoint(next((version / "checkpoints").glob("*.ckpt")))
    assert rebuilt.hparams["method"] == "xpool" and rebuilt.hparams["method_args"]["dropout"] == 0.4


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "lightning_fit.py"), "--tiny", "--steps", "5", "--method", "xpool"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "xpool: val t2v R@1" in result.stdout and "after 5 steps" in result.stdout
    assert list((tmp_path / "lightning_logs" / "xpool").glob("version_0/metrics.csv"))
