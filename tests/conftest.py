"""Shared fixtures: every storage test runs once per database backend.

``db_url`` is a fresh, empty database: a SQLite file in the test's ``tmp_path``, or a PostgreSQL
database created for this one test on the server at ``SEGNAS_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and dropped after it, so no test sees another
one's rows. Without a reachable PostgreSQL server the PostgreSQL cases are skipped, except
under CI (``CI`` set), where they fail: CI must run against the real database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from storage.engine import normalise_url
from storage.migrate import upgrade
from storage.searches import SearchStore

# The suite runs its Rays with RAY_AUTH_MODE=disabled (no Ray token files to make or share);
# segnas refuses that where others could reach the Ray unless told the machine is the tests'.
os.environ.setdefault("SEGNAS_ALLOW_UNAUTHENTICATED_RAY", "1")

# The modules that take longest, longest first (measured with --durations on a clean clone).
# `make test` runs one module per worker (--dist loadfile) and hands a free worker the next
# module in collection order (--no-loadscope-reorder), so these start at once and the short
# modules fill in behind them. pytest-xdist's own order (most tests first) put these modules of
# a few long tests at the end, where each ran while the other workers had nothing left to do.
SLOW_MODULES_FIRST = (
    "test_evaluate.py",
    "test_reproduce.py",
    "test_evaluate_size.py",
    "test_web_page.py",
    "test_ray_jobs.py",
    "test_demo.py",
    "test_cli_search.py",
    "test_dispatcher.py",
    "test_fencing.py",
    "test_ray_job_takeover.py",
    "test_memory_kills.py",
    "test_api_contract.py",
    "test_search.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as before


POSTGRES_URL_ENV = "SEGNAS_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def postgres_server_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine | str]:
    """An autocommit engine on the PostgreSQL server (CREATE/DROP DATABASE cannot run in a
    transaction), or, when the server does not answer, why not. Probed once per session so an
    unreachable server costs one connection timeout, not one per test."""
    url = make_url(normalise_url(postgres_server_url()))
    engine = create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        engine.dispose()
        where = make_url(postgres_server_url()).render_as_string(hide_password=True)
        first_line = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        yield f"PostgreSQL at {where} is unreachable ({first_line}); set {POSTGRES_URL_ENV}"
        return
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'segnas.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    if isinstance(admin, str):
        if in_ci():
            pytest.fail(f"{admin}. CI must run against the real database.", pytrace=False)
        pytest.skip(admin)
    name = f"segnas_test_{secrets.token_hex(6)}"
    url = make_url(postgres_server_url()).set(database=name)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        # FORCE: an engine the test forgot to dispose must not keep the database alive.
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def store(db_url: str) -> Iterator[SearchStore]:
    """A ``SearchStore`` on a database migrated to the newest schema."""
    upgrade(db_url)
    search_store = SearchStore(db_url)
    yield search_store
    search_store.close()


# Redis: the machine's server (CI) and the embedded one that `segnas serve` starts.

REDIS_URL_ENV = "SEGNAS_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_BACKENDS = ("server", "embedded")


@pytest.fixture(scope="session")
def redis_server() -> str | None:
    """The URL of the machine's Redis server, or None when it does not answer (probed once)."""
    import redis

    url = os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()
    return url


@pytest.fixture(params=REDIS_BACKENDS)
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A Redis on each backend: the machine's server (under CI it must answer) or an embedded
    server of the test's own. Tests on the shared server keep to their own ``queue_prefix``."""
    if request.param == "server":
        url = request.getfixturevalue("redis_server")
        if url is None:
            reason = (
                f"no Redis server answers at {os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL}"
            )
            if in_ci():
                pytest.fail(f"{reason}. CI must run against the real Redis.", pytrace=False)
            pytest.skip(f"{reason}; set {REDIS_URL_ENV}")
        yield url
        return
    from jobqueue import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server.url


@pytest.fixture
def queue_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own, deleted afterwards."""
    import redis

    prefix = f"segnas-test-{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    except redis.exceptions.RedisError:
        pass
    finally:
        client.close()


@pytest.fixture
def job_queue(redis_url: str, queue_prefix: str) -> Iterator[Any]:
    from jobqueue import JobQueue, redis_client

    queue = JobQueue(redis_client(redis_url), prefix=queue_prefix)
    queue.ensure_group()
    yield queue
    queue.client.close()


CLIENT_HEADERS = {"X-Requested-With": "segnas-tests"}
LOCAL_ADMIN = "admin"  # storage.models.LOCAL_ADMIN


@pytest.fixture
def api(store: SearchStore, job_queue: Any, tmp_path: Path) -> Iterator[Any]:
    """A FastAPI ``TestClient`` on the real app, over ``store`` and ``job_queue``; the data
    roots a spec may name are ``tmp_path/data``."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from storage.accounts import AccountStore

    settings = Settings(
        data_dir=tmp_path, data_roots=(tmp_path / "data",), allowed_hosts=("testserver",)
    )
    # Signed in as the local admin, who owns what tests write to the store directly (tests of
    # accounts make users of their own). X-Requested-With, as the page sends it: tests of the
    # cross-site guard go without it.
    token = AccountStore(store).create_token(LOCAL_ADMIN).token
    headers = {**CLIENT_HEADERS, "Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, store=store, queue=job_queue), headers=headers) as client:
        yield client


# Ray: one small local instance per test module that needs it.


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs and a small object store for the module, unless one runs."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=128 * 1024**2,
            log_to_driver=False,
        )
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_data_dir(tmp_path_factory: pytest.TempPathFactory, local_ray: None) -> Iterator[Path]:
    """A data folder (``SEGNAS_DATA_DIR``) for the module's runs on the local Ray: its
    database, checkpoints and decode cache."""
    folder = tmp_path_factory.mktemp("ray-data")
    os.environ["SEGNAS_DATA_DIR"] = str(folder)
    yield folder
    os.environ.pop("SEGNAS_DATA_DIR", None)
