"""Whether a Ray may run without token authentication: only where no one else can reach it.

Kept apart from ``workers.runtime`` so that the dispatcher, which talks to Ray's Jobs API
over HTTP, checks it without importing Ray.
"""

from __future__ import annotations

import os

from errors import ConfigError

UNAUTHENTICATED_RAY_ENV = "SEGNAS_ALLOW_UNAUTHENTICATED_RAY"
"""Set to 1 to run a Ray without token authentication that others could reach (tests do)."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def check_ray_auth(address: str | None) -> None:
    """Refuse ``RAY_AUTH_MODE=disabled`` where another machine can reach the Ray: anyone who
    reaches an unauthenticated Ray runs code on it.

    That is a cluster at a non-loopback ``address`` and every local Ray this process starts:
    Ray 2.60 binds its servers to every interface, whatever node address it is given (see
    docs/security.md). A cluster at a loopback address is its starter's to guard.

    Raises:
        ConfigError: disabled there, without ``SEGNAS_ALLOW_UNAUTHENTICATED_RAY=1``.
    """
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "disabled":
        return
    if os.environ.get(UNAUTHENTICATED_RAY_ENV, "").strip() == "1":
        return
    if address and _ray_host(address) in LOOPBACK_HOSTS:
        return
    where = (
        f"the Ray cluster at {address} is reachable from other machines"
        if address
        else "the local Ray listens on every interface"
    )
    raise ConfigError(
        f"RAY_AUTH_MODE=disabled, and {where}, so anyone there could run code on it: unset "
        f"RAY_AUTH_MODE (Ray's token authentication), or set {UNAUTHENTICATED_RAY_ENV}=1 on a "
        "machine no one else can reach"
    )


def _ray_host(address: str) -> str:
    """The host of a Ray address: ``ray://h:10001``, ``http://h:8265``, ``h:6379``, ``auto``
    (a cluster of this machine, whose servers listen everywhere: not a loopback host)."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):  # [::1]:6379
        return rest.split("]", 1)[0] + "]"
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest
