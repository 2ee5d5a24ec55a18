"""The fence on a search's rows: the lease (worker, attempt) its driver was launched under.

A dispatcher that takes a search over changes the row's ``worker`` and adds one to its
``attempts``, so a driver started under an earlier lease no longer matches. Every write of a
fenced driver begins with ``hold``, a conditional UPDATE of the search's row that changes
nothing and matches only while the lease is the driver's: no match, and the transaction rolls
back with ``LeaseLostError`` before it wrote anything. The UPDATE also locks what a takeover
must change (the row on PostgreSQL, the whole database on SQLite) until the transaction ends,
so no takeover slips in between the check and the write. One statement per batch of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from storage.models import Search

_SEARCHES = Search.__table__  # Core: no ORM bookkeeping for a statement that changes nothing


class LeaseLostError(RuntimeError):
    """Another dispatcher holds the search's lease now: this driver must stop, writing nothing
    more (the search is not failed: the new holder runs it)."""


@dataclass(frozen=True)
class Fence:
    """The lease a driver runs under: the dispatcher's name and the claim's attempt number."""

    worker: str
    attempt: int


def fence_conditions(search_id: str, fence: Fence) -> tuple[ColumnElement[bool], ...]:
    """The WHERE clause of the search's row while ``fence`` is its lease."""
    return (Search.id == search_id, Search.worker == fence.worker, Search.attempts == fence.attempt)


def hold(session: Session, search_id: str, fence: Fence | None) -> None:
    """Check ``fence`` (None: an unfenced writer, the CLI) inside ``session``'s transaction.

    Raises:
        LeaseLostError: the search's lease is no longer ``fence``.
    """
    if fence is None:
        return
    # Assigning the columns to themselves keeps ``revision`` and ``updated_at`` as they are
    # (their onupdate applies only to columns the UPDATE does not set): no new ETag.
    columns = _SEARCHES.c
    unchanged: dict[Any, Any] = {
        c: c for c in (columns.worker, columns.revision, columns.updated_at)
    }
    statement = update(_SEARCHES).where(*fence_conditions(search_id, fence)).values(unchanged)
    if session.execute(statement).rowcount == 0:
        raise lease_lost(search_id, fence)


def lease_lost(search_id: str, fence: Fence) -> LeaseLostError:
    return LeaseLostError(
        f"search {search_id}: the lease of {fence.worker} (attempt {fence.attempt}) was taken "
        "over by another dispatcher"
    )
