"""Errors a user can cause in the search engine core.

Every error that bad input can trigger is a ``SegnasError``: the CLI prints its message as one
line and exits non-zero, and the service maps it to a 4xx. Anything else is a bug.
"""


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
