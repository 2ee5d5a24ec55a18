"""The size front of a search: its samples that no other sample beats on both reward and size.

A sample is on the front when every smaller sample (fewer parameters, or FLOPs) has a lower
reward: the best reward a search found at each size budget. ``read_front`` finds it in one
grouped read (the best reward per distinct size) and a staircase sweep, then reads the first
sample of each step, so a search of 310,000 samples costs one aggregate, not 310,000 rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, func, select, tuple_

from storage.models import Sample

SizeCost = Literal["params", "flops"]


class FrontPoint(BaseModel):
    """One sample on the front, the first stored of its size and reward."""

    model_config = ConfigDict(frozen=True)

    id: int
    arch: list[int]
    phase: str
    epoch: int
    cost: int
    reward: float


class SizeFront(BaseModel):
    cost: SizeCost
    samples: int  # the sized samples considered
    points: list[FrontPoint]  # smallest first; rewards rise along it


def staircase(pairs: Iterable[tuple[float, float]]) -> list[int]:
    """Indices of the ``(size, score)`` pairs that no other pair beats: none smaller (or as
    small) with a score as high. In increasing size; the first of equal pairs."""
    pairs = list(pairs)
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i][0], -pairs[i][1], i))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if pairs[i][1] > best:
            front.append(i)
            best = pairs[i][1]
    return front


def read_front(
    connection: Connection,
    search_id: str,
    *,
    cost: SizeCost = "params",
    phase: str | None = None,
) -> SizeFront:
    """The search's front by ``cost``, over its samples of ``phase`` (None: every sample);
    samples stored without that size (before migrations 0007 and 0009) are left out."""
    size = getattr(Sample, cost)
    where = [Sample.search_id == search_id, size.is_not(None)]
    if phase is not None:
        where.append(Sample.phase == phase)
    grouped = connection.execute(
        select(size, func.max(Sample.reward), func.count()).where(*where).group_by(size)
    ).all()
    steps = [grouped[i] for i in staircase((row[0], row[1]) for row in grouped)]
    points = _first_samples(connection, where, size, [(row[0], row[1]) for row in steps])
    return SizeFront(cost=cost, samples=sum(row[2] for row in grouped), points=points)


def _first_samples(
    connection: Connection, where: list, size: object, steps: Sequence[tuple[int, float]]
) -> list[FrontPoint]:
    if not steps:
        return []
    rows = connection.execute(
        select(Sample.id, Sample.arch, Sample.phase, Sample.epoch, size, Sample.reward)
        .where(*where, tuple_(size, Sample.reward).in_(list(steps)))
        .order_by(size, Sample.id)
    ).all()
    first: dict[int, FrontPoint] = {}
    for row_id, arch, phase, epoch, cost, reward in rows:
        first.setdefault(
            cost,
            FrontPoint(id=row_id, arch=arch, phase=phase, epoch=epoch, cost=cost, reward=reward),
        )
    return [first[c] for c, _ in steps if c in first]
