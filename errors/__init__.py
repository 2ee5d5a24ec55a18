"""The project's errors, at the bottom of the house: every package may import them, they
import nothing of the project.

Every error that bad input can trigger is a ``SegnasError``: the CLI prints its message as one
line and exits non-zero, and the service maps it to a 4xx. ``SearchFaultError`` is the one
other kind a caller should expect: the machinery failed, not the input. Anything else is a bug.
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError


class SegnasError(Exception):
    """Base class for errors caused by user input (configs, architectures, data)."""


class ArchitectureError(SegnasError, ValueError):
    """An architecture string or list does not fit the search space."""


class DatasetError(SegnasError):
    """A data set is missing, malformed, or its spec is inconsistent."""


class ConfigError(SegnasError, ValueError):
    """A configuration value is unknown or out of range."""


class TrainingDivergedError(SegnasError):
    """The loss became NaN or infinite: the learning rate is too high for this setting."""


class SearchFaultError(RuntimeError):
    """The machinery failed (actors kept dying, one could not start): not the user's input.
    The CLI prints it as one line and exits 1; a service marks the search failed."""


def validation_problems(
    exc: ValidationError, *, drop: Collection[str] = (), unknown_hint: str = ""
) -> str:
    """Pydantic's errors as one line: ``field: problem; field: problem``.

    Args:
        exc: the validation error.
        drop: location parts to leave out: the tags a discriminated union puts in locations
            (``dataset.digits.images`` reads ``dataset.images``).
        unknown_hint: added after ``unknown field 'x'``, e.g. the fields that do exist.
    """
    problems = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"] if str(part) not in drop)
        prefix = f"{field}: " if field else ""  # no field: a check across fields
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown field {field!r}{unknown_hint}")
        elif err["type"] == "missing":
            problems.append(f"{prefix}required field is missing")
        elif err["type"] == "value_error":
            problems.append(prefix + err["msg"].removeprefix("Value error, "))
        else:
            problems.append(f"{prefix}{err['msg']} (got {err.get('input')!r})")
    return "; ".join(problems)
