"""Per-user limits on submitting: how many searches one user may have queued or running, and
how many they may submit a minute. Either answers 429 with ``Retry-After``.

Admins are the operators and are not limited. The submission rate is counted in Redis (one
key per user and minute, expiring by itself), so that every API process counts the same
submissions; without Redis the rate is not enforced (the active-search limit, counted in the
database, still is).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from errors import ConfigError
from storage.accounts import Principal
from storage.searches import SearchStore

log = logging.getLogger(__name__)

ACTIVE_ENV = "SEGNAS_MAX_ACTIVE_SEARCHES"
RATE_ENV = "SEGNAS_MAX_SUBMITS_PER_MINUTE"
WINDOW_S = 60
ACTIVE_RETRY_S = 60
"""What ``Retry-After`` says when the active-search limit is reached: no search ends on a
schedule, so the client is told to look again in a minute."""


class QuotaExceededError(Exception):
    """Over a per-user limit: ``detail`` for the client, ``retry_after`` in seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


class Quotas(BaseModel):
    """Args:
    max_active: searches one user may have queued, running or cancelling
        (``SEGNAS_MAX_ACTIVE_SEARCHES``).
    max_submits_per_minute: ``POST /searches`` one user may make a minute, replays of an
        Idempotency-Key included (``SEGNAS_MAX_SUBMITS_PER_MINUTE``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_active: int = Field(10, ge=1)
    max_submits_per_minute: int = Field(30, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Quotas:
        """Raises:
        ConfigError: a value that is not a whole number of at least 1, naming its variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for env, field in ((ACTIVE_ENV, "max_active"), (RATE_ENV, "max_submits_per_minute")):
            text = environ.get(env, "").strip()
            if not text:
                continue
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(f"{env}={text!r}: expected a whole number of at least 1")
            values[field] = int(text)
        return cls(**values)


def count_submission(
    client: object, prefix: str, user: Principal, quotas: Quotas, *, now: float | None = None
) -> None:
    """Count one submission of ``user`` in the minute's window of ``now`` (default: the
    clock's; blocking).

    Raises:
        QuotaExceededError: over ``max_submits_per_minute``.
    """
    if user.is_admin:
        return
    import redis

    now = time.time() if now is None else now
    window = int(now // WINDOW_S)
    key = f"{prefix}:rate:submit:{user.user_id}:{window}"
    try:
        pipe = client.pipeline()  # type: ignore[attr-defined]
        pipe.incr(key)
        pipe.expire(key, WINDOW_S * 2)
        count = int(pipe.execute()[0])
    except redis.RedisError as e:
        log.warning("submission rate of %s not counted (Redis: %s)", user.name, e)
        return
    if count > quotas.max_submits_per_minute:
        retry = max(1, math.ceil((window + 1) * WINDOW_S - now))
        raise QuotaExceededError(
            f"more than {quotas.max_submits_per_minute} searches submitted in a minute "
            f"({RATE_ENV}); try again in {retry} s",
            retry,
        )


def check_active(store: SearchStore, user: Principal, quotas: Quotas) -> None:
    """Raises:
    QuotaExceededError: ``user`` has ``max_active`` searches queued or running already."""
    if user.is_admin:
        return
    active = store.count_active(user.user_id)
    if active >= quotas.max_active:
        raise QuotaExceededError(
            f"you have {active} searches queued or running, the most this server allows "
            f"({ACTIVE_ENV}={quotas.max_active}): wait for one to end or cancel one",
            ACTIVE_RETRY_S,
        )
