"""The service's settings, read once from the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from searchspec.budget import Budget
from service.quotas import Quotas
from storage.engine import DATABASE_URL_ENV, data_dir

REDIS_URL_ENV = "REDIS_URL"
DATA_ROOTS_ENV = "SEGNAS_DATA_ROOTS"
QUEUE_PREFIX_ENV = "SEGNAS_QUEUE_PREFIX"
DB_POOL_SIZE_ENV = "SEGNAS_DB_POOL_SIZE"
ALLOWED_HOSTS_ENV = "SEGNAS_ALLOWED_HOSTS"
EXPECT_DISPATCHERS_ENV = "SEGNAS_EXPECT_DISPATCHERS"
AUTH_ENV = "SEGNAS_AUTH"
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


class Settings(BaseModel):
    """Where the service keeps its state, and its limits.

    Args:
        database_url: ``DATABASE_URL``; None: SQLite in the data folder.
        redis_url: ``REDIS_URL``; None: ``segnas serve`` starts the embedded Redis.
        data_dir: ``SEGNAS_DATA_DIR`` (default ``.segnas``).
        data_roots: folders a spec's ``dataset.root`` may lie in (``SEGNAS_DATA_ROOTS``,
            ``:``-separated; default the data folder).
        queue_prefix: Redis key prefix of the job stream (``SEGNAS_QUEUE_PREFIX``).
        max_body_bytes: larger request bodies are refused with 413.
        db_pool_size: database connections of one API process, and as many threads for the
            handlers' blocking calls (``SEGNAS_DB_POOL_SIZE``, ``service.blocking``): a
            thread never waits for a connection, and none is opened and closed under load.
        allowed_hosts: host names a request's ``Host`` may name (``SEGNAS_ALLOWED_HOSTS``,
            comma-separated; ``*`` for any; default loopback only): ``service.guards``.
        expect_dispatchers: searches are to be run by dispatchers on this queue
            (``SEGNAS_EXPECT_DISPATCHERS=1``; ``segnas serve`` with dispatchers sets it):
            ``/healthz`` is degraded while none of them has a live heartbeat.
        budget: what one search may cost (``SEGNAS_MAX_*``): ``searchspec.budget``.
        quotas: what one user may have queued and submit a minute: ``service.quotas``.
        auth: ``required`` (bearer tokens; ``SEGNAS_AUTH``) or ``off`` (every request is the
            local admin: for a server on loopback only): ``service.auth``.
    """

    model_config = ConfigDict(frozen=True)

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".segnas")
    data_roots: tuple[Path, ...] = ()
    queue_prefix: str = "segnas"
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    db_pool_size: int = Field(10, ge=1, le=200)
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    expect_dispatchers: bool = False
    budget: Budget = Budget()
    quotas: Quotas = Quotas()
    auth: Literal["required", "off"] = "required"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        folder = data_dir()
        roots = os.environ.get(DATA_ROOTS_ENV, "")
        values: dict[str, object] = {
            "database_url": os.environ.get(DATABASE_URL_ENV) or None,
            "redis_url": os.environ.get(REDIS_URL_ENV) or None,
            "data_dir": folder,
            "data_roots": tuple(Path(p) for p in roots.split(os.pathsep) if p) or (folder,),
            "queue_prefix": os.environ.get(QUEUE_PREFIX_ENV) or "segnas",
            "budget": Budget.from_env(),  # a bad SEGNAS_MAX_* fails start-up, naming it
            "quotas": Quotas.from_env(),
        }
        if os.environ.get(DB_POOL_SIZE_ENV):
            values["db_pool_size"] = os.environ[DB_POOL_SIZE_ENV]
        hosts = [h.strip() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]
        if hosts:
            values["allowed_hosts"] = tuple(hosts)
        if os.environ.get(EXPECT_DISPATCHERS_ENV):
            values["expect_dispatchers"] = os.environ[EXPECT_DISPATCHERS_ENV]
        if os.environ.get(AUTH_ENV):
            values["auth"] = os.environ[AUTH_ENV]
        values.update(overrides)
        return cls.model_validate(values)

    def allows_root(self, root: Path) -> bool:
        """Whether ``root`` lies inside one of ``data_roots`` (links resolved first). A path
        that cannot be resolved (``~nosuchuser/x``, a loop of links) lies in none of them."""
        try:
            target = root.expanduser().resolve()
        except (RuntimeError, OSError, ValueError):
            return False
        return any(target.is_relative_to(r.expanduser().resolve()) for r in self.data_roots)
