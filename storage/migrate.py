"""Alembic, driven from code: ``segnas db upgrade`` and the check that the schema is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from errors import ConfigError
from storage.engine import database_url, normalise_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """Alembic's config for ``url`` (default: ``database_url()``), without an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation: escape it (URL-encoded passwords hold %).
    config.set_main_option("sqlalchemy.url", normalise_url(database_url(url)).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Undo migrations down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError(f"{MIGRATIONS_DIR} holds no migration")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current(engine: Engine) -> None:
    """Refuse a database whose schema is not the one this code was written for.

    Raises:
        ConfigError: the database is empty, older or newer; the message says what to run.
    """
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise ConfigError(f"database {where} has no segnas schema: run `segnas db upgrade`")
    raise ConfigError(
        f"database {where} is at schema revision {current}, this segnas needs {head}: "
        "run `segnas db upgrade` (or upgrade segnas if the database is newer)"
    )


def ensure_schema(engine: Engine, *, upgrade_older: bool = False) -> None:
    """Create the schema in an empty database; with ``upgrade_older``, also bring an older one
    to this code's revision (the embedded database is segnas's own). Anything else must be
    current already (``require_current``)."""
    current = current_revision(engine)
    if current is None or (upgrade_older and current != head_revision()):
        upgrade(engine.url.render_as_string(hide_password=False))
    require_current(engine)
