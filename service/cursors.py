"""Opaque page cursors: what a client passes back as ``after=`` is what the API gave it."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime


class CursorError(ValueError):
    """A cursor this API did not give out."""


_NOT_OURS = "after: not a cursor this API gave out (use a page's `next`)"


def encode_search_cursor(created_at: datetime, search_id: str) -> str:
    raw = f"{created_at.isoformat()}|{search_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, search_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(_NOT_OURS) from None
    if created_at.tzinfo is None:
        raise CursorError(_NOT_OURS)
    return created_at, search_id


MAX_ROW_ID = 2**63 - 1  # PostgreSQL's bigint; SQLite's integer


def encode_sample_cursor(sort: str, value: float, row_id: int) -> str:
    """A page of samples in stored order continues after a row id (digits, as it always has);
    a sorted page after the sort value and row id of its last row (``s`` and base64)."""
    if sort == "id":
        return str(row_id)
    raw = f"{sort}|{value!r}|{row_id}".encode()
    return "s" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_sample_cursor(cursor: str, sort: str = "id") -> tuple[float, int]:
    """The ``(sort value, row id)`` after which the page of ``sort`` starts; a row id past the
    largest is the end. A cursor of another sort order is refused."""
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if cursor.isascii() and cursor.isdigit() and len(cursor) <= 19:
        if sort != "id":
            raise CursorError(f"after: a cursor of the stored order, not of sort={sort}")
        row_id = min(int(cursor), MAX_ROW_ID)
        return float(row_id), row_id
    if not cursor.startswith("s"):
        raise CursorError(_NOT_OURS)
    body = cursor[1:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        cursor_sort, value, row_id = raw.split("|")
        parsed = float(value), int(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(_NOT_OURS) from None
    if cursor_sort != sort:
        raise CursorError(f"after: a cursor of sort={cursor_sort}, not of sort={sort}")
    if parsed[0] != parsed[0] or not 0 <= parsed[1] <= MAX_ROW_ID:  # NaN, or no such row id
        raise CursorError(_NOT_OURS)
    return parsed
