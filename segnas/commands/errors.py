"""Turns errors a user can cause into the one line the CLI prints."""

from __future__ import annotations

from pydantic import ValidationError

from errors import SearchFaultError, SegnasError, validation_problems


def format_validation_error(error: ValidationError) -> str:
    """``invalid Model: field: problem; ...`` for a pydantic error, without pydantic's URLs."""
    return f"invalid {error.title}: {validation_problems(error)}"


def user_error_message(error: BaseException) -> str | None:
    """The message to print for a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(error, SegnasError | SearchFaultError):
        return str(error)
    if isinstance(error, ValidationError):
        return format_validation_error(error)
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    return _database_error_message(error)


def _database_error_message(error: BaseException) -> str | None:
    """A database that cannot be reached, or a migration revision that does not exist."""
    from sqlalchemy.exc import OperationalError

    if isinstance(error, OperationalError):
        detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        return f"cannot use the database: {detail}"
    module = type(error).__module__
    if module.startswith("alembic") and type(error).__name__ == "CommandError":
        return f"migration: {error}"
    return None
