"""A client of the segnas API over HTTP: what ``segnas remote`` and ``segnas demo`` use.

The server and the token come from the arguments or from ``SEGNAS_SERVER`` and
``SEGNAS_TOKEN``. Every failure is a ``ClientError`` with one line that says what to do: the
server's own ``detail`` for a 4xx, the reason a server could not be reached otherwise. The
token never appears in an error or a log line.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from errors import SegnasError

SERVER_ENV = "SEGNAS_SERVER"
TOKEN_ENV = "SEGNAS_TOKEN"
DEFAULT_SERVER = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "cancelled")


class ClientError(SegnasError):
    """The server refused a request, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """One server, one user.

    Args:
        server: the API's base URL (default ``SEGNAS_SERVER``, else http://127.0.0.1:8000).
        token: an API token (default ``SEGNAS_TOKEN``; none for a server with ``--auth off``).
        timeout: seconds per request.
    """

    def __init__(
        self, server: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.server = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            raise ClientError(f"the server {self.server!r} is not an http:// or https:// URL")
        token = token or os.environ.get(TOKEN_ENV) or None
        headers = {"X-Requested-With": "segnas-cli", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token.strip()}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ClientError(
                f"cannot reach the segnas server at {self.server} ({type(e).__name__}: {e}); "
                f"is it running? (--server or {SERVER_ENV})"
            ) from None
        if answer.status_code < 400 or answer.status_code == 304:
            return answer
        try:
            detail = str(answer.json().get("detail", answer.text))
        except ValueError:
            detail = answer.text.strip()[:200] or answer.reason_phrase
        hint = f" (a token: --token or {TOKEN_ENV})" if answer.status_code == 401 else ""
        raise ClientError(
            f"{method} {path}: {answer.status_code} {detail}{hint}", status=answer.status_code
        )

    # the calls

    def me(self) -> dict[str, Any]:
        return self._call("GET", "/me").json()

    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict:
        """Queue a search; retried submissions with the same key return the same search."""
        key = idempotency_key or uuid.uuid4().hex
        return self._call("POST", "/searches", json=spec, headers={"Idempotency-Key": key}).json()

    def searches(self, *, status: str | None = None, limit: int = 100) -> Iterator[dict]:
        """The user's searches, newest first, every page."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": min(limit, 100)}
            if status:
                params["status"] = status
            if after:
                params["after"] = after
            page = self._call("GET", "/searches", params=params).json()
            yield from page["items"]
            after = page["next"]
            if not after:
                return

    def search(self, search_id: str) -> dict[str, Any]:
        return self._call("GET", f"/searches/{search_id}").json()

    def cancel(self, search_id: str) -> dict[str, Any]:
        return self._call("POST", f"/searches/{search_id}/cancel").json()

    def delete(self, search_id: str) -> bool:
        """Remove the search; False while a running search is still being cancelled (409)."""
        try:
            self._call("DELETE", f"/searches/{search_id}")
        except ClientError as e:
            if e.status == 409:
                return False
            raise
        return True

    def result(self, search_id: str) -> dict[str, Any]:
        return self._call("GET", f"/searches/{search_id}/result").json()

    def follow(
        self,
        search_id: str,
        on_update: Callable[[dict[str, Any]], None],
        *,
        interval: float = 1.0,
    ) -> dict[str, Any]:
        """Poll the search (cheaply: ``If-None-Match``) until it ends; ``on_update`` sees
        every new state. Returns the last one."""
        search, etag = self.search(search_id), None
        on_update(search)
        while search["status"] not in FINISHED:
            time.sleep(interval)
            headers = {"If-None-Match": etag} if etag else {}
            answer = self._call("GET", f"/searches/{search_id}", headers=headers)
            if answer.status_code == 304:
                continue
            search, etag = answer.json(), answer.headers.get("ETag")
            on_update(search)
        return search
