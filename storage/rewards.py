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
    samples: int  # and their samples (``curve_counts``)


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


def curve_counts(session: Session, search_id: str) -> tuple[int, int]:
    """The search's controller steps and their samples. Steps are only added (or, on a
    resume, rewritten alike) and samples only added to them: the two tell whether the curve
    changed."""
    total, samples = session.execute(
        select(func.count(), func.sum(RewardStep.samples)).where(RewardStep.search_id == search_id)
    ).one()
    return total or 0, int(samples or 0)


def read_curve(
    session: Session,
    search_id: str,
    *,
    after: tuple[int, int] | None = None,
    max_points: int | None = None,
) -> Curve:
    """The search's curve, from the step after ``after`` on (None: from the start), in at
    most ``max_points`` points (None: one per step)."""
    total, samples = curve_counts(session, search_id)
    return _read_steps(session, search_id, after, max_points, total, samples)


def _read_steps(
    session: Session,
    search_id: str,
    after: tuple[int, int] | None,
    max_points: int | None,
    total: int,
    samples: int,
) -> Curve:
    """``read_curve`` past its cache: ``total`` and ``samples`` are the search's step and
    sample counts, already read."""
    mine = RewardStep.search_id == search_id
    key = tuple_(RewardStep.epoch, RewardStep.step)
    query = (
        select(
            RewardStep.epoch,
            RewardStep.step,
            RewardStep.samples,
            RewardStep.reward_sum,
            RewardStep.max_reward,
        )
        .where(mine)
        .order_by(RewardStep.epoch, RewardStep.step)
    )
    first, best = 0, -math.inf
    if after is not None:
        query = query.where(key > tuple_(*after))
        before = select(func.count(), func.max(RewardStep.max_reward)).where(
            mine, key <= tuple_(*after)
        )
        first, best_before = session.execute(before).one()
        best = -math.inf if best_before is None else best_before
    rows = session.execute(query).all()  # plain tuples: a 310k-sample search has 15,500 steps
    if max_points is not None and len(rows) > max_points:
        points = _buckets(rows, first, best, max_points)
        return Curve(points=points, downsampled=True, steps=total, samples=samples)
    points = []
    for i, (epoch, step, count, reward_sum, max_reward) in enumerate(rows):
        best = max(best, max_reward)
        points.append(
            CurvePoint(
                index=first + i, epoch=epoch, step=step, samples=count,
                mean_reward=reward_sum / count, max_reward=max_reward, best_so_far=best,
            )
        )  # fmt: skip
    return Curve(points=points, downsampled=False, steps=total, samples=samples)


def _buckets(rows: Sequence[Any], first: int, best: float, max_points: int) -> list[CurvePoint]:
    """Consecutive steps merged into at most ``max_points`` buckets, from plain rows (a model
    is built only per bucket)."""
    size = math.ceil(len(rows) / max_points)
    points = []
    for start in range(0, len(rows), size):
        bucket = rows[start : start + size]
        samples = sum(r[2] for r in bucket)
        top = max(r[4] for r in bucket)
        best = max(best, top)
        epoch, step = bucket[-1][0], bucket[-1][1]
        points.append(
            CurvePoint(
                index=first + start + len(bucket) - 1, epoch=epoch, step=step, samples=samples,
                mean_reward=sum(r[3] for r in bucket) / samples, max_reward=top, best_so_far=best,
            )
        )  # fmt: skip
    return points
