"""Opaque page cursors: what a client passes back as ``after=`` is what the API gave it."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime


class CursorError(ValueError):
    """A cursor this API did not give out."""


def encode_search_cursor(created_at: datetime, search_id: str) -> str:
    raw = f"{created_at.isoformat()}|{search_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, search_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError("after: not a cursor this API gave out (use a page's `next`)") from None
    if created_at.tzinfo is None:
        raise CursorError("after: not a cursor this API gave out (use a page's `next`)")
    return created_at, search_id


MAX_ROW_ID = 2**63 - 1  # PostgreSQL's bigint; SQLite's integer


def decode_sample_cursor(cursor: str) -> int:
    """The row id after which the page starts; one past the largest id is the end."""
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not (cursor.isascii() and cursor.isdigit()):
        raise CursorError("after: not a cursor this API gave out (use a page's `next`)")
    return min(int(cursor), MAX_ROW_ID)
