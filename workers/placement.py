"""Placing a search's replicas on the cluster, within a time limit.

The replicas' resources are reserved together, as one Ray placement group of one bundle per
replica, before any replica starts. Ray waits for resources without end: a group the cluster
cannot hold (more GPUs than it has or will have, a cluster busy with other searches) would
keep its driver, and its dispatcher's slot, forever. So the reservation waits at most
``SEGNAS_PLACEMENT_TIMEOUT_S`` seconds, then the search fails in one line that says what it
asked for and what the cluster has.

The limit is the operator's, read from the driver's environment, not a field of the spec:
how long nodes take to come up (an autoscaler starting a GPU node takes minutes) is a fact of
the cluster, which the person who writes a spec does not know.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    placement_group,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from errors import ConfigError, SearchFaultError
from searchspec.spec import ResourcesSpec

log = logging.getLogger(__name__)

PLACEMENT_TIMEOUT_ENV = "SEGNAS_PLACEMENT_TIMEOUT_S"
DEFAULT_PLACEMENT_TIMEOUT_S = 600.0
"""Ten minutes: a cloud GPU node takes about three to eight to start and join the cluster."""


class PlacementTimeoutError(SearchFaultError):
    """The cluster did not find room for the search's replicas in time."""


def placement_timeout() -> float:
    """Seconds to wait for the replicas' resources: ``SEGNAS_PLACEMENT_TIMEOUT_S``, default
    ``DEFAULT_PLACEMENT_TIMEOUT_S``.

    Raises:
        ConfigError: the variable is set to something other than a positive number.
    """
    text = os.environ.get(PLACEMENT_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_PLACEMENT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{PLACEMENT_TIMEOUT_ENV}={text!r}: expected a positive number (seconds)")
    return value


def reserve_replicas(
    resources: ResourcesSpec, timeout_s: float | None = None
) -> PlacementGroup | None:
    """Reserve one bundle of ``cpus_per_replica`` CPUs (and ``gpus_per_replica`` GPUs) per
    replica, packed on as few nodes as fit, waiting at most ``timeout_s`` seconds (default
    ``placement_timeout()``).

    Returns None, reserving nothing, when the driver already runs inside a placement group (a
    Ray Tune trial's, as ``segnas reproduce`` starts it): that group holds the replicas'
    resources, and a second reservation would wait for what its own parent holds.

    Raises:
        PlacementTimeoutError: not reserved in time; nothing stays reserved.
    """
    if get_current_placement_group() is not None:
        return None
    timeout_s = placement_timeout() if timeout_s is None else timeout_s
    bundle = {"CPU": resources.cpus_per_replica}
    if resources.gpus_per_replica:
        bundle["GPU"] = resources.gpus_per_replica
    group = placement_group([dict(bundle) for _ in range(resources.replicas)], strategy="PACK")
    if group.wait(timeout_seconds=timeout_s):
        return group
    # What the cluster has is read before the reservation goes: a pending one holds nothing.
    have, free = ray.cluster_resources(), ray.available_resources()
    remove_placement_group(group)
    raise PlacementTimeoutError(_unplaced(resources, timeout_s, have, free))


def in_bundle(group: PlacementGroup | None, rank: int) -> PlacementGroupSchedulingStrategy | None:
    """The scheduling strategy that puts replica ``rank`` in its own bundle of ``group``; with
    no group of its own (see ``reserve_replicas``), Ray's default: the enclosing group's."""
    if group is None:
        return None
    return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank)


def release(group: PlacementGroup | None) -> None:
    """Give the reservation back (its actors, if any still run, end with it)."""
    if group is None:
        return
    try:
        remove_placement_group(group)
    except Exception as e:  # Ray already gone (shut down, cluster lost): nothing is held
        log.warning("could not remove placement group %s: %s", group.id.hex(), e)


def _unplaced(
    resources: ResourcesSpec, timeout_s: float, have: dict[str, Any], free: dict[str, Any]
) -> str:
    r = resources
    each = [_count(r.cpus_per_replica, "CPU")]
    total = [_count(r.replicas * r.cpus_per_replica, "CPU")]
    if r.gpus_per_replica:
        each.append(_count(r.gpus_per_replica, "GPU"))
        total.append(_count(r.replicas * r.gpus_per_replica, "GPU"))
    cluster = ", ".join(
        f"{_count(have.get(kind, 0), kind)} ({free.get(kind, 0):g} free)" for kind in ("CPU", "GPU")
    )
    return (
        f"could not place the search's replicas within {timeout_s:g} s "
        f"({PLACEMENT_TIMEOUT_ENV}): it asks for {_count(r.replicas, 'replica')} x "
        f"({', '.join(each)}) = {', '.join(total)}; the cluster has {cluster}: lower "
        "resources.replicas, resources.cpus_per_replica or resources.gpus_per_replica, or wait "
        "for room"
    )


def _count(n: float, noun: str) -> str:
    return f"{n:g} {noun}" + ("" if n == 1 else "s")
