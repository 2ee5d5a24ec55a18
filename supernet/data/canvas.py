"""Textured canvases shared by the generated data sets (``digits``, ``shapes``).

Everything is drawn from a ``numpy.random.Generator`` the caller seeds, as float32 arrays in
roughly 0..1: smooth random fields, textured backgrounds, background "scribbles", and colours
that contrast with what they are painted on. Vectorised over a chunk of canvases at once.
"""

from __future__ import annotations

import numpy as np

MIN_CONTRAST = 0.3
"""Least luminance difference between a painted colour and the background under it (0..1)."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""Rec. 601 luminance weights of R, G, B."""


def smooth_matrix(grid: int, size: int) -> np.ndarray:
    """``[size, grid]`` Gaussian weights (rows sum to 1) that spread a ``grid x grid`` lattice of
    random values into a smooth ``size x size`` field (``M @ X @ M.T``)."""
    centres = (np.arange(grid) + 0.5) * size / grid
    x = np.arange(size) + 0.5
    w = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / (0.7 * size / grid)) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_field(
    rng: np.random.Generator, count: int, channels: int, grid: int, size: int
) -> np.ndarray:
    """``float32 [count, channels, size, size]`` smooth random fields, each stretched to 0..1."""
    m = smooth_matrix(grid, size)
    field = m @ rng.random((count, channels, grid, grid), dtype=np.float32) @ m.T
    low = field.min(axis=(2, 3), keepdims=True)
    high = field.max(axis=(2, 3), keepdims=True)
    return (field - low) / np.maximum(high - low, 1e-6)


def backgrounds(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``float32 [count, 3, size, size]`` textured backgrounds, roughly in 0..1: two random
    colours blended by a smooth field, a finer colour texture and a linear lighting gradient."""
    blend = smooth_field(rng, count, 1, 4, size)[:, 0]
    bg = smooth_field(rng, count, 3, max(4, size // 4), size)
    colours = rng.random((count, 2, 3, 1, 1), dtype=np.float32)
    texture_amp = rng.uniform(0.05, 0.3, (count, 1, 1, 1)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, (count, 1, 1)).astype(np.float32)
    slope = rng.uniform(-0.3, 0.3, (count, 1, 1)).astype(np.float32)

    # In place, one channel at a time: this runs on every pixel, and temporaries cost.
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gradient = (slope * np.cos(angle)) * ramp + (slope * np.sin(angle)) * ramp[:, None]
    bg -= 0.5
    bg *= texture_amp
    bg += colours[:, 0]
    step = colours[:, 1, :, 0] - colours[:, 0, :, 0]
    for ch in range(3):
        bg[:, ch] += gradient
        bg[:, ch] += step[:, ch, None] * blend
    return bg


def scribbles(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``float32 [count, 1, size, size]`` ink of background strokes: pieces of a level line of
    a smooth random field (curvy, about as wide as a digit stroke), kept where a second field is
    high so that they come in fragments, on half of the canvases."""
    level = smooth_field(rng, count, 1, 5, size)
    gate = smooth_field(rng, count, 1, 3, size)
    width = rng.uniform(0.03, 0.07, (count, 1, 1, 1)).astype(np.float32)
    present = (rng.random((count, 1, 1, 1)) < 0.5).astype(np.float32)
    ink = np.clip(1.5 - np.abs(level - 0.5) / width, 0.0, 1.0)
    return ink * np.clip((gate - 0.45) * 8.0, 0.0, 1.0) * present


def contrasting_colours(draws: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """Random colours whose luminance differs from ``luma`` by at least ``MIN_CONTRAST``.

    Args:
        draws: ``[..., 5]`` uniform draws: contrast amount, direction, and a random RGB colour.
        luma: ``[...]`` luminance of the background each colour is painted on.

    Returns:
        ``[..., 3]`` colours in 0..1, darker or lighter than the background at random (the other
        way where the first would leave 0..1). Clipping can lower the contrast of a saturated
        colour a little; the luminance gap before clipping is always at least ``MIN_CONTRAST``.
    """
    delta = MIN_CONTRAST + 0.4 * draws[..., 0]
    target = np.where(draws[..., 1] < 0.5, luma + delta, luma - delta)
    target = np.where((target < 0) | (target > 1), 2 * luma - target, target).clip(0, 1)
    # A random hue at the target luminance: shift a random colour, then let clipping bend it.
    colour = draws[..., 2:]
    return np.clip(colour - (colour @ LUMA)[..., None] + target[..., None], 0.0, 1.0)


def summed_area(image: np.ndarray) -> np.ndarray:
    """Summed-area tables ``[N, S+1, S+1]`` of ``[N, S, S]`` images, for O(1) box means."""
    table = np.zeros((image.shape[0], image.shape[1] + 1, image.shape[2] + 1), np.float32)
    table[:, 1:, 1:] = image.cumsum(axis=1).cumsum(axis=2)
    return table


def paint_scribbles(canvas: np.ndarray, ink: np.ndarray, colours: np.ndarray) -> None:
    """Blend ``colours`` (``[N, 3]``) into ``canvas`` (``[N, 3, S, S]``) by ``ink``
    (``[N, 1, S, S]``), in place."""
    # Strokes cover a few percent of the pixels: paint only those.
    n, y, x = np.nonzero(ink[:, 0])
    alpha = ink[n, 0, y, x]
    for ch in range(3):
        canvas[n, ch, y, x] += (colours[n, ch] - canvas[n, ch, y, x]) * alpha


def boxes_overlap(a: tuple[int, int, int], b: tuple[int, int, int], gap: int = 0) -> bool:
    """Whether two square ``(top, left, size)`` boxes come closer than ``gap`` pixels."""
    (ta, la, sa), (tb, lb, sb) = a, b
    return ta < tb + sb + gap and tb < ta + sa + gap and la < lb + sb + gap and lb < la + sa + gap


def place_boxes(
    size: int, heights: np.ndarray, tries: np.ndarray, wanted: int, gap: int
) -> list[tuple[int, int, int]]:
    """Boxes ``(slot, top, left)`` for up to ``wanted`` objects, ``gap`` pixels apart at least.

    Args:
        size: canvas side.
        heights: ``[slots]`` side of each object's (square) box.
        tries: ``[slots, tries, 2]`` uniform draws of candidate positions.
        wanted: how many objects to try.
        gap: free pixels kept between two boxes.
    """
    placed: list[tuple[int, int, int]] = []
    boxes: list[tuple[int, int, int]] = []
    for slot in range(wanted):
        h = int(heights[slot])
        for u, v in tries[slot] * (size - h + 1):
            box = (int(u), int(v), h)
            if not any(boxes_overlap(box, other, gap) for other in boxes):
                placed.append((slot, box[0], box[1]))
                boxes.append(box)
                break
        # No break: no room left for this object, the canvas carries fewer.
    return placed
