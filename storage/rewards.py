"""The reward curve: one aggregate row per controller step, kept as the samples are written.

``add_step_rewards`` runs in the transaction that inserts a batch of samples and adds each
step's count, reward sum and largest reward to ``reward_steps`` (an upsert: a step written in
several batches adds up). ``read_curve`` reads a search's steps in order, optionally only
those after a cursor (what a polling page has not seen), and optionally downsampled to a
bounded number of points, each a bucket of consecutive steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import RewardStep


class CurvePoint(BaseModel):
    """A point of the reward curve: one controller step, or (downsampled) the bucket of
    consecutive steps that ends at ``(epoch, step)``.

    ``index`` is the 0-based position of that step among all of the search's controller
    steps, so points of a downsampled curve and points fetched later line up on one axis."""

    model_config = ConfigDict(frozen=True)

    index: int
    epoch: int
    step: int
    samples: int
    mean_reward: float
    max_reward: float
    best_so_far: float


class Curve(BaseModel):
    points: list[CurvePoint]
    downsampled: bool
    steps: int  # the search's controller steps in all


def add_step_rewards(session: Session, search_id: str, rows: Iterable[Any]) -> None:
    """Add the controller samples among ``rows`` to their steps' aggregates."""
    steps: dict[tuple[int, int], list[float]] = {}
    for row in rows:
        if row.phase != "controller":
            continue
        agg = steps.setdefault((row.epoch, row.step), [0, 0.0, -math.inf])
        agg[0] += 1
        agg[1] += row.reward
        agg[2] = max(agg[2], row.reward)
    if not steps:
        return
    values = [
        {"search_id": search_id, "epoch": e, "step": s, "samples": int(n), "reward_sum": total,
         "max_reward": best}
        for (e, s), (n, total, best) in sorted(steps.items())
    ]  # fmt: skip
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = postgresql.insert if postgres else sqlite.insert
    statement = insert(RewardStep).values(values)
    larger = func.greatest if postgres else func.max  # SQLite's max(a, b) is scalar
    statement = statement.on_conflict_do_update(
        index_elements=[RewardStep.search_id, RewardStep.epoch, RewardStep.step],
        set_={
            "samples": RewardStep.samples + statement.excluded.samples,
            "reward_sum": RewardStep.reward_sum + statement.excluded.reward_sum,
            "max_reward": larger(RewardStep.max_reward, statement.excluded.max_reward),
        },
    )
    session.execute(statement)


def read_curve(
    session: Session,
    search_id: str,
    *,
    after: tuple[int, int] | None = None,
    max_points: int | None = None,
) -> Curve:
    """The search's curve, from the step after ``after`` on (None: from the start), in at
    most ``max_points`` points (None: one per step)."""
    mine = RewardStep.search_id == search_id
    key = tuple_(RewardStep.epoch, RewardStep.step)
    total = session.scalar(select(func.count()).select_from(RewardStep).where(mine)) or 0
    query = select(RewardStep).where(mine).order_by(RewardStep.epoch, RewardStep.step)
    first, best = 0, -math.inf
    if after is not None:
        query = query.where(key > tuple_(*after))
        before = select(func.count(), func.max(RewardStep.max_reward)).where(
            mine, key <= tuple_(*after)
        )
        first, best_before = session.execute(before).one()
        best = -math.inf if best_before is None else best_before
    rows = list(session.scalars(query))
    points = []
    for i, row in enumerate(rows):
        best = max(best, row.max_reward)
        points.append(
            CurvePoint(
                index=first + i, epoch=row.epoch, step=row.step, samples=row.samples,
                mean_reward=row.reward_sum / row.samples, max_reward=row.max_reward,
                best_so_far=best,
            )
        )  # fmt: skip
    if max_points is None or len(points) <= max_points:
        return Curve(points=points, downsampled=False, steps=total)
    return Curve(points=downsample(points, max_points), downsampled=True, steps=total)


def downsample(points: Sequence[CurvePoint], max_points: int) -> list[CurvePoint]:
    """Consecutive points merged into at most ``max_points`` buckets: each one the last
    step's position and best so far, the samples' count and mean, the largest reward."""
    size = math.ceil(len(points) / max_points)
    merged = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        n = sum(p.samples for p in bucket)
        merged.append(
            bucket[-1].model_copy(
                update={
                    "samples": n,
                    "mean_reward": sum(p.mean_reward * p.samples for p in bucket) / n,
                    "max_reward": max(p.max_reward for p in bucket),
                }
            )
        )
    return merged
