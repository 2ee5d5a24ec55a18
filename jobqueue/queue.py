"""``JobQueue``: the Redis stream ``segnas:jobs`` and its consumer group ``dispatchers``.

- ``enqueue`` adds an entry for a search unless one is already live (a Redis set of the ids
  with an entry makes that one atomic step), so re-enqueueing orphans is always safe.
- ``enqueue_all`` does the same for the dispatcher's reconciliation, and heals an id that
  the set still holds while its entry is gone from the stream (deleted or trimmed by hand,
  half of an ack that failed over): it gets a new entry instead of waiting forever.
- ``read`` hands new entries to one consumer; they stay pending until ``ack``.
- ``touch`` resets the idle time of a consumer's pending entries: its heartbeat in Redis.
- ``claim_stale`` takes over entries whose consumer stayed silent (``XAUTOCLAIM``).

A Redis that restarted empty (no persistence) has lost the stream, the group and the set
together; the group is created again on the next call, and the dispatcher's reconciliation
re-enqueues every active search from the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError, TimeoutError

from errors import SegnasError

# KEYS: stream, id set; ARGV: search id. Adds the entry only when the id has none live.
_ENQUEUE = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
    return redis.call('XADD', KEYS[1], '*', 'search_id', ARGV[1])
end
return false
"""

# KEYS: stream, id set; ARGV: search ids. As _ENQUEUE for each, except that an id the set
# holds without an entry in the stream gets one (the stream is read once, and only then).
_ENQUEUE_ALL = """
local listed = nil
local added = 0
for _, id in ipairs(ARGV) do
    local missing = redis.call('SADD', KEYS[2], id) == 1
    if not missing then
        if listed == nil then
            listed = {}
            for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
                local fields = entry[2]
                for i = 1, #fields, 2 do
                    if fields[i] == 'search_id' then listed[fields[i + 1]] = true end
                end
            end
        end
        missing = not listed[id]
    end
    if missing then
        redis.call('XADD', KEYS[1], '*', 'search_id', id)
        if listed ~= nil then listed[id] = true end
        added = added + 1
    end
end
return added
"""


class QueueUnavailableError(SegnasError):
    """Redis does not answer."""


@dataclass(frozen=True)
class Job:
    """One stream entry: the id Redis gave it, and the search it names."""

    entry_id: str
    search_id: str


REDIS_PASSWORD_FILE_ENV = "REDIS_PASSWORD_FILE"
"""A file holding the Redis password, for a URL without one (a secret file, as compose's)."""


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) that answers strings.

    A URL without a password takes it from the file ``REDIS_PASSWORD_FILE`` names, if set, so
    that the password need be in no environment or command line.

    Raises:
        SegnasError: not a Redis URL, or the password file cannot be read.
    """
    password_file = os.environ.get(REDIS_PASSWORD_FILE_ENV)
    if password_file and "password" not in kwargs:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as e:
            raise SegnasError(
                f"cannot read the Redis password from {REDIS_PASSWORD_FILE_ENV}="
                f"{password_file!r}: {e.strerror}"
            ) from None
        kwargs["password"] = password
    try:
        client = redis.Redis.from_url(url, decode_responses=True, **kwargs)
    except ValueError as e:
        raise SegnasError(
            f"{_without_password(url)!r} is not a Redis URL ({e}); use e.g. redis://host:6379/0"
        ) from None
    return client


def _without_password(url: str) -> str:
    """``url`` as it may be shown: a password in it replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


class JobQueue:
    """The job stream.

    Args:
        client: a Redis client with ``decode_responses=True``.
        prefix: key prefix (tests give each run its own).
    """

    GROUP = "dispatchers"

    def __init__(self, client: redis.Redis, *, prefix: str = "segnas") -> None:
        self.client = client
        self.prefix = prefix
        self.stream = f"{prefix}:jobs"
        self.members = f"{prefix}:jobs:ids"
        self._enqueue = client.register_script(_ENQUEUE)
        self._enqueue_all = client.register_script(_ENQUEUE_ALL)

    def ping(self) -> None:
        """Raises ``QueueUnavailableError`` when Redis does not answer."""
        self._call(self.client.ping)

    def ensure_group(self) -> None:
        """Create the stream and the consumer group if they do not exist (first start, or a
        Redis that restarted empty)."""
        try:
            self._call(self.client.xgroup_create, self.stream, self.GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def enqueue(self, search_id: str) -> bool:
        """Add an entry for ``search_id``; False when it has one already."""
        added = self._grouped(self._enqueue, keys=[self.stream, self.members], args=[search_id])
        return added is not None

    def enqueue_all(self, search_ids: list[str]) -> int:
        """``enqueue`` each of ``search_ids``, healing ids whose entry is lost; returns how
        many got an entry. One atomic step; it reads the whole stream (the active searches'
        entries) when some id has an entry already."""
        ids = list(dict.fromkeys(search_ids))
        if not ids:
            return 0
        return int(self._grouped(self._enqueue_all, keys=[self.stream, self.members], args=ids))

    def read(self, consumer: str, count: int, *, block_ms: int = 1000) -> list[Job]:
        """Up to ``count`` new entries for ``consumer``, waiting at most ``block_ms``."""
        if count <= 0:
            return []
        reply = self._grouped(
            self.client.xreadgroup,
            self.GROUP,
            consumer,
            {self.stream: ">"},
            count=count,
            block=block_ms,
        )
        return [job for _stream, entries in reply or [] for job in _jobs(entries)]

    def claim_stale(self, consumer: str, *, min_idle_ms: int, count: int) -> list[Job]:
        """Take over up to ``count`` entries pending longer than ``min_idle_ms`` (their
        consumer died or lost its connection)."""
        if count <= 0:
            return []
        reply = self._grouped(
            self.client.xautoclaim,
            self.stream,
            self.GROUP,
            consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        return list(_jobs(reply[1]))

    def touch(self, consumer: str, jobs: list[Job]) -> None:
        """Reset the idle time of ``jobs`` (this consumer's heartbeat in Redis)."""
        if jobs:
            ids = [job.entry_id for job in jobs]
            self._grouped(
                self.client.xclaim, self.stream, self.GROUP, consumer, 0, ids, justid=True
            )

    def ack(self, job: Job) -> None:
        """The search behind ``job`` needs no more delivery: drop the entry."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, self.GROUP, job.entry_id)
        pipe.xdel(self.stream, job.entry_id)
        pipe.srem(self.members, job.search_id)
        self._call(pipe.execute)

    def pending(self) -> int:
        """Entries delivered and not yet acknowledged."""
        info = self._grouped(self.client.xpending, self.stream, self.GROUP)
        return int(info["pending"])

    def waiting(self) -> list[str]:
        """Ids of the searches with a live entry (delivered or not)."""
        return sorted(self._call(self.client.smembers, self.members))

    def _grouped(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn``, after creating the group again if Redis lost it (``NOGROUP``)."""
        try:
            return self._call(fn, *args, **kwargs)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
        self.ensure_group()
        return self._call(fn, *args, **kwargs)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RedisConnectionError, TimeoutError) as e:
            raise QueueUnavailableError(f"Redis does not answer: {e}") from e


def _jobs(entries: list[Any]) -> list[Job]:
    # XAUTOCLAIM reports entries deleted meanwhile as (id, None).
    return [
        Job(entry_id, fields["search_id"])
        for entry_id, fields in entries
        if fields and "search_id" in fields
    ]
