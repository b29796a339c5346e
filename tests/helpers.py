"""Shared test helpers: tiny, seeded feature batches with DiDeMo's structure (padded words and frames)."""

from __future__ import annotations

import contextlib
import copy
import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from tvr_convbench.bench import trainer
from tvr_convbench.bench.evaluate import blockwise_similarity, cat_reps
from tvr_convbench.bench.perf.probes import PeakMemory
from tvr_convbench.methods import build_method
from tvr_convbench.methods.parts.pooling import masked_mean_of_normalized

TINY = {"width": 32, "max_frames": 5, "max_words": 7}


def feature_batch(
    batch: int = 6,
    words: int = 7,
    frames: int = 5,
    width: int = 32,
    seed: int = 0,
    offset: int = 0,
    patches: int = 0,
) -> dict[str, torch.Tensor]:
    """A FeatureBatch with variable text/video lengths; padded slots hold constant (non-zero) features, as CLIP's
    pad-token and blank-frame encodings do. ``patches > 0`` adds ``video_patches [B, F, patches, D]`` (drawn after
    everything else, so the other keys do not change; padded frames hold one constant set of blank patches)."""
    g = torch.Generator().manual_seed(seed)
    text_len = torch.randint(3, words + 1, (batch,), generator=g)  # SOT + words + EOT
    text_mask = torch.arange(words)[None] < text_len[:, None]  # [B, L]
    tokens = 2.0 * torch.randn(batch, words, width, generator=g)
    pad_token = torch.randn(width, generator=g)
    tokens = torch.where(text_mask[..., None], tokens, pad_token)
    eot = tokens[torch.arange(batch), text_len - 1]  # [B, D]
    frame_len = torch.randint(1, frames + 1, (batch,), generator=g)
    video_mask = torch.arange(frames)[None] < frame_len[:, None]  # [B, F]
    blank = torch.randn(width, generator=g)
    video = torch.where(video_mask[..., None], 2.0 * torch.randn(batch, frames, width, generator=g), blank)
    out = {
        "text_tokens": tokens,
        "text_mask": text_mask,
        "text_eot": eot,
        "video_frames": video,
        "video_mask": video_mask,
        "index": torch.arange(offset, offset + batch),
    }
    if patches:
        blank_patches = torch.randn(patches, width, generator=g)  # [P, D]
        real = 2.0 * torch.randn(batch, frames, patches, width, generator=g)  # [B, F, P, D]
        out["video_patches"] = torch.where(video_mask[..., None, None], real, blank_patches)
    return out


def tiny_method(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_method(name, **TINY, **overrides)


# --- measuring tools shared by the method tests ----------------------------------------------------------------
GIB = 2**30
SCALE = 100.0  # the default logit scale


# --- shared measuring tools ---------------------------------------------------------------------------------------
# PeakMemory: the one peak-memory probe, shared with ``bench perf`` (tvr_convbench.bench.perf.probes).
def measured_similarity_peak(method, text, video) -> int:
    """Peak intermediate bytes of one ``method.similarity`` call on cached reps (no autograd)."""
    with torch.no_grad(), PeakMemory(exclude=(*text.values(), *video.values())) as peak:
        method.similarity(text, video)
    return peak.peak


def float64_reference(method, text, video) -> torch.Tensor:
    """The same similarity evaluated in float64 on the same (float32) reps: isolates the pairwise stage's rounding."""

    def to64(rep):
        return {k: v.double() if v.is_floating_point() else v for k, v in rep.items()}

    with torch.no_grad():
        return copy.deepcopy(method).double().similarity(to64(text), to64(video))


def perturb_(method, std: float = 0.05, seed: int = 0):
    """Move every parameter off its (identity / LayerNorm) initialisation, so the tests cover a general state."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return method


def reps_per_item_bytes(method, width: int, frames: int, words: int) -> int:
    """Bytes one text plus one video occupy in the cached reps, measured on real encodings."""
    batch = feature_batch(batch=2, words=words, frames=frames, width=width)
    with torch.no_grad():
        reps = (method.encode_text(batch), method.encode_video(batch))
    return sum(t.nbytes for rep in reps for t in rep.values()) // 2


def eval_memory(name: str, num_items: int = 1000) -> tuple[int, int]:
    """(measured peak bytes of one max_eval_block^2 block, bound for a num_items^2 blockwise evaluation) at DiDeMo
    shapes (D=512, 64 frames, 64 words)."""
    torch.manual_seed(0)
    method = build_method(
        name, width=512, max_frames=64, max_words=64, temporal_layers=1
    ).eval()  # depth is irrelevant here
    block = method.max_eval_block
    batch = feature_batch(batch=block, words=64, frames=64, width=512)
    with torch.no_grad():
        text, video = method.encode_text(batch), video_rep(method, batch)
        with PeakMemory(exclude=(*text.values(), *video.values())) as meter:
            method.similarity(text, video)
    rep_bytes = sum(t.nbytes for t in (*text.values(), *video.values())) * num_items // block
    return meter.peak, meter.peak + rep_bytes + 4 * num_items**2  # block + cached reps + float32 output


def video_rep(method, batch: dict) -> dict:
    """The method's video rep with the frame features standing in for the seqTransf outputs (the similarity's cost
    does not depend on them; this skips the seqTransf forward)."""
    frames, mask = batch["video_frames"], batch["video_mask"]
    if hasattr(method, "video_features"):  # GLCCL
        return method.video_features(frames, mask)
    return {"video": masked_mean_of_normalized(frames, mask), "frames": F.normalize(frames, dim=-1), "frame_mask": mask}


def perturb_head(method: torch.nn.Module, scale: float = 0.1, seed: int = 5) -> None:
    """Move every identity-initialised matrix off the identity (so the re-weighting orientation matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in method.head.parameters():
            param.add_(scale * torch.randn(param.shape, generator=g))


def attn_sum_oracle(x: torch.Tensor, matrix: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """AttnSum of the spec on the kept slots only: beta = softmax(x / 0.01) M, score = sum_k x_k beta_k."""
    x, matrix = x[keep], matrix[keep][:, keep]
    return (x * (torch.softmax(x / 0.01, dim=0) @ matrix)).sum()


def assert_blockwise_within_rounding(method, text: dict, video: dict, blocks: tuple[int, ...] = (32, 100)) -> None:
    """Blockwise scoring vs the unblocked matrix when it cannot be bit-exact (GEMM kernels, and so summation
    orders, depend on the block shape): a block may be at most 2x less accurate than the unblocked matrix against a
    float64 evaluation of the same pairwise stage (same reps), so |block - full| <= 3 x err(full), and err(full)
    itself must be float32-level (<= 2^-20 in cosine, times the logit scale)."""
    with torch.no_grad():
        full = method.similarity(text, video)
    reference = float64_reference(method, text, video)
    err_full = (full.double() - reference).abs().max().item()
    assert err_full <= SCALE * 2**-20
    for block in blocks:
        blocked = blockwise_similarity(method, text, video, block)
        assert (blocked.double() - reference).abs().max().item() <= 2 * err_full
        torch.testing.assert_close(blocked, full, rtol=0, atol=3 * err_full)


def assert_odd_blockwise(name: str) -> None:
    """257 texts x 193 videos scored in 50 x 50 blocks equal one unblocked call (perturbed AOSM head)."""
    torch.manual_seed(0)
    method = build_method(name, width=8, max_frames=3, max_words=4).eval()
    perturb_head(method)
    with torch.no_grad():
        batches = [feature_batch(batch=n, seed=s, width=8, words=4, frames=3) for n, s in ((200, 1), (57, 2))]
        text = cat_reps([method.encode_text(b) for b in batches])
        video = method.encode_video(feature_batch(batch=193, seed=3, width=8, words=4, frames=3))
        full = method.similarity(text, video)
    assert full.shape == (257, 193)
    torch.testing.assert_close(blockwise_similarity(method, text, video, block=50), full, rtol=1e-6, atol=1e-4)


@contextlib.contextmanager
def interrupted_after_checkpoint(
    step: int, run: str = "", exc: type[BaseException] = KeyboardInterrupt
) -> Iterator[None]:
    """Within the block, the trainer raises ``exc`` right after ``last.ckpt`` of ``step`` is in place (for runs whose
    folder contains ``run``): as far as the files on disk go, a kill at that moment."""
    original = trainer.save_checkpoint

    def save_then_stop(path, model, optimizer, clock, at):  # noqa: ANN001, ANN202
        original(path, model, optimizer, clock, at)
        if at == step and run in str(path):
            raise exc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", save_then_stop)
        yield


# --- tiny sweeps through the CLI (tests of the harness: reliability, schedule, targets, training recall) ----------
TINY_DATA = {
    "name": "proxy", "train_videos": 32, "val_videos": 12, "test_videos": 8, "width": 16, "max_words": 10,
    "max_frames": 4, "frames_per_segment": 1, "vocab_size": 200,
}  # fmt: skip
TINY_TRAINER = {"max_steps": 6, "val_every": 2, "batch_size": 8, "num_threads": 1, "lr": 1.0e-3, "backbone_lr": 1.0e-3}


def tiny_sweep(
    folder: Path,
    cache: Path,
    name: str = "s",
    methods: tuple | list = ("meanp",),
    seeds: tuple | list = (0,),
    trainer: dict | None = None,
    **sections: object,
) -> Path:
    """Write ``folder/<name>.yaml``: a sweep of seconds on the tiny proxy (``TINY_DATA``, ``TINY_TRAINER`` updated by
    ``trainer``), wandb disabled, plus any other top-level ``sections`` (``targets``, ``overrides``...)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "methods": list(methods),
        "seeds": list(seeds),
        "data": {**TINY_DATA, "cache_dir": str(cache)},
        "trainer": {**TINY_TRAINER, **(trainer or {})},
        "wandb": {"mode": "disabled"},
        **sections,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def sweep_cli(path: Path, runs: Path, *more: str) -> int:
    """``tvr-convbench sweep PATH --runs-dir RUNS --no-report --no-progress MORE...`` in this process."""
    from tvr_convbench.bench.cli import main

    return main(["sweep", str(path), "--runs-dir", str(runs), "--no-report", "--no-progress", *more])


def metric_rows(metrics_csv: Path, clocks: bool = False) -> list[tuple[int, str, str, str]]:
    """(step, split, metric, value as written) of every row of a ``metrics.csv`` / ``results.csv`` (the ``time``
    rows only with ``clocks``), checking every row is whole."""
    from tvr_convbench.core.schema import COLUMNS

    with open(metrics_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS, rows[0]
    assert all(len(row) == len(COLUMNS) for row in rows[1:])
    return [(int(r[4]), r[6], r[7], r[8]) for r in rows[1:] if clocks or r[6] != "time"]


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): compare two to see that nothing was written."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys: pytest.CaptureFixture, *fragments: str) -> str:
    """The captured stderr: exactly one line ``error: ...`` holding every fragment."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err
