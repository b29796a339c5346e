"""The proxy's world model: word concepts and their two views, and the rendering of frame and token features.

Every knob is a ``ProxySettings`` field; the generator is deterministic in ``seed``.
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
    EOT, as CLIP's causal pads see the whole text); rescaled to norm ``text_norm``;
  - patch tokens (``render_patches``, only for a method that asks): ``patches`` per frame, in the frames' space.
    Each grounded word and each distractor of a segment sits in one patch of its frames; every patch carries the
    frame's background (image mean, scene, persistent content, frame noise) and its own noise. Their randomness
    comes from a separate stream, and they reuse the frames' draws (``FrameParts``), so generating them changes no
    frame or token feature.
Segment-level arrays have S = ``SEGMENTS_PER_VIDEO`` rows per video (row ``video * S + segment``); a 5-segment
video leaves its last row unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tvr_convbench.datasets.proxy.annotations import (
    FUNCTION_WORDS,
    SEGMENTS_PER_VIDEO,
    Annotation,
    content_probabilities,
)
from tvr_convbench.datasets.proxy.settings import ProxySettings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def _unit_or_zero(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-9, x / np.maximum(norm, 1e-12), 0.0)


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
        image_mean = _unit(rng.standard_normal(D))
        text_mean = _unit(rng.standard_normal(D))
        blank = _unit(image_mean + 0.5 * _unit(rng.standard_normal(D)))
        sot = _unit(text_mean + _unit(rng.standard_normal(D)))
        pad = _unit(rng.standard_normal(D))
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


def word_view_cosines(world: World) -> dict[str, float]:
    """Measured cosine of content words' text and visual views, zero-shot and with the distortion undone."""
    content = ~world.is_function
    visual = world.visual[content]  # [C, D]
    text = world.textual[content]  # [C, D]
    adapted = _unit(visual @ world.mixing)  # M^T applied to every row: the rotation undone
    return {
        "word_view_cosine_zero_shot": float(np.mean(np.sum(visual * text, axis=1))),
        "word_view_cosine_adapted": float(np.mean(np.sum(adapted * text, axis=1))),
    }


# --- frames -------------------------------------------------------------------------------------------------
def _flat_words(anns: list[Annotation], world: World) -> tuple[np.ndarray, np.ndarray]:
    """(row, word) pairs of every content word grounded at every segment; row = video * S + segment."""
    rows, words = [], []
    for v, ann in enumerate(anns):
        for desc, (first, last) in zip(ann.descriptions, ann.moments, strict=True):
            content = [w for w in desc if not world.is_function[w]]
            for seg in range(first, last + 1):
                rows += [v * SEGMENTS_PER_VIDEO + seg] * len(content)
                words += content
    return np.asarray(rows, dtype=np.int64), np.asarray(words, dtype=np.int64)


@dataclass
class FrameParts:
    """Every random draw behind a split's frames, in the generator's order, so the patch tokens (``render_patches``)
    can place the same content in patches without drawing it again."""

    grounded_rows: np.ndarray  # [M] cell (video * S + segment) of each grounded content word
    grounded_words: np.ndarray  # [M] the word
    distractors: np.ndarray  # [n * S, distractors] undescribed words shown in each cell
    persistent: np.ndarray  # [n, D] unit persistent content of each video
    scene: np.ndarray  # [n, 1, D] unit scene of each video
    noise: np.ndarray  # [n, steps, D] AR(1) frame noise


def frame_parts(rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings) -> FrameParts:
    """The frames' random draws: distractors, persistent content, scene, noise (this order fixes the features)."""
    n, D = len(anns), s.width
    rows, words = _flat_words(anns, world)
    probs = content_probabilities(len(world.visual))
    cells = n * SEGMENTS_PER_VIDEO  # n * S rows, one per (video, segment)
    extra = len(FUNCTION_WORDS) + rng.choice(len(probs), (cells, s.distractors), p=probs)  # [cells, distractors]
    persistent = _persistent_content(rng, world, anns, s)  # [n, D]
    scene = _unit(world.scenes[rng.integers(0, len(world.scenes), n)] + 0.5 * _unit(rng.standard_normal((n, D))))
    noise = _ar1(rng, n, SEGMENTS_PER_VIDEO * s.frames_per_segment, D, s)  # [n, steps, D]
    return FrameParts(rows, words, extra, persistent, scene[:, None], noise)


def _segment_content(world: World, parts: FrameParts, s: ProxySettings) -> np.ndarray:
    """Per segment: grounded words + distractors, plus the video's persistent content: [n, S, D]."""
    n, D = parts.persistent.shape
    grounded = np.zeros((n * SEGMENTS_PER_VIDEO, D))
    np.add.at(grounded, parts.grounded_rows, world.visual[parts.grounded_words])
    distract = world.visual[parts.distractors].sum(1) if s.distractors else np.zeros_like(grounded)
    segments = s.grounded * _unit_or_zero(grounded) + s.distractor * _unit_or_zero(distract)  # [cells, D]
    return s.content * parts.persistent[:, None] + segments.reshape(n, SEGMENTS_PER_VIDEO, D)


def render_frames(rng: np.random.Generator, world: World, anns: list[Annotation], s: ProxySettings) -> tuple:
    """Frame features [n, F, D] (norm ``frame_norm``; padded slots = blank frame) and the frame mask [n, F]."""
    return compose_frames(world, anns, s, frame_parts(rng, world, anns, s))


def compose_frames(world: World, anns: list[Annotation], s: ProxySettings, parts: FrameParts) -> tuple:
    """``render_frames`` from its draws: frame features [n, F, D] and the frame mask [n, F]."""
    n, D, per_seg, F = len(anns), s.width, s.frames_per_segment, s.max_frames
    steps = SEGMENTS_PER_VIDEO * per_seg  # S * per_seg frames of a full video
    frames = np.repeat(_segment_content(world, parts, s), per_seg, axis=1)  # [n, steps, D]
    frames = s.image_mean * world.image_mean + s.scene * parts.scene + frames + s.noise * parts.noise
    frames = s.frame_norm * _unit(frames)
    mask = real_frame_mask(anns, s)  # [n, F]
    out = np.broadcast_to(s.frame_norm * world.blank_frame, (n, F, D)).copy()
    width = min(F, steps)
    out[:, :width] = np.where(mask[:, :width, None], frames[:, :width], out[:, :width])
    return out, mask


def real_frame_mask(anns: list[Annotation], s: ProxySettings) -> np.ndarray:
    """True on the frame slots [n, F] a video fills (``frames_per_segment`` per segment, at most F)."""
    num_real = np.minimum(np.array([a.num_segments for a in anns]) * s.frames_per_segment, s.max_frames)
    return np.arange(s.max_frames)[None] < num_real[:, None]


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


# --- patch tokens (their own random stream, rendered only when asked for) --------------------------------
PATCH_CHUNK = 256
"""videos whose patch tokens are rendered at a time (bounds the [videos, F, P, D] temporaries)"""


def render_patches(
    rng: np.random.Generator, world: World, anns: list[Annotation], parts: FrameParts, s: ProxySettings
) -> np.ndarray:
    """Patch tokens [n, F, P, D] (float16, norm ``frame_norm``) of the frames drawn as ``parts``, from the patch stream
    ``rng``: a segment's content sits in a few patches of its frames, the rest is the frame's background.

    Each grounded content word and each distractor of a segment occupies one patch (uniform, the same in all the
    segment's frames), with its visual view at weight ``grounded`` / ``distractor``; every patch holds the frame's
    background (image mean, scene, persistent content, the frame's AR(1) noise, at the frames' weights) plus its own
    noise (``patch_noise``); rescaled to ``frame_norm``. Padded slots hold the blank frame in every patch.
    """
    n, F, P, D = len(anns), s.max_frames, s.patches, s.width
    out = np.empty((n, F, P, D), dtype=np.float16)
    out[:] = (s.frame_norm * world.blank_frame).astype(np.float16)
    mask = real_frame_mask(anns, s)  # [n, F]
    for start in range(0, n, PATCH_CHUNK):
        stop = min(start + PATCH_CHUNK, n)
        real = _chunk_patches(rng, world, parts, s, start, stop)  # [c, width, P, D]
        width = real.shape[1]
        keep = mask[start:stop, :width, None, None]
        out[start:stop, :width] = np.where(keep, real, out[start:stop, :width])
    return out


def _chunk_patches(
    rng: np.random.Generator, world: World, parts: FrameParts, s: ProxySettings, start: int, stop: int
) -> np.ndarray:
    """Patch tokens of the frame grid of videos ``start:stop``: [c, width, P, D], width = min(F, frames rendered)."""
    count, P, D, per_seg = stop - start, s.patches, s.width, s.frames_per_segment
    width = min(s.max_frames, SEGMENTS_PER_VIDEO * per_seg)
    objects = np.repeat(_patch_objects(rng, world, parts, s, start, stop), per_seg, axis=1)[:, :width]
    background = s.image_mean * world.image_mean + s.scene * parts.scene[start:stop]  # [c, 1, D]
    background = background + s.content * parts.persistent[start:stop, None]  # [c, 1, D]
    frame_noise = s.noise * parts.noise[start:stop, :width]  # [c, width, D]
    own_noise = s.patch_noise * _unit(rng.standard_normal((count, width, P, D)))  # [c, width, P, D]
    patches = (background + frame_noise)[:, :, None] + objects + own_noise  # [c, width, P, D]
    return s.frame_norm * _unit(patches)


def _patch_objects(
    rng: np.random.Generator, world: World, parts: FrameParts, s: ProxySettings, start: int, stop: int
) -> np.ndarray:
    """The segments' words placed in patches: [c, S, P, D] for videos ``start:stop``."""
    count, S, P = stop - start, SEGMENTS_PER_VIDEO, s.patches
    objects = np.zeros((count * S, P, s.width))
    first, last = start * S, stop * S
    inside = (parts.grounded_rows >= first) & (parts.grounded_rows < last)
    rows, words = parts.grounded_rows[inside] - first, parts.grounded_words[inside]
    np.add.at(objects, (rows, rng.integers(0, P, rows.size)), s.grounded * world.visual[words])
    shown = parts.distractors[first:last]  # [c S, distractors]
    cells = np.repeat(np.arange(count * S), shown.shape[1])
    np.add.at(objects, (cells, rng.integers(0, P, cells.size)), s.distractor * world.visual[shown.ravel()])
    return objects.reshape(count, S, P, s.width)


# --- text ---------------------------------------------------------------------------------------------------
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
    length = real.sum(1)  # [n] words per paragraph
    tokens = np.broadcast_to(world.sot, (n, L, D)).copy()
    positions = np.arange(L)[None]  # [1, L]
    tokens[:, 1 : L - 1] = np.where(real[..., None], words, 0.0)
    is_eot = positions == (length + 1)[:, None]
    pads = _unit(world.pad[None, None] + 0.3 * eot[:, None])  # [n, 1, D]
    tokens = np.where(is_eot[..., None], eot[:, None], tokens)
    tokens = np.where((positions > (length + 1)[:, None])[..., None], pads, tokens)
    mask = positions <= (length + 1)[:, None]
    return s.text_norm * tokens, mask, s.text_norm * eot
