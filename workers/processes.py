"""Child processes that must not outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when its parent dies, even by
    SIGKILL; None elsewhere. (Linux ties this to the thread that forks: fork from a thread
    that lives as long as the parent, such as the main thread.)"""
    return _die_with_parent if sys.platform == "linux" else None
