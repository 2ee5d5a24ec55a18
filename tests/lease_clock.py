"""Time for the lease tests without sleeping: heartbeats dated back in the database's own
time, and a process clock that runs off by a chosen offset."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from storage.leases import database_now
from storage.models import Search
from storage.searches import SearchStore

LEASE = 30


def make_stale(store: SearchStore, search_id: str, seconds: float = LEASE + 1) -> None:
    """Date the search's heartbeat ``seconds`` back from the database's now: its dispatcher
    has been silent that long."""
    with store._session() as s:
        then = database_now(s) - timedelta(seconds=seconds)
        s.execute(update(Search).where(Search.id == search_id).values(heartbeat_at=then))


class SkewedDatetime(datetime):
    """``datetime`` of a process whose clock is off by ``offset``: monkeypatched over
    ``storage.models.datetime``, it moves every time the storage code takes from its own
    clock (``utcnow``)."""

    offset = timedelta(0)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) + cls.offset
