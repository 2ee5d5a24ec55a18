"""Connecting to Ray: a cluster named by ``RAY_ADDRESS``, or a local Ray started on demand."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from ray._private import ray_constants

from workers.ray_auth import check_ray_auth

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


def ray_is_remote() -> bool:
    """Whether this process is connected to a cluster rather than its own local Ray."""
    return bool(os.environ.get("RAY_ADDRESS")) or _connected_to_cluster


_connected_to_cluster = False


def ensure_ray(address: str | None = None) -> None:
    """Connect to Ray once per process; SIGTERM stays this process's (see ``_init``).

    Args:
        address: a cluster (``auto``, ``ray://host:10001``, ``host:6379``); default
            ``RAY_ADDRESS``; with neither, a local Ray for this process alone (no dashboard,
            a small object store: only weights and metrics cross it).

    Raises:
        ConfigError: Ray's authentication is off where others can reach it (``check_ray_auth``).
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    check_ray_auth(address)
    if address:
        global _connected_to_cluster
        _init(address=address, logging_level=logging.WARNING)
        _connected_to_cluster = True
        return
    _init(
        address="local",
        include_dashboard=False,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )


def _init(**kwargs: Any) -> None:
    """``ray.init``, after which SIGTERM is handled as before it, whenever it comes.

    ``ray.init`` does three things to SIGTERM. Its core worker (C++) installs abseil's
    failure-signal handler, which takes SIGTERM for a crash: it prints ``*** SIGTERM received
    at time=... ***``, arms a 3-second alarm that aborts the process (SIGABRT) and only then
    calls the Python handler, so whatever that starts (a search marked cancelled, actors and
    the local Ray shut down) is killed 3 s later, under load before it ends. So the crash
    handler is switched off for this process before its core worker exists (Ray's switch,
    ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``, read then; Ray's workers keep theirs; this process
    keeps the ``faulthandler`` tracebacks ray.init enables). ``ray.init`` also replaces the
    Python handler with its own (``sys.exit``): the caller's, if it had one, is put back
    afterwards (which would also take SIGTERM back from abseil, should a Ray version ignore
    the switch). And a SIGTERM during ``ray.init`` goes to Ray's handler, whose SystemExit is
    lost when it runs inside an at-fork hook of a process ray.init starts: a wakeup fd records
    the signal, and one whose exception did not end ``ray.init`` is handed to the handler put
    back.
    """
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    if threading.current_thread() is not threading.main_thread():
        ray.init(**kwargs)  # off the main thread Ray leaves the Python handler alone
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        with _signals_seen() as seen:
            ray.init(**kwargs)
    finally:
        handler = before if callable(before) else signal.getsignal(signal.SIGTERM)
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    if signal.SIGTERM in seen and callable(handler):
        handler(signal.SIGTERM, None)


@contextmanager
def _signals_seen() -> Iterator[set[int]]:
    """The set of signals that reached a Python handler inside the block (filled in at its
    end; main thread only), whether or not the handler's exception survived: Python writes
    each one to the wakeup fd before it runs the handler."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    seen: set[int] = set()
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield seen
    finally:
        current = signal.set_wakeup_fd(previous)
        if current != writer.fileno():
            signal.set_wakeup_fd(current)  # someone set theirs inside the block: keep it
        with contextlib.suppress(BlockingIOError):
            while chunk := reader.recv(4096):
                seen.update(chunk)
        reader.close()
        writer.close()
