"""A pure ASGI middleware against DNS rebinding and cross-site requests, and the security
headers of every answer.

- **Trusted hosts**: a request whose ``Host`` is not one of the allowed host names (port
  aside) gets 400. A page on ``attacker.example`` whose name an attacker re-points at
  127.0.0.1 then cannot talk to this server from the victim's browser.
- **Cross-site requests**: a state-changing request (``POST``, ``PUT``, ``PATCH``,
  ``DELETE``) gets 403 when its ``Origin`` names another site than its ``Host``, or when it is
  neither JSON (``Content-Type: application/json``) nor carries ``X-Requested-With``: what a
  cross-site HTML form can send (a bodyless POST, a urlencoded one) is not enough, and a
  cross-site script cannot add either without a CORS preflight, which this server does not
  answer.
- **Headers**: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: same-origin`` and a ``Content-Security-Policy`` that allows only this
  server's own scripts (the pages' inline ``style`` attributes aside) on every answer;
  ``/docs`` serves Swagger UI from this server too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from service.limits import send_problem

Scope = dict[str, Any]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", CSP.encode()),
]


def host_name(host: str) -> str:
    """``Host`` without its port, lower case: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """Args: ``allowed_hosts``: host names a request may name (``*``: any)."""

    def __init__(self, app: Any, *, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        refusal = self._refusal(scope["method"], host, headers)
        if refusal is not None:
            status, detail = refusal
            await send_problem(send, status, detail, SECURITY_HEADERS)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, method: str, host: str, headers: dict[str, str]) -> tuple[int, str] | None:
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            return 400, "this server does not answer to that Host (SEGNAS_ALLOWED_HOSTS)"
        if method not in UNSAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and origin != "null" and urlsplit(origin).netloc.lower() != host:
            return 403, "cross-site request refused: its Origin is not this server"
        if origin == "null":
            return 403, "cross-site request refused: its Origin is opaque"
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json" and "x-requested-with" not in headers:
            return 403, (
                "cross-site request refused: send Content-Type: application/json "
                "(or, without a body, the header X-Requested-With)"
            )
        return None
