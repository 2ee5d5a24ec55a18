"""Deterministic train/val/test splits of sample identifiers.

The paper splits VOC 2012 trainval (2,913 images) 7:2:1 into train/val/test. ``split_ids`` does
that for any list of identifiers: a seeded shuffle, then part sizes by the largest-remainder
method, so the parts always add up to the whole and the rounding is the same on every machine
(integer arithmetic, no floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from errors import DatasetError

T = TypeVar("T")

PAPER_RATIOS: tuple[int, int, int] = (7, 2, 1)
"""The paper's train:val:test ratio."""


def split_sizes(total: int, ratios: Sequence[int] = PAPER_RATIOS) -> tuple[int, ...]:
    """Sizes of the parts of ``total`` items cut in proportion to ``ratios``.

    Largest-remainder (Hamilton) method: every part gets the floor of its exact quota, and the
    items left over go one each to the parts with the largest remainders, earlier parts first on a
    tie. For 2,913 items and 7:2:1 this gives 2039/583/291; for 4 items 3/1/0.

    Args:
        total: number of items, at least 0.
        ratios: non-negative integer weights, at least one of them positive.

    Raises:
        DatasetError: negative total or invalid ratios.
    """
    if total < 0:
        raise DatasetError(f"cannot split a negative number of items ({total})")
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise DatasetError(f"split ratios must be non-negative with a positive sum, got {ratios}")
    weight = sum(ratios)
    sizes = [total * r // weight for r in ratios]
    remainders = [total * r % weight for r in ratios]
    left = total - sum(sizes)
    # Stable sort: on equal remainders the earlier part (train before val) gets the item.
    for k in sorted(range(len(ratios)), key=lambda k: -remainders[k])[:left]:
        sizes[k] += 1
    return tuple(sizes)


def split_ids(
    ids: Sequence[T], seed: int, ratios: Sequence[int] = PAPER_RATIOS
) -> tuple[list[T], ...]:
    """Split ``ids`` into disjoint parts (train/val/test by default) in proportion to ``ratios``.

    The ids are shuffled with ``numpy.random.default_rng(seed)`` and cut into consecutive parts
    of ``split_sizes(len(ids), ratios)`` items; each part keeps the ids in their input order, so
    the result depends only on the input order (pass a fixed order, e.g. sorted), the seed and
    the ratios.

    Args:
        ids: the sample identifiers, in a fixed order.
        seed: shuffle seed.
        ratios: integer weights of the parts; the paper's 7:2:1 by default.

    Returns:
        One list per ratio.
    """
    sizes = split_sizes(len(ids), ratios)
    order = np.random.default_rng(seed).permutation(len(ids))
    parts: list[list[T]] = []
    start = 0
    for size in sizes:
        chosen = np.sort(order[start : start + size])
        parts.append([ids[int(i)] for i in chosen])
        start += size
    return tuple(parts)
