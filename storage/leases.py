"""The dispatcher lease on a search, and the state changes that race with it (cancel).

Every change is one conditional ``UPDATE``, so two dispatchers (or a dispatcher and the API)
that act at once cannot both win: the database row is the truth, Redis only delivers.

Heartbeats and staleness use the database's clock, asked once per operation: dispatchers on
machines whose clocks disagree still agree on whether a lease is alive. (SQLite's clock is the
clock of the machine that holds the file, the only one whose processes can share it.) The
lease's (worker, attempt) is also the driver's fence: ``storage.fencing``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

from storage.fencing import Fence, LeaseLostError
from storage.models import Search, utcnow
from storage.searches import ACTIVE_STATUSES, SearchNotFoundError, SearchStore

__all__ = [
    "CancelOutcome",
    "Claim",
    "Fence",
    "LeaseLostError",
    "SearchLeases",
    "database_now",
]

# SQLite's own clock in the text form SQLAlchemy stores its datetimes in, to the millisecond.
_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")


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

    def claim(self, search_id: str, worker: str) -> Claim:
        """Take the lease of an active search that nobody holds (or whose holder went silent).
        A search with a pending cancel and no live driver is cancelled instead of run."""
        with self.store._session() as s:
            now = database_now(s)
            free = or_(
                Search.worker.is_(None),
                Search.worker == worker,
                Search.heartbeat_at.is_(None),
                Search.heartbeat_at < now - self.lease,
            )
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
        with self.store._session() as s:
            s.execute(
                update(Search)
                .where(Search.id.in_(search_ids), Search.worker == worker)
                .values(heartbeat_at=database_now(s))
            )
            held = s.scalars(
                select(Search.id).where(Search.id.in_(search_ids), Search.worker == worker)
            )
            return list(held)

    def release(self, search_id: str, worker: str, *, attempt: int | None = None) -> None:
        """Give the lease back (the driver ended, or this dispatcher shuts down); with
        ``attempt``, only the lease of that claim."""
        where = [Search.id == search_id, Search.worker == worker]
        if attempt is not None:
            where.append(Search.attempts == attempt)
        with self.store._session() as s:
            s.execute(update(Search).where(*where).values(worker=None, heartbeat_at=None))

    def holds(self, search_id: str, fence: Fence) -> bool:
        """Whether ``fence`` is still the search's lease."""
        query = select(Search.worker, Search.attempts).where(Search.id == search_id)
        with self.store._session() as s:
            row = s.execute(query).first()
        return row is not None and (row.worker, row.attempts) == (fence.worker, fence.attempt)

    def orphans(self) -> list[str]:
        """Active searches nobody holds a live lease on, oldest first: queued ones that may
        never have reached the queue, and running ones whose dispatcher died."""
        with self.store._session() as s:
            stale = database_now(s) - self.lease
            query = (
                select(Search.id)
                .where(
                    Search.status.in_(ACTIVE_STATUSES),
                    or_(Search.heartbeat_at.is_(None), Search.heartbeat_at < stale),
                )
                .order_by(Search.created_at)
            )
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


def database_now(session: Session) -> datetime:
    """The database's current time, timezone-aware UTC (one round trip)."""
    if session.get_bind().dialect.name == "sqlite":
        stamp = session.execute(_SQLITE_NOW).scalar_one()
        return datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    value = session.execute(select(func.now())).scalar_one()
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
