"""A pure ASGI middleware that guards request bodies before the app reads them.

A body over the size limit gets 413: ``Content-Length`` is checked up front and the bytes of
a chunked body are counted as they arrive, so an oversized request is never held in memory.
A body that is not JSON gets 415.
"""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTooLargeError(Exception):
    pass


class BodyGuard:
    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send, 413, f"request body over {self.max_bytes} bytes")
            return
        has_body = length not in (None, b"0") or b"transfer-encoding" in headers
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if has_body and media_type != b"application/json":
            await self._refuse(send, 415, "send the body as JSON (Content-Type: application/json)")
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send, 413, f"request body over {self.max_bytes} bytes")

    async def _refuse(self, send: Any, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
