"""Delivery of search jobs through a Redis stream with a consumer group.

The database row is the truth; the stream only tells a dispatcher that a search waits.
``JobQueue`` is the stream, ``EmbeddedRedis`` the Redis server ``segnas serve`` starts when no
``REDIS_URL`` is set. Neither imports torch, Ray or SQL.
"""

from jobqueue.embedded import EmbeddedRedis
from jobqueue.queue import Job, JobQueue, QueueUnavailableError, redis_client

__all__ = ["EmbeddedRedis", "Job", "JobQueue", "QueueUnavailableError", "redis_client"]
