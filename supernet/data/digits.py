"""The embedded data set: real handwritten digits placed on textured canvases.

Nothing is downloaded. The digits are the 1,797 8x8 handwritten scans that scikit-learn bundles
(``sklearn.datasets.load_digits``: the UCI optical-recognition digits of 43 writers, each pixel
the ink count 0..16 of a 4x4 block of a 32x32 bitmap). Each canvas:

- background: two random colours blended by a smooth random field, a finer random colour
  texture and a random linear lighting gradient; on half of the canvases, background
  "scribbles" (curvy strokes as wide as a digit's, in a contrasting colour);
- 1-3 digits, each a scan upscaled (bilinear, then sharpened) to a random height in
  ``digit_size``, painted in a random colour that contrasts with the local background (darker
  or lighter at random), at a random place at least one pixel away from the other digits
  (bounded retries; a digit that does not fit is dropped, so a canvas may carry fewer);
- per-pixel noise.

Labels: 0 background, ``d + 1`` for digit ``d`` where the sharpened stroke has at least half
its full ink (11 classes; digits cover about 9% of the pixels). With random colours, texture
and scribbles, neither "bright pixels" nor "coloured pixels" finds the digits, and telling
WHICH digit a stroke belongs to takes spatial features over ~15 pixels: the task separates
convolution cells from pooling cells.

Splits: the scans are cut 7:2:1 first (``split_ids``), so no scan appears in two splits, and the
canvases of a split only use that split's scans; the canvas counts are cut 7:2:1 too.
Everything is drawn from ``numpy.random.default_rng`` seeded by the spec: the same spec gives
byte-identical canvases. They are generated at load time and kept in memory as uint8.

Normalisation: mean 0.5 and standard deviation 0.25 per channel, close to the generated pixel
statistics (random colours are uniform on 0..1: mean 0.5, standard deviation about 0.27).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import DatasetError
from supernet.data.base import SPLIT_NAMES, SegmentationData, assemble
from supernet.data.canvas import (
    LUMA,
    backgrounds,
    boxes_overlap,
    contrasting_colours,
    paint_scribbles,
    place_boxes,
    scribbles,
    summed_area,
)
from supernet.data.specs import DigitsSpec
from supernet.data.splits import split_ids, split_sizes

DIGIT_CLASSES: tuple[str, ...] = ("background", *(str(d) for d in range(10)))
FOREGROUND_CLASSES: tuple[str, ...] = ("background", "digit")
"""The classes of ``labels: foreground``: ink of any digit against everything else."""
DIGITS_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
DIGITS_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

INK_FLOOR, INK_SPAN = 0.15, 0.5
"""Sharpening of the upscaled scans: ink ``v`` becomes ``clip((v - floor) / span, 0, 1)``."""
STROKE_THRESHOLD = 0.5
"""A pixel is labelled with its digit where the sharpened stroke has at least this much ink."""
GAP = 1
"""Free pixels kept between the boxes of two digits."""
PLACEMENT_TRIES = 20
"""Random positions tried per digit before it is dropped."""
CHUNK = 128
"""Canvases rendered together (changing it changes the canvases drawn from a seed)."""


@dataclass(frozen=True)
class Placement:
    """Where one digit was placed on a canvas.

    Attributes:
        top: row of the box's top edge.
        left: column of the box's left edge.
        size: side of the (square) box.
        digit: the digit, 0..9 (its class id is ``digit + 1``).
        scan: index of the scan in ``sklearn.datasets.load_digits()``.
    """

    top: int
    left: int
    size: int
    digit: int
    scan: int

    def overlaps(self, other: Placement, gap: int = 0) -> bool:
        """Whether the two boxes come closer than ``gap`` pixels (or intersect)."""
        return boxes_overlap(
            (self.top, self.left, self.size), (other.top, other.left, other.size), gap
        )


def _bundled_digits_file() -> Path | None:
    """scikit-learn's ``datasets/data/digits.csv.gz``, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@functools.cache
def load_scans() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digit scans as ``float32 [N, 8, 8]`` ink in 0..1, and
    their digits (``int64 [N]``). Read once per process.

    The same data as ``sklearn.datasets.load_digits()``, read straight from the file that
    function parses: importing ``sklearn.datasets`` takes seconds, longer than generating the
    whole data set. Falls back to ``load_digits()`` if the file is not where it used to be.

    Raises:
        DatasetError: scikit-learn is not installed.
    """
    path = _bundled_digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        pixels, targets = table[:, :-1], table[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DatasetError(
                "the digits data set needs scikit-learn (pip install scikit-learn)"
            ) from None
        bunch = load_digits()
        pixels, targets = bunch.data, bunch.target
    scans = (np.asarray(pixels, dtype=np.float32).reshape(-1, 8, 8) / 16.0).clip(0.0, 1.0)
    digits = np.asarray(targets, dtype=np.int64)
    # Cached and shared by every caller: read-only.
    scans.flags.writeable = False
    digits.flags.writeable = False
    return scans, digits


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` weights of 1-D linear interpolation (half-pixel centres, edges clamped):
    ``M @ X @ M.T`` is the bilinear resize of a ``src x src`` image, as one batched matmul."""
    x = (np.arange(dst) + 0.5) * src / dst - 0.5
    x = x.clip(0, src - 1)
    lo = np.floor(x).astype(int).clip(0, src - 2)
    frac = x - lo
    m = np.zeros((dst, src), dtype=np.float32)
    m[np.arange(dst), lo] = 1 - frac
    m[np.arange(dst), lo + 1] = frac
    return m


@dataclass(frozen=True)
class Canvases:
    """Generated canvases of one split.

    Attributes:
        images: ``uint8 [N, S, S, 3]``.
        masks: ``uint8 [N, S, S]`` class ids.
        placements: the digits placed on each canvas.
    """

    images: np.ndarray
    masks: np.ndarray
    placements: tuple[tuple[Placement, ...], ...]


def _digit_colours(
    luma: np.ndarray, boxes: np.ndarray, heights: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """``[B, 3]`` colours of the placed digits, each contrasting with the mean luminance of the
    background under its box.

    Args:
        luma: ``[N, S, S]`` background luminance.
        boxes: ``[B, 4]`` rows ``(canvas, slot, top, left)``.
        heights: ``[N, max_digits]`` box sides.
        draws: ``[N, max_digits, 5]`` colour draws (see ``contrasting_colours``).
    """
    n, slot, top, left = boxes.T
    h = heights[n, slot]
    table = summed_area(luma)
    total = (
        table[n, top + h, left + h]
        - table[n, top, left + h]
        - table[n, top + h, left]
        + table[n, top, left]
    )
    return contrasting_colours(draws[n, slot], total / (h * h))


def render_canvases(
    spec: DigitsSpec, scan_ids: list[int], count: int, rng: np.random.Generator
) -> Canvases:
    """Draw ``count`` canvases carrying digits from the scans ``scan_ids`` only.

    Args:
        spec: canvas size, digits per canvas and digit sizes.
        scan_ids: indices into ``load_scans()`` this split may use.
        count: number of canvases.
        rng: source of every random choice.
    """
    scans, targets = load_scans()
    pool = np.asarray(scan_ids, dtype=np.int64)
    if count and not len(pool):
        raise ValueError("canvases need at least one scan to draw digits from")
    # Every scan of the split at every digit height: cheap, and each paste is then a slice.
    inks = {}
    for h in range(spec.digit_size[0], spec.digit_size[1] + 1):
        m = _bilinear_matrix(8, h)
        # Sharpen: bilinear upscaling of 8x8 scans leaves blurred blobs, and crisp strokes make
        # the shape (what tells the digits apart) learnable sooner.
        inks[h] = np.clip((m @ scans[pool] @ m.T - INK_FLOOR) / INK_SPAN, 0.0, 1.0)
    images = np.empty((count, spec.size, spec.size, 3), dtype=np.uint8)
    masks = np.zeros((count, spec.size, spec.size), dtype=np.uint8)
    placements: list[tuple[Placement, ...]] = []
    # Chunks keep the float temporaries small (a few MB): allocating and first touching one
    # array the size of the whole split costs more than the arithmetic done on it.
    for start in range(0, count, CHUNK):
        stop = min(start + CHUNK, count)
        placements += _render_chunk(
            spec, pool, targets, inks, rng, images[start:stop], masks[start:stop]
        )
    # Shared by every reader of the split (and by label_map callers): make it immutable.
    images.flags.writeable = False
    masks.flags.writeable = False
    return Canvases(images, masks, tuple(placements))


def _render_chunk(
    spec: DigitsSpec,
    pool: np.ndarray,
    targets: np.ndarray,
    inks: dict[int, np.ndarray],
    rng: np.random.Generator,
    images: np.ndarray,
    masks: np.ndarray,
) -> list[tuple[Placement, ...]]:
    """Render ``len(images)`` canvases into ``images`` (uint8 NHWC) and ``masks`` (zeroed)."""
    count, size, most = len(images), spec.size, spec.max_digits
    canvas = backgrounds(rng, count, size)
    luma = np.einsum("nchw,c->nhw", canvas, LUMA)
    ink = scribbles(rng, count, size)
    wanted = rng.integers(spec.min_digits, most + 1, count)
    heights = rng.integers(spec.digit_size[0], spec.digit_size[1] + 1, (count, most))
    picks = rng.integers(0, len(pool), (count, most))
    tries = rng.random((count, most, PLACEMENT_TRIES, 2))
    colour_draws = rng.random((count, most + 1, 5), dtype=np.float32)
    noise = rng.uniform(0.02, 0.12, (count, 1, 1, 1)).astype(np.float32)

    scribble_colours = contrasting_colours(colour_draws[:, 0], luma.mean(axis=(1, 2)))
    paint_scribbles(canvas, ink, scribble_colours)
    boxes = np.array(
        [
            (n, slot, top, left)
            for n in range(count)
            for slot, top, left in place_boxes(size, heights[n], tries[n], int(wanted[n]), GAP)
        ],
        dtype=np.int64,
    ).reshape(-1, 4)
    colours = _digit_colours(luma, boxes, heights, colour_draws[:, 1:])

    placed: list[list[Placement]] = [[] for _ in range(count)]
    for (n, slot, top, left), colour in zip(boxes.tolist(), colours, strict=True):
        h, k = int(heights[n, slot]), int(picks[n, slot])
        box = Placement(top, left, h, int(targets[pool[k]]), int(pool[k]))
        placed[n].append(box)
        ink = inks[h][k]
        window = canvas[n, :, top : top + h, left : left + h]
        window += (colour[:, None, None] - window) * ink
        masks[n, top : top + h, left : left + h][ink >= STROKE_THRESHOLD] = box.digit + 1

    # Uniform noise of the drawn amplitude: as good as Gaussian here, and much cheaper to draw.
    canvas += noise * (rng.random(canvas.shape, dtype=np.float32) - 0.5)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    canvas *= 255.0
    canvas += 0.5
    images[:] = canvas.transpose(0, 2, 3, 1)
    return [tuple(p) for p in placed]


class CanvasSource:
    """In-memory canvases of one split, as a ``SampleSource``.

    Args:
        name: split name, used in the sample ids (``train-00000``, ...).
        canvases: the generated canvases.
    """

    def __init__(self, name: str, canvases: Canvases) -> None:
        self.canvases = canvases
        self.ids = [f"{name}-{i:05d}" for i in range(len(canvases.images))]

    @property
    def placements(self) -> tuple[tuple[Placement, ...], ...]:
        """The digits placed on each canvas."""
        return self.canvases.placements

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.canvases.images[index], self.canvases.masks[index]

    def label(self, index: int) -> np.ndarray:
        return self.canvases.masks[index]


def digit_scan_splits(seed: int) -> dict[str, list[int]]:
    """Indices of the scans each split may use: the 1,797 scans cut 7:2:1 with ``seed``."""
    scans, _ = load_scans()
    return dict(zip(SPLIT_NAMES, split_ids(list(range(len(scans))), seed), strict=True))


def load_digits_dataset(spec: DigitsSpec) -> SegmentationData:
    """Generate the digits data set described by ``spec`` (all three splits, in memory)."""
    scan_splits = digit_scan_splits(spec.seed)
    counts = dict(zip(SPLIT_NAMES, split_sizes(spec.images), strict=True))
    sources = {}
    for k, name in enumerate(SPLIT_NAMES):
        # One independent stream per split: a split's canvases do not depend on the others'.
        rng = np.random.default_rng([spec.seed, k])
        canvases = render_canvases(spec, scan_splits[name], counts[name], rng)
        if spec.labels == "foreground":
            canvases = _foreground_only(canvases)
        sources[name] = CanvasSource(name, canvases)
    return assemble(
        sources,
        class_names=DIGIT_CLASSES if spec.labels == "digits" else FOREGROUND_CLASSES,
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        size=spec.size,
        augment=spec.augment,
        scale=spec.scale,
        flip=False,  # a mirrored digit is another shape
    )


def _foreground_only(canvases: Canvases) -> Canvases:
    """Every digit class becomes class 1; background (0) and ignored pixels stay."""
    masks = canvases.masks
    digit = (masks > 0) & (masks < len(DIGIT_CLASSES))
    return dataclasses.replace(canvases, masks=np.where(digit, 1, masks).astype(masks.dtype))
