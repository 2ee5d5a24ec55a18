"""The dispatcher lease on a search, and the state changes that race with it (cancel).

Every change is one conditional ``UPDATE``, so two dispatchers (or a dispatcher and the API)
that act at once cannot both win: the database row is the truth, Redis only delivers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import or_, select, update

from storage.models import Search, utcnow
from storage.searches import ACTIVE_STATUSES, SearchNotFoundError, SearchStore


class Claim(Enum):
    """What ``SearchLeases.claim`` found."""

    TAKEN = "taken"  # this dispatcher holds the lease now: run (or resume) the search
    CANCELLED = "cancelled"  # a cancel was pending with no driver left: now cancelled
    FINISHED = "finished"  # nothing to do any more (finished, or cancelled while queued)
    HELD = "held"  # another dispatcher's lease is alive
    MISSING = "missing"  # no such search (a stream entry that outlived its row)


class CancelOutcome(Enum):
    CANCELLED = "cancelled"  # it was queued: cancelled at once
    CANCELLING = "cancelling"  # a driver runs it and stops at the next step boundary
    FINISHED = "finished"  # nothing left to cancel


class SearchLeases:
    """Leases on the searches of ``store``.

    Args:
        store: the searches database.
        lease_seconds: a lease whose heartbeat is older is taken to be dead.
    """

    def __init__(self, store: SearchStore, *, lease_seconds: float = 30.0) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)

    def _stale_before(self, now: datetime) -> datetime:
        return now - self.lease

    def claim(self, search_id: str, worker: str) -> Claim:
        """Take the lease of an active search that nobody holds (or whose holder went silent).
        A search with a pending cancel and no live driver is cancelled instead of run."""
        now = utcnow()
        free = or_(
            Search.worker.is_(None),
            Search.worker == worker,
            Search.heartbeat_at.is_(None),
            Search.heartbeat_at < self._stale_before(now),
        )
        with self.store._session() as s:
            taken = s.execute(
                update(Search)
                .where(Search.id == search_id, Search.status.in_(ACTIVE_STATUSES), free)
                .values(
                    worker=worker,
                    heartbeat_at=now,
                    attempts=Search.attempts + 1,
                    updated_at=now,
                )
            ).rowcount
            row = s.get(Search, search_id)
            if row is None:
                return Claim.MISSING
            if not taken:
                return Claim.HELD if row.status in ACTIVE_STATUSES else Claim.FINISHED
            if row.status == "cancelling":
                row.status, row.finished_at, row.worker = "cancelled", now, None
                return Claim.CANCELLED
            return Claim.TAKEN

    def heartbeat(self, worker: str, search_ids: list[str]) -> list[str]:
        """Renew this dispatcher's leases; returns the ids it still holds (a search another
        dispatcher took over, after this one went silent too long, is not among them)."""
        if not search_ids:
            return []
        now = utcnow()
        with self.store._session() as s:
            s.execute(
                update(Search)
                .where(Search.id.in_(search_ids), Search.worker == worker)
                .values(heartbeat_at=now)
            )
            held = s.scalars(
                select(Search.id).where(Search.id.in_(search_ids), Search.worker == worker)
            )
            return list(held)

    def release(self, search_id: str, worker: str) -> None:
        """Give the lease back (the driver ended, or this dispatcher shuts down)."""
        with self.store._session() as s:
            s.execute(
                update(Search)
                .where(Search.id == search_id, Search.worker == worker)
                .values(worker=None, heartbeat_at=None)
            )

    def orphans(self) -> list[str]:
        """Active searches nobody holds a live lease on, oldest first: queued ones that may
        never have reached the queue, and running ones whose dispatcher died."""
        stale = self._stale_before(utcnow())
        query = (
            select(Search.id)
            .where(
                Search.status.in_(ACTIVE_STATUSES),
                or_(Search.heartbeat_at.is_(None), Search.heartbeat_at < stale),
            )
            .order_by(Search.created_at)
        )
        with self.store._session() as s:
            return list(s.scalars(query))

    def request_cancel(self, search_id: str) -> CancelOutcome:
        """Cancel: a queued search at once, a running one through its driver."""
        now = utcnow()
        with self.store._session() as s:
            if s.execute(
                update(Search)
                .where(Search.id == search_id, Search.status == "queued", Search.worker.is_(None))
                .values(status="cancelled", finished_at=now, updated_at=now)
            ).rowcount:
                return CancelOutcome.CANCELLED
            if s.execute(
                update(Search)
                .where(Search.id == search_id, Search.status.in_(("queued", "running")))
                .values(status="cancelling", updated_at=now)
            ).rowcount:
                return CancelOutcome.CANCELLING
            row = s.get(Search, search_id)
            if row is None:
                raise SearchNotFoundError(f"no search with id {search_id!r}")
            return (
                CancelOutcome.CANCELLING if row.status == "cancelling" else CancelOutcome.FINISHED
            )

    def is_cancelling(self, search_id: str) -> bool:
        with self.store._session() as s:
            status = s.scalar(select(Search.status).where(Search.id == search_id))
            return status == "cancelling"
