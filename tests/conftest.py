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

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from storage.engine import normalise_url
from storage.migrate import upgrade
from storage.searches import SearchStore

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
