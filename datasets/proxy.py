"""The synthetic DiDeMo proxy: frozen-regime CLIP-like features from a documented world model with DiDeMo's shape.

No videos or CLIP weights exist offline, so the default sweep runs on features generated here (DESIGN.md sec. 6).

Annotations: procedural, or real DiDeMo JSON (``annotations``: a LocalizingMoments ``*_data.json``; its paragraphs
and majority moments are used, words mapped to the vocabulary by frequency):
  - videos of 6 five-second segments (17% have 5); 1-6 descriptions per video (mean ~3.8); ~7.5 words per
    description (paragraph ~29 words); moments mostly one segment long (78%), the rest 2-3 segments;
  - a Zipfian vocabulary: function words ("the", "a", "in", ...) make ~40% of tokens, content words ("man",
    "camera", ...) follow a Zipf law over ``vocab_size`` words.

World model (every knob is a constructor argument; the generator is deterministic in ``seed``):
  - each content word w has a latent concept c_w (a random unit vector in D dimensions). Its text view is
    ``normalise(c_w + view_noise n)``; its visual view is ``normalise(M c_w + view_noise n')`` with independent
    noises and M a fixed random rotation by arccos(``alignment``) in D/2 planes: the domain shift between the
    pretrained embedding and the target data, which a trained adapter or head can learn to undo. Zero-shot, a
    word's two views have cosine ``alignment / (1 + view_noise^2)`` (~0.6); fully adapted, ``1 / (1 +
    view_noise^2)`` (~0.86). Function words share one text direction and have no visual content;
  - both modalities carry a modality-wide mean direction (CLIP's modality gap), weights ``image_mean`` /
    ``text_mean``;
  - frame features (``frames_per_segment`` frames per five-second segment) = the video's scene (one of
    ``num_scenes`` shared scene types plus per-video variation) + the visual views of the content words of every
    description grounded at that frame's segment + distractor content (visual views of ``distractors``
    undescribed words per segment) + AR(1) temporally correlated noise; rescaled to norm ``frame_norm``. Padded
    frame slots hold one constant "blank frame" feature, as CLIP's encoding of an all-zero image does;
  - token features: SOT, then per word its text view with light causal context mixing and noise, then EOT =
    the paragraph summary (its content words' text views + noise), then pads (a pad direction mixed with the
    EOT, as CLIP's causal pads see the whole text); rescaled to norm ``text_norm``.
So global pooling sees the video's bag of concepts diluted by scene, distractors and noise, while fine-grained
alignment can exploit which sentence describes which segment. The difficulty is pinned, never a method
ordering: zero-shot meanP (no training) on 1,000 val videos lands in DESIGN's 15-30% R@1 band (a test), and the
calibration figures are written into every run's ``data.json`` and every proxy report.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from tvr_convbench.core.files import atomic_write
from tvr_convbench.datasets.base import (
    SPLITS,
    Backbone,
    FeatureBackbone,
    FeatureDims,
    RetrievalDataModule,
    RetrievalSplit,
    register_dataset,
)

GENERATOR_VERSION = 2
FUNCTION_WORDS = (
    "the a in of to and is on at with then his her camera into from up it out by off back are for down front "
    "while as an over around again their near".split()
)
FREQUENT_CONTENT = (
    "man woman person girl boy dog first left right walks see people car water side screen child baby ball "
    "white black red table window shirt hand door tree road little group frame".split()
)
DESCRIPTIONS_PER_VIDEO = {1: 0.02, 2: 0.06, 3: 0.25, 4: 0.45, 5: 0.17, 6: 0.05}
MOMENT_LENGTHS = {1: 0.78, 2: 0.15, 3: 0.07}


@dataclass(frozen=True)
class Annotation:
    """One video: its segment count and descriptions (word ids) with their moments (first, last segment)."""

    num_segments: int
    descriptions: tuple[tuple[int, ...], ...]
    moments: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ProxySettings:
    """Every knob of the proxy (the ``data:`` section of a config minus the module-only fields)."""

    seed: int
    train_videos: int
    val_videos: int
    test_videos: int
    width: int
    frames_per_segment: int
    max_frames: int
    max_words: int
    vocab_size: int
    alignment: float
    view_noise: float
    image_mean: float
    text_mean: float
    scene: float
    num_scenes: int
    content: float
    persistence: float
    grounded: float
    distractors: int
    distractor: float
    noise: float
    noise_corr: float
    context_mix: float
    token_noise: float
    frame_norm: float
    text_norm: float
    annotations: str

    def key(self) -> str:
        source = _file_digest(self.annotations) if self.annotations else ""
        blob = json.dumps({**asdict(self), "source": source, "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- annotations ---------------------------------------------------------------------------------------------
def content_probabilities(vocab_size: int) -> np.ndarray:
    """Zipf law (exponent 1, offset 2.7) over the content words."""
    ranks = np.arange(vocab_size - len(FUNCTION_WORDS))
    p = 1.0 / (ranks + 2.7)
    return p / p.sum()


def _choice(rng: np.random.Generator, table: dict[int, float], size: int) -> np.ndarray:
    return rng.choice(np.array(list(table)), size=size, p=np.array(list(table.values())))


def generate_annotations(rng: np.random.Generator, num_videos: int, vocab_size: int) -> list[Annotation]:
    """Procedural DiDeMo-like annotations (statistics in the module docstring), sampled in bulk."""
    probs, num_function = content_probabilities(vocab_size), len(FUNCTION_WORDS)
    segments = np.where(rng.random(num_videos) < 0.17, 5, 6)
    counts = _choice(rng, DESCRIPTIONS_PER_VIDEO, num_videos)  # descriptions per video
    owner = np.repeat(np.arange(num_videos), counts)  # [M] video of each description
    lengths = np.clip(3 + rng.poisson(4.5, size=owner.size), 2, 22)  # words per description
    total = int(lengths.sum())
    words = np.where(
        rng.random(total) < 0.4,
        rng.integers(0, num_function, total),
        num_function + rng.choice(len(probs), total, p=probs),
    )
    spans = np.minimum(_choice(rng, MOMENT_LENGTHS, owner.size), segments[owner])
    starts = (rng.random(owner.size) * (segments[owner] - spans + 1)).astype(np.int64)
    per_description = np.split(words, np.cumsum(lengths)[:-1])
    first_of_video = np.concatenate([[0], np.cumsum(counts)])
    videos = []
    for v in range(num_videos):
        rows = range(first_of_video[v], first_of_video[v + 1])
        descriptions = tuple(tuple(int(w) for w in per_description[d]) for d in rows)
        moments = tuple((int(starts[d]), int(starts[d] + spans[d] - 1)) for d in rows)
        videos.append(Annotation(int(segments[v]), descriptions, moments))
    return videos


WORD = re.compile(r"[a-z0-9']+")


def annotations_from_didemo(path: str) -> tuple[list[Annotation], int]:
    """Paragraphs and moments of a real DiDeMo annotation JSON, and the vocabulary size they need.

    Words are lower-cased alphanumeric runs; function words keep their ids, content words get ids by decreasing
    frequency in the file (so the Zipf ranks are the file's own); a moment is the most frequent (start, end) of
    its annotators, clipped to the video's segments.
    """
    from tvr_convbench.datasets.didemo import build_paragraphs, read_annotations

    paragraphs = build_paragraphs(read_annotations(path))
    texts = [[WORD.findall(m.description.lower()) for m in p.moments] for p in paragraphs]
    function = {w: i for i, w in enumerate(FUNCTION_WORDS)}
    counts = Counter(w for text in texts for d in text for w in d if w not in function)
    ids = {**function, **{w: len(function) + r for r, (w, _) in enumerate(counts.most_common())}}
    anns = [
        Annotation(
            p.num_segments,
            tuple(tuple(ids[w] for w in d) for d in text),
            tuple(_majority_moment(m.times, p.num_segments) for m in p.moments),
        )
        for p, text in zip(paragraphs, texts, strict=True)
    ]
    return anns, len(ids)


def _majority_moment(times: tuple[tuple[int, int], ...], num_segments: int) -> tuple[int, int]:
    if not times:
        return 0, num_segments - 1
    start, end = Counter(times).most_common(1)[0][0]
    start = min(max(start, 0), num_segments - 1)
    return start, min(max(end, start), num_segments - 1)


# --- world --------------------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


@dataclass
class World:
    """Shared latent structure: word vectors per modality and the fixed directions."""

    visual: np.ndarray  # [V, D] visual view of each word (function words: unused)
    textual: np.ndarray  # [V, D] text view of each word
    is_function: np.ndarray  # [V] bool
    image_mean: np.ndarray  # [D]
    text_mean: np.ndarray  # [D]
    blank_frame: np.ndarray  # [D]
    sot: np.ndarray  # [D]
    pad: np.ndarray  # [D]

    mixing: np.ndarray  # [D, D] the visual views' fixed linear distortion (what adaptation can learn to undo)
    scenes: np.ndarray  # [num_scenes, D] shared scene types

    @classmethod
    def sample(cls, rng: np.random.Generator, s: ProxySettings) -> World:
        V, D = s.vocab_size, s.width  # vocab_size is the annotation file's own when one is given
        concept = _unit(rng.standard_normal((V, D)))
        mixing = _distortion(rng, D, s.alignment)
        visual = _unit(concept @ mixing.T + s.view_noise * _unit(rng.standard_normal((V, D))))
        textual = _unit(concept + s.view_noise * _unit(rng.standard_normal((V, D))))
        is_function = np.arange(V) < len(FUNCTION_WORDS)
        function_dir = _unit(rng.standard_normal(D))
        textual[is_function] = _unit(function_dir + 0.3 * _unit(rng.standard_normal((is_function.sum(), D))))
        image_mean, text_mean = _unit(rng.standard_normal(D)), _unit(rng.standard_normal(D))
        blank = _unit(image_mean + 0.5 * _unit(rng.standard_normal(D)))
        sot, pad = _unit(text_mean + _unit(rng.standard_normal(D))), _unit(rng.standard_normal(D))
        scenes = _unit(rng.standard_normal((s.num_scenes, D)))
        return cls(visual, textual, is_function, image_mean, text_mean, blank, sot, pad, mixing, scenes)


def _distortion(rng: np.random.Generator, width: int, alignment: float) -> np.ndarray:
    """A random rotation by the angle arccos(``alignment``) in D/2 random planes: ``cos(x, Mx) = alignment`` for
    every x (for odd D one axis stays put), and M is orthogonal, so adaptation can undo it exactly."""
    basis, r = np.linalg.qr(rng.standard_normal((width, width)))
    basis = basis * np.sign(np.diag(r))  # [D, D] uniformly random orthogonal
    c, s = alignment, math.sqrt(1.0 - alignment**2)
    blocks = np.eye(width)
    for i in range(0, width - 1, 2):
        blocks[i : i + 2, i : i + 2] = [[c, -s], [s, c]]
    return basis @ blocks @ basis.T


def _flat_words(anns: list[Annotation], world: World, s: ProxySettings) -> tuple[np.ndarray, np.ndarray]:
    """(row, word) pairs of every content word grounded at every segment; row = video * 6 + segment."""
    rows, words = [], []
    for v, ann in enumerate(anns):
        for desc, (first, last) in zip(ann.descriptions, ann.moments, strict=True):
            content = [w for w in desc if not world.is_function[w]]
            for seg in range(first, last + 1):
                rows += [v * 6 + seg] * len(content)
                words += content
    return np.asarray(rows, dtype=np.int64), np.asarray(words, dtype=np.int64)


def _unit_or_zero(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-9, x / np.maximum(norm, 1e-12), 0.0)


def render_frames(rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings) -> tuple:
    """Frame features [n, F, D] (norm ``frame_norm``; padded slots = blank frame) and the frame mask [n, F]."""
    n, D, per_seg, F = len(anns), s.width, s.frames_per_segment, s.max_frames
    grounded = np.zeros((n * 6, D))
    rows, words = _flat_words(anns, world, s)
    np.add.at(grounded, rows, world.visual[words])
    probs = content_probabilities(len(world.visual))
    extra = len(FUNCTION_WORDS) + rng.choice(len(probs), (n * 6, s.distractors), p=probs)
    distract = world.visual[extra].sum(1) if s.distractors else np.zeros((n * 6, D))
    persistent = _persistent_content(rng, world, anns, s)[:, None]  # [n, 1, D]
    segments = s.grounded * _unit_or_zero(grounded) + s.distractor * _unit_or_zero(distract)  # [n*6, D]
    segments = s.content * persistent + segments.reshape(n, 6, D)  # [n, 6, D]
    frames = np.repeat(segments, per_seg, axis=1)  # [n, 6*per_seg, D]
    scene = _unit(world.scenes[rng.integers(0, len(world.scenes), n)] + 0.5 * _unit(rng.standard_normal((n, D))))
    scene = scene[:, None]  # [n, 1, D]: one of a few shared scene types, plus per-video variation
    frames = s.image_mean * world.image_mean + s.scene * scene + frames + s.noise * _ar1(rng, n, 6 * per_seg, D, s)
    frames = s.frame_norm * _unit(frames)
    num_real = np.minimum(np.array([a.num_segments for a in anns]) * per_seg, F)
    mask = np.arange(F)[None] < num_real[:, None]  # [n, F]
    out = np.broadcast_to(s.frame_norm * world.blank_frame, (n, F, D)).copy()
    width = min(F, 6 * per_seg)
    out[:, :width] = np.where(mask[:, :width, None], frames[:, :width], out[:, :width])
    return out, mask


def _persistent_content(rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings) -> np.ndarray:
    """Unit visual content visible in every frame: each distinct content word of a paragraph, with probability
    ``persistence`` (the objects that stay in view, as opposed to what happens in one moment): [n, D]."""
    videos, words = [], []
    for v, ann in enumerate(anns):
        distinct = {w for d in ann.descriptions for w in d if not world.is_function[w]}
        videos += [v] * len(distinct)
        words += sorted(distinct)
    keep = rng.random(len(words)) < s.persistence
    out = np.zeros((len(anns), s.width))
    np.add.at(out, np.asarray(videos, dtype=np.int64)[keep], world.visual[np.asarray(words, dtype=np.int64)[keep]])
    return _unit_or_zero(out)


def _ar1(rng: np.random.Generator, n: int, steps: int, width: int, s: ProxySettings) -> np.ndarray:
    """AR(1) noise over frames from unit-norm innovations, stationary at unit scale: [n, steps, width]."""
    rho = s.noise_corr
    innovations = _unit(rng.standard_normal((n, steps, width)))
    out = np.empty_like(innovations)
    state = innovations[:, 0]
    for t in range(steps):
        state = rho * state + math.sqrt(1 - rho * rho) * innovations[:, t] if t else state
        out[:, t] = state
    return out


def _word_matrix(anns: list[Annotation], s: ProxySettings) -> np.ndarray:
    """Paragraph word ids [n, max_words - 2], -1 padded (truncated at max_words - 2, as CLIP's tokenizer)."""
    ids = np.full((len(anns), s.max_words - 2), -1, dtype=np.int64)
    for i, ann in enumerate(anns):
        words = [w for d in ann.descriptions for w in d][: s.max_words - 2]
        ids[i, : len(words)] = words
    return ids


def render_text(rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings) -> tuple:
    """Token features [n, L, D] (SOT, words, EOT, pads; norm ``text_norm``), mask [n, L] and EOT [n, D]."""
    ids = _word_matrix(anns, s)
    n, L, D = len(anns), s.max_words, s.width
    real = ids >= 0  # [n, L-2]
    own = np.where(real[..., None], world.textual[np.maximum(ids, 0)], 0.0)  # [n, L-2, D]
    running = _unit_or_zero(np.cumsum(own, axis=1))
    noise = _unit(rng.standard_normal((n, L - 2, D)))
    words = _unit(own + s.context_mix * running + s.token_noise * noise + s.text_mean * world.text_mean)
    content = real & ~world.is_function[np.maximum(ids, 0)]
    summary = _unit_or_zero((own * content[..., None]).sum(1))  # [n, D]
    eot = _unit(summary + s.text_mean * world.text_mean + s.token_noise * _unit(rng.standard_normal((n, D))))
    length = real.sum(1)  # words per paragraph
    tokens = np.broadcast_to(world.sot, (n, L, D)).copy()
    positions = np.arange(L)[None]  # [1, L]
    tokens[:, 1 : L - 1] = np.where(real[..., None], words, 0.0)
    is_eot = positions == (length + 1)[:, None]
    pads = _unit(world.pad[None, None] + 0.3 * eot[:, None])  # [n, 1, D]
    tokens = np.where(is_eot[..., None], eot[:, None], tokens)
    tokens = np.where((positions > (length + 1)[:, None])[..., None], pads, tokens)
    mask = positions <= (length + 1)[:, None]
    return s.text_norm * tokens, mask, s.text_norm * eot


# --- generation, cache --------------------------------------------------------------------------------------
def generate(s: ProxySettings) -> dict[str, dict[str, Tensor]]:
    """All three splits' feature tensors (deterministic in ``s``)."""
    sizes = {"train": s.train_videos, "val": s.val_videos, "test": s.test_videos}
    anns = None
    if s.annotations:
        anns, vocab_size = annotations_from_didemo(s.annotations)
        s = replace(s, vocab_size=vocab_size)
        order = ("val", "test", "train")  # real files: val and test first, the rest trains
        if sum(sizes.values()) > len(anns):
            raise ValueError(f"{s.annotations}: {len(anns)} videos, fewer than the {sum(sizes.values())} requested")
    rng = np.random.default_rng(s.seed)
    world = World.sample(rng, s)
    if anns is None:
        anns, order = generate_annotations(rng, sum(sizes.values()), s.vocab_size), SPLITS
    out, start = {}, 0
    for split in order:
        out[split] = _render_split(rng, world, anns[start : start + sizes[split]], s)
        start += sizes[split]
    return out


def _render_split(rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings) -> dict:
    frames, video_mask = render_frames(rng, world, anns, s)
    tokens, text_mask, eot = render_text(rng, world, anns, s)
    as_float = lambda x: torch.from_numpy(x.astype(np.float32))  # noqa: E731
    return {
        "text_tokens": as_float(tokens),
        "text_mask": torch.from_numpy(text_mask),
        "text_eot": as_float(eot),
        "video_frames": as_float(frames),
        "video_mask": torch.from_numpy(video_mask),
        "index": torch.arange(len(anns)),
    }


def load_or_generate(s: ProxySettings, cache_dir: Path) -> dict[str, dict[str, Tensor]]:
    """Generated features, cached on disk under the settings' hash (written atomically)."""
    path = cache_dir / f"proxy-{s.key()}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    data = generate(s)
    atomic_write(path, lambda tmp: torch.save(data, tmp))
    return data


class FeatureSplit(RetrievalSplit):
    """An in-memory split of frozen features: a batch is one fancy-index per tensor."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors["index"].shape[0]

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {key: value[idx] for key, value in self.tensors.items()}


@register_dataset("proxy")
class ProxyDataModule(RetrievalDataModule):
    """The synthetic DiDeMo proxy (frozen regime). Knobs: see the module docstring; sizes are videos per split.

    Args:
        annotations: a real DiDeMo annotation JSON to take paragraphs and moments from ("" = procedural); its
            videos fill val, then test, then train.
        regime: always ``frozen`` (the proxy is a feature store); recorded for reports.
        adapter: train an identity-initialised linear adapter on frames and text features (at the backbone lr),
            standing in for backbone adaptation; without it parameter-free heads (meanP) cannot learn.
        cache_dir: where generated features are cached.
    """

    synthetic = True
    title = "synthetic DiDeMo proxy"

    def __init__(
        self,
        *,
        seed: int = 0,
        train_videos: int = 4000,
        val_videos: int = 500,
        test_videos: int = 500,
        width: int = 64,
        frames_per_segment: int = 1,
        max_frames: int = 8,
        max_words: int = 40,
        vocab_size: int = 3000,
        alignment: float = 0.8,
        view_noise: float = 0.3,
        image_mean: float = 0.5,
        text_mean: float = 0.6,
        scene: float = 0.6,
        num_scenes: int = 40,
        content: float = 0.5,
        persistence: float = 0.4,
        grounded: float = 0.8,
        distractors: int = 3,
        distractor: float = 0.6,
        noise: float = 0.6,
        noise_corr: float = 0.7,
        context_mix: float = 0.3,
        token_noise: float = 0.3,
        frame_norm: float = 10.0,
        text_norm: float = 8.0,
        annotations: str = "",
        regime: Literal["frozen"] = "frozen",
        adapter: bool = True,
        cache_dir: str = ".cache/proxy",
    ) -> None:
        super().__init__()
        kwargs = {k: v for k, v in locals().items() if k in ProxySettings.__dataclass_fields__}
        self.settings = ProxySettings(**kwargs)
        _validate(self.settings)
        if annotations and not Path(annotations).is_file():
            raise ValueError(f"data.annotations: {annotations} is not a file")
        self.regime, self.adapter, self.cache_dir = regime, adapter, Path(cache_dir)
        self._splits: dict[str, FeatureSplit] = {}

    @property
    def dims(self) -> FeatureDims:
        s = self.settings
        return FeatureDims(s.width, s.max_frames, s.max_words)

    def setup(self, stage: str | None = None) -> None:
        if not self._splits:
            data = load_or_generate(self.settings, self.cache_dir)
            self._splits = {name: FeatureSplit(data[name]) for name in SPLITS}

    def split(self, name: str) -> FeatureSplit:
        self.setup()
        return self._splits[name]

    def backbone(self) -> Backbone:
        return FeatureBackbone(self.settings.width, adapter=self.adapter)

    def describe(self) -> dict:
        self.setup()
        counts = {name: len(split) for name, split in self._splits.items()}
        return {
            **super().describe(),
            "regime": self.regime,
            "counts": counts,
            "settings": asdict(self.settings),
            "calibration": calibration(self.settings, self._splits["val"].tensors),
        }


def calibration(s: ProxySettings, val: dict[str, Tensor]) -> dict[str, float]:
    """The difficulty figures of a generated val split (printed in every proxy report)."""
    from tvr_convbench.core.metrics import retrieval_metrics

    text = _normalize(val["text_eot"])  # [N, D]
    frames, mask = _normalize(val["video_frames"]), val["video_mask"].float()  # [N, F, D], [N, F]
    video = _normalize((frames * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1))  # meanP
    zero_shot = retrieval_metrics(text @ video.t())
    per_frame = torch.einsum("nd,mfd->nmf", text, frames)  # [N, N, F] sentence x frame cosines
    frame_cos = (per_frame * mask[None]).sum(-1) / mask.sum(-1)[None].clamp_min(1)  # [N, N] mean over real frames
    off = ~torch.eye(len(text), dtype=torch.bool)
    return {
        "val_videos": float(len(text)),
        "chance_R@1": 100.0 / len(text),
        "zero_shot_meanP_t2v_R@1": zero_shot["t2v/R@1"],
        "zero_shot_meanP_t2v_R@5": zero_shot["t2v/R@5"],
        "zero_shot_meanP_v2t_R@1": zero_shot["v2t/R@1"],
        **word_view_cosines(s),
        "sentence_frame_cosine_matched": float(frame_cos.diagonal().mean()),
        "sentence_frame_cosine_unmatched": float(frame_cos[off].mean()),
        "real_frames_mean": float(mask.sum(1).mean()),
        "real_tokens_mean": float(val["text_mask"].float().sum(1).mean()),
    }


def word_view_cosines(s: ProxySettings) -> dict[str, float]:
    """Measured cosine of content words' text and visual views, zero-shot and with the distortion undone."""
    if s.annotations:
        s = replace(s, vocab_size=annotations_from_didemo(s.annotations)[1])
    world = World.sample(np.random.default_rng(s.seed), s)
    content = ~world.is_function
    visual, text = world.visual[content], world.textual[content]
    adapted = _unit(visual @ world.mixing)  # M^T applied to every row: the rotation undone
    return {
        "word_view_cosine_zero_shot": float(np.mean(np.sum(visual * text, axis=1))),
        "word_view_cosine_adapted": float(np.mean(np.sum(adapted * text, axis=1))),
    }


def _normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _validate(s: ProxySettings) -> None:
    for key in ("train_videos", "val_videos", "test_videos", "width", "frames_per_segment", "max_frames", "vocab_size"):
        if getattr(s, key) <= 0:
            raise ValueError(f"data.{key} must be positive, got {getattr(s, key)}")
    if s.max_words < 4:
        raise ValueError(f"data.max_words must be at least 4 (SOT, a word, EOT), got {s.max_words}")
    if s.vocab_size <= len(FUNCTION_WORDS) + len(FREQUENT_CONTENT):
        raise ValueError(f"data.vocab_size must exceed {len(FUNCTION_WORDS) + len(FREQUENT_CONTENT)}")
    if not 0.0 < s.alignment <= 1.0:
        raise ValueError(f"data.alignment must be in (0, 1], got {s.alignment}")
    if not 0.0 <= s.noise_corr < 1.0:
        raise ValueError(f"data.noise_corr must be in [0, 1), got {s.noise_corr}")
