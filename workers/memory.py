"""Deaths by memory: telling them from other failures, and saying what the search asked for.

A search that ran out of memory runs out again when it is retried from its last checkpoint:
same spec, same data, same batch. So neither the driver (a replica killed by Ray's memory
monitor, a CUDA out-of-memory error) nor the dispatcher (a driver killed by SIGKILL, which on
a healthy machine is the kernel's OOM killer) tries again; the search fails with the cost
estimate of ``searchspec.cost``. Imports neither torch nor Ray: the dispatcher uses it too.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from searchspec.cost import describe_request, estimate_cost, human_bytes
from searchspec.spec import SearchSpec

KILLED_STATUSES = (-signal.SIGKILL, 128 + signal.SIGKILL)
"""A process killed by SIGKILL: as ``subprocess`` reports it, and as a shell does."""

_MEMORY_ERRORS = ("OutOfMemoryError", "MemoryError")  # torch's (CUDA), Ray's, Python's
_MEMORY_WORDS = (
    "NODE_OUT_OF_MEMORY",  # Ray: the worker's exit type after its memory monitor killed it
    "running low on memory",
    "due to memory pressure",
    "CUDA out of memory",
)


def killed_by_sigkill(status: int | None) -> bool:
    """Whether a driver's exit status says SIGKILL ended it."""
    return status in KILLED_STATUSES


def is_memory_error(error: BaseException) -> bool:
    """Whether a Ray error (or its cause) says a process ran out of memory. A worker that
    just vanished (a crash, a kill, perhaps the kernel's OOM killer) is not taken for one:
    Ray cannot tell those apart, and a crash is worth a retry."""
    for e in (error, getattr(error, "cause", None)):
        if e is not None and type(e).__name__ in _MEMORY_ERRORS:
            return True
    text = str(error)
    return any(word in text for word in _MEMORY_WORDS)


def memory_failure(spec: SearchSpec | Mapping[str, Any], what: str) -> str:
    """One line for a search that died for memory: ``what`` happened, what it asked for,
    and what to change."""
    if not isinstance(spec, SearchSpec):
        spec = SearchSpec.model_validate(spec)
    cost = estimate_cost(spec)
    checkpoint = human_bytes(cost.checkpoint_bytes / spec.epochs)
    return (
        f"{what}; not retried, it would run out again: it asked for {describe_request(spec)}, "
        f"and its driver holds checkpoints of {checkpoint}: lower shared.batch_size, "
        "controller_phase.batch_size, dataset.size, space.channels or space.layers, or run it "
        "where each replica has more memory"
    )


def driver_killed(spec: SearchSpec | Mapping[str, Any], status: int) -> str:
    """The error of a search whose driver SIGKILL ended (status ``status``)."""
    what = (
        f"the driver was killed by SIGKILL (exit status {status}), on a healthy machine the "
        "kernel's OOM killer"
    )
    return memory_failure(spec, what)
