"""Delivery of search jobs through a Redis stream with a consumer group.

The database row is the truth; the stream only tells a dispatcher that a search waits.
``JobQueue`` is the stream, ``DispatcherHeartbeats`` the dispatchers' expiring heartbeat keys,
``EmbeddedRedis`` the Redis server ``segnas serve`` starts when no ``REDIS_URL`` is set. None
imports torch, Ray or SQL.
"""

from jobqueue.embedded import EmbeddedRedis
from jobqueue.heartbeats import DispatcherHeartbeats, DispatcherSeen
from jobqueue.queue import Job, JobQueue, QueueUnavailableError, redis_client

__all__ = [
    "DispatcherHeartbeats",
    "DispatcherSeen",
    "EmbeddedRedis",
    "Job",
    "JobQueue",
    "QueueUnavailableError",
    "redis_client",
]
