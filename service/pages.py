"""The web pages' folder, and whether a request asks for a page rather than JSON."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request

WEB_DIR = Path(__file__).resolve().parent / "web"


def wants_html(request: Request) -> bool:
    """A browser's navigation (``Accept: text/html``, and not JSON)."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept
