"""Database URLs, engines and the one session scope every write goes through."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from errors import ConfigError

DATA_DIR_ENV = "SEGNAS_DATA_DIR"
DATABASE_URL_ENV = "DATABASE_URL"


def data_dir() -> Path:
    """The folder for the embedded database, checkpoints and other files (``SEGNAS_DATA_DIR``,
    default ``.segnas`` in the working directory)."""
    return Path(os.environ.get(DATA_DIR_ENV) or ".segnas")


def database_url(url: str | None = None) -> str:
    """``url``, else ``DATABASE_URL``, else SQLite in the data folder."""
    url = url or os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return f"sqlite:///{(data_dir() / 'segnas.db').resolve()}"


def normalise_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg 3 (the driver segnas installs).

    Raises:
        ConfigError: not a database URL SQLAlchemy understands.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{url!r} is not a database URL; use e.g. sqlite:///path/segnas.db or "
            "postgresql://user@host/db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str | None = None, *, pre_ping: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``database_url(url)``; SQLite files get their folder, foreign keys, WAL
    and a busy timeout (several processes write to one file). ``kwargs`` go to
    ``create_engine``.

    Args:
        pre_ping: test a server connection with a round trip at every checkout, so that one
            the server dropped is replaced before use. The API turns it off: its reads retry
            once on a dropped connection instead (``SearchStore``), and a poll costs one round
            trip rather than two.
    """
    url = normalise_url(database_url(url))
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=pre_ping, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
