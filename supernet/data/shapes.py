"""The embedded search task: large shapes of four classes on textured canvases.

Nothing is downloaded; every canvas is drawn from a seeded ``numpy.random.Generator``. Built to
have what makes the paper's VOC search meaningful, at a size two CPU cores can search:

- background-dominated: objects cover 15-45 % of the labelled pixels (VOC: about 30 %);
- four object classes of unequal frequency (``disc`` 40 %, ``square`` 30 %, ``triangle`` 20 %,
  ``diamond`` 10 % of the objects), so mIoU (every class counts alike) and pixel accuracy
  (background dominates) rank networks differently, and mIoU+ (objects against background)
  differs from both;
- objects as large as a third to three quarters of the canvas, painted in the same random
  colours and textures whatever their class: a pixel inside a shape looks the same in all four
  classes, and only the outline, up to ``object_size`` pixels away, tells them apart. Receptive
  field and spatial filters decide the score, so the cells of a layer matter;
- distractors: curvy background scribbles on half of the canvases, a lighting gradient, noise.

Each canvas has ``min_objects``..``max_objects`` shapes in square boxes of a random side in
``object_size``, kept ``GAP`` pixels apart (a shape that does not fit is dropped). A square box
holds: a disc (diameter 0.95 of the side), an axis-aligned square (0.8 of the side, the same
area), an upward triangle, or a diamond (a square turned 45 degrees: the square's corners are
where it differs). Edges are anti-aliased from 4x4 subsamples; a pixel is labelled with the
shape where the shape covers at least half of it.

``boundary`` mirrors VOC's 255 border: ``none`` labels every pixel; ``void`` marks the pixels of
a shape that touch another label (its one-pixel outline) as ignored, as VOC does; ``class``
makes that outline a class of its own, ``boundary`` (the paper's 22-class setting, where
VOC's border is counted as a class).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from supernet.data.base import SPLIT_NAMES, SegmentationData, assemble
from supernet.data.canvas import (
    LUMA,
    backgrounds,
    contrasting_colours,
    paint_scribbles,
    place_boxes,
    scribbles,
    smooth_field,
    summed_area,
)
from supernet.data.digits import Canvases, CanvasSource
from supernet.data.specs import ShapesSpec
from supernet.data.splits import split_sizes

SHAPE_NAMES: tuple[str, ...] = ("disc", "square", "triangle", "diamond")
"""The object classes, class id ``k + 1`` for ``SHAPE_NAMES[k]``."""
SHAPE_FREQUENCIES: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
"""How often each shape is drawn for an object."""
SHAPES_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SHAPES_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
GAP = 1
"""Free pixels kept between the boxes of two shapes."""
PLACEMENT_TRIES = 20
"""Random positions tried per shape before it is dropped."""
CHUNK = 128
"""Canvases rendered together (changing it changes the canvases drawn from a seed)."""
SUBSAMPLES = 4
"""Subsamples per pixel side for the coverage of a shape's edge."""
VOID = 255


def _disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 0.95**2


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Apex at the top centre, base along the bottom: |u| grows linearly from the apex.
    return (v <= 0.9) & (np.abs(u) <= 0.95 * (v + 0.95) / 1.85)


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) <= 1.0


_INSIDE: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _disc,
    _square,
    _triangle,
    _diamond,
)


def shape_coverage(shape: int, side: int) -> np.ndarray:
    """``float32 [side, side]``: how much of each pixel of a ``side`` box the shape covers."""
    n = side * SUBSAMPLES
    # Subsample centres in -1..1 across the box.
    t = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    inside = _INSIDE[shape](t[None, :], t[:, None]).astype(np.float32)
    return inside.reshape(side, SUBSAMPLES, side, SUBSAMPLES).mean(axis=(1, 3))


def class_names(boundary: str) -> tuple[str, ...]:
    """The class names of a ``shapes`` data set with this ``boundary`` setting."""
    names = ("background", *SHAPE_NAMES)
    return (*names, "boundary") if boundary == "class" else names


def outline(masks: np.ndarray) -> np.ndarray:
    """``bool [N, S, S]``: object pixels with a 4-neighbour of another label."""
    m = masks
    edge = np.zeros(m.shape, dtype=bool)
    edge[:, 1:, :] |= m[:, 1:, :] != m[:, :-1, :]
    edge[:, :-1, :] |= m[:, :-1, :] != m[:, 1:, :]
    edge[:, :, 1:] |= m[:, :, 1:] != m[:, :, :-1]
    edge[:, :, :-1] |= m[:, :, :-1] != m[:, :, 1:]
    return edge & (m > 0)


def render_shapes(spec: ShapesSpec, count: int, rng: np.random.Generator) -> Canvases:
    """Draw ``count`` canvases (images, masks and what was placed where)."""
    images = np.empty((count, spec.size, spec.size, 3), dtype=np.uint8)
    masks = np.zeros((count, spec.size, spec.size), dtype=np.uint8)
    coverage = {
        (k, side): shape_coverage(k, side)
        for k in range(len(SHAPE_NAMES))
        for side in range(spec.object_size[0], spec.object_size[1] + 1)
    }
    for start in range(0, count, CHUNK):
        stop = min(start + CHUNK, count)
        _render_chunk(spec, coverage, rng, images[start:stop], masks[start:stop])
    if spec.boundary != "none":
        edge = outline(masks)
        masks[edge] = VOID if spec.boundary == "void" else len(SHAPE_NAMES) + 1
    images.flags.writeable = False
    masks.flags.writeable = False
    return Canvases(images, masks, placements=tuple(() for _ in range(count)))


def _render_chunk(
    spec: ShapesSpec,
    coverage: dict[tuple[int, int], np.ndarray],
    rng: np.random.Generator,
    images: np.ndarray,
    masks: np.ndarray,
) -> None:
    count, size, most = len(images), spec.size, spec.max_objects
    canvas = backgrounds(rng, count, size)
    luma = np.einsum("nchw,c->nhw", canvas, LUMA)
    ink = scribbles(rng, count, size)
    wanted = rng.integers(spec.min_objects, most + 1, count)
    sides = rng.integers(spec.object_size[0], spec.object_size[1] + 1, (count, most))
    kinds = rng.choice(len(SHAPE_NAMES), size=(count, most), p=SHAPE_FREQUENCIES)
    tries = rng.random((count, most, PLACEMENT_TRIES, 2))
    colour_draws = rng.random((count, most + 1, 5), dtype=np.float32)
    # Each shape's own texture: a smooth field that modulates its colour, the same for every
    # class, so that the inside of a shape says nothing about which shape it is.
    texture = smooth_field(rng, count * most, 1, 3, spec.object_size[1])
    texture_amp = rng.uniform(0.05, 0.25, (count, most)).astype(np.float32)
    noise = rng.uniform(0.02, 0.12, (count, 1, 1, 1)).astype(np.float32)

    paint_scribbles(canvas, ink, contrasting_colours(colour_draws[:, 0], luma.mean(axis=(1, 2))))
    table = summed_area(luma)
    for n in range(count):
        for slot, top, left in place_boxes(size, sides[n], tries[n], int(wanted[n]), GAP):
            side, kind = int(sides[n, slot]), int(kinds[n, slot])
            under = (
                table[n, top + side, left + side]
                - table[n, top, left + side]
                - table[n, top + side, left]
                + table[n, top, left]
            ) / (side * side)
            colour = contrasting_colours(colour_draws[n, slot + 1], np.float32(under))
            alpha = coverage[(kind, side)]
            shade = 1.0 + texture_amp[n, slot] * (texture[n * most + slot, 0, :side, :side] - 0.5)
            window = canvas[n, :, top : top + side, left : left + side]
            window += (np.clip(colour[:, None, None] * shade, 0.0, 1.0) - window) * alpha
            masks[n, top : top + side, left : left + side][alpha >= 0.5] = kind + 1

    canvas += noise * (rng.random(canvas.shape, dtype=np.float32) - 0.5)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    canvas *= 255.0
    canvas += 0.5
    images[:] = canvas.transpose(0, 2, 3, 1)


def load_shapes_dataset(spec: ShapesSpec) -> SegmentationData:
    """Generate the ``shapes`` data set described by ``spec`` (all three splits, in memory)."""
    counts = dict(zip(SPLIT_NAMES, split_sizes(spec.images), strict=True))
    sources = {}
    for k, name in enumerate(SPLIT_NAMES):
        # One independent stream per split: a split's canvases do not depend on the others'.
        rng = np.random.default_rng([spec.seed, 101, k])
        sources[name] = CanvasSource(name, render_shapes(spec, counts[name], rng))
    return assemble(
        sources,
        class_names=class_names(spec.boundary),
        mean=SHAPES_MEAN,
        std=SHAPES_STD,
        size=spec.size,
        augment=spec.augment,
        scale=spec.scale,
        flip=True,  # a mirrored shape is a shape of the same class
    )
