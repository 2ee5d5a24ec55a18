"""Connecting to Ray: a cluster named by ``RAY_ADDRESS``, or a local Ray started on demand."""

from __future__ import annotations

import logging
import os

import ray

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


def ray_is_remote() -> bool:
    """Whether this process is connected to a cluster rather than its own local Ray."""
    return bool(os.environ.get("RAY_ADDRESS")) or _connected_to_cluster


_connected_to_cluster = False


def ensure_ray(address: str | None = None) -> None:
    """Connect to Ray once per process.

    Args:
        address: a cluster (``auto``, ``ray://host:10001``, ``host:6379``); default
            ``RAY_ADDRESS``; with neither, a local Ray for this process alone (no dashboard,
            a small object store: only weights and metrics cross it).
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        global _connected_to_cluster
        ray.init(address=address, logging_level=logging.WARNING)
        _connected_to_cluster = True
        return
    ray.init(
        address="local",
        include_dashboard=False,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
