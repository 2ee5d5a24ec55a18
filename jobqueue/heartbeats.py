"""Dispatchers' heartbeats in Redis: a key per dispatcher that expires (arq's habit).

Each turn of a dispatcher's loop sets ``{prefix}:dispatchers:{name}`` with a time to live;
one that stops turning (dead, stuck, looping on errors) lapses by itself. Its age is read from
Redis alone (the TTL it was given, less the TTL left), so no two machines' clocks are compared.
``/healthz`` reads them; it imports neither torch, Ray nor SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobqueue.queue import JobQueue


@dataclass(frozen=True)
class DispatcherSeen:
    """The dispatchers whose heartbeat has not lapsed, and the age of the newest beat."""

    alive: int
    newest_seconds: float | None


class DispatcherHeartbeats:
    """The heartbeat keys next to ``queue``'s stream (same client, same prefix)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.pattern = f"{queue.prefix}:dispatchers:*"

    def key(self, name: str) -> str:
        return f"{self.queue.prefix}:dispatchers:{name}"

    def beat(self, name: str, ttl_seconds: float) -> None:
        """Dispatcher ``name`` is alive; it is taken to be gone after ``ttl_seconds``."""
        ttl_ms = max(1, int(ttl_seconds * 1000))
        self.queue._call(self.queue.client.set, self.key(name), ttl_ms, px=ttl_ms)

    def forget(self, name: str) -> None:
        """Dispatcher ``name`` stopped cleanly: no need to wait for its key to lapse."""
        self.queue._call(self.queue.client.delete, self.key(name))

    def seen(self) -> DispatcherSeen:
        """Raises ``QueueUnavailableError`` when Redis does not answer."""
        return self.queue._call(self._seen)

    def _seen(self) -> DispatcherSeen:
        client = self.queue.client
        keys = list(client.scan_iter(match=self.pattern, count=100))
        if not keys:
            return DispatcherSeen(0, None)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute()
        # A key that lapsed between SCAN and PTTL answers None and -2: not alive.
        ages = [
            (int(ttl) - left) / 1000
            for ttl, left in zip(replies[::2], replies[1::2], strict=True)
            if ttl is not None and left >= 0
        ]
        return DispatcherSeen(len(ages), min(ages) if ages else None)
