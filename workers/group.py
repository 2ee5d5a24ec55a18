"""The actors of one search: the controller, the replicas and the resources reserved for them.

``ActorGroup.start`` places and connects them (the replicas join one ``torch.distributed``
group); ``gather`` waits for actor calls and turns a failure anywhere among them into what the
driver does next: rebuild the group from a checkpoint (``ReplicaLostError``), fail the search
(an actor that cannot start, a replica out of memory), or the user's own mistake in its words.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import ray
import torch.distributed as dist
from ray.exceptions import RayActorError, RayTaskError

from controller.actor import ControllerActor
from controller.batcher import RewardError
from errors import ConfigError, SearchFaultError, SegnasError
from searchspec.spec import SearchSpec
from supernet.profile import ChildSizes
from workers.actors import ReplicaActor
from workers.memory import is_memory_error, memory_failure
from workers.placement import in_bundle, release, reserve_replicas
from workers.runtime import ray_is_remote

log = logging.getLogger(__name__)

SETTLE_SECONDS = 30.0  # after one replica fails, how long the others get to fail too


class ReplicaLostError(SegnasError):
    """A replica (or the controller) died: the group must be rebuilt from a checkpoint."""


class ActorGroup:
    """A running group: ``replicas`` (rank order), ``controller``, and what replica 0 said of
    the data (``info``: steps per epoch, classes, input channels) and of its sizes (``sizes``:
    every child architecture's parameters and FLOPs)."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.replicas: list[Any] = []
        self.controller: Any = None
        self.info: dict[str, Any] = {}
        self.sizes: ChildSizes | None = None
        self._placement: Any = None  # the replicas' reserved resources (workers.placement)
        self._incarnation: int | None = None

    @classmethod
    def start(cls, spec: SearchSpec, controller_state: str) -> ActorGroup:
        """Reserve, start and connect the actors; ``controller_state`` is the file the
        controller keeps its restart state in. A group that fails to start is torn down."""
        group = cls(spec)
        try:
            group._start(controller_state)
        except BaseException:
            group.teardown()
            raise
        return group

    def _start(self, controller_state: str) -> None:
        spec, res = self.spec, self.spec.resources
        check_resources(spec)
        self._placement = reserve_replicas(res)
        self.controller = ControllerActor.remote(
            spec.space.layers, len(spec.space.cells), spec.controller_config(), controller_state
        )
        spec_dict = spec.model_dump(mode="json")
        threads = max(1, math.floor(res.cpus_per_replica))
        self.replicas = [
            ReplicaActor.options(
                num_cpus=res.cpus_per_replica,
                num_gpus=res.gpus_per_replica,
                scheduling_strategy=in_bundle(self._placement, rank),
            ).remote(spec_dict, rank=rank, world_size=res.replicas, threads=threads)
            for rank in range(res.replicas)
        ]
        address, port = self.gather([self.replicas[0].address.remote()])[0]
        self.gather([r.join_group.remote(address, port) for r in self.replicas])
        self.info = self.gather([self.replicas[0].describe.remote()])[0]
        self.sizes = ChildSizes(
            spec.space.build(
                num_classes=self.info["num_classes"], in_channels=self.info["in_channels"]
            ),
            input_size=spec.dataset.size,
        )
        self._incarnation = self.gather([self.controller.incarnation.remote()])[0]

    def gather(self, refs: list[Any]) -> list[Any]:
        """``ray.get`` of calls on this group's actors, failures classified (``gather``)."""
        return gather(refs, self.spec)

    def check_controller(self) -> None:
        """A controller that Ray restarted has reloaded its last update but lost what came
        after (an open batch, draws since): treat it like a lost replica."""
        if self.gather([self.controller.incarnation.remote()])[0] != self._incarnation:
            raise ReplicaLostError("the controller actor was restarted")

    def teardown(self) -> None:
        """Kill every actor (no restarts) and give the reserved resources back."""
        for actor in [*self.replicas, self.controller]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self.replicas, self.controller = [], None
        release(self._placement)
        self._placement = None


def check_resources(spec: SearchSpec) -> None:
    """Refuse a group this Ray can never place (a GPU search on a CPU machine would wait
    forever). A cluster may grow (autoscaling), so only a local Ray is held to its size."""
    res = spec.resources
    if ray_is_remote():
        return
    have = ray.cluster_resources()
    for name, each, hint in (
        ("GPU", res.gpus_per_replica, "set resources.gpus_per_replica=0 to use the CPU"),
        ("CPU", res.cpus_per_replica, "lower resources.cpus_per_replica or --replicas"),
    ):
        need = each * res.replicas
        if need > have.get(name, 0):
            raise ConfigError(
                f"the search asks for {need:g} {name}s ({res.replicas} replicas x {each:g}), "
                f"this machine has {have.get(name, 0):g}: {hint}"
            )


def gather(refs: list[Any], spec: SearchSpec) -> list[Any]:
    """``ray.get`` that turns a dead actor anywhere in ``refs`` into ``ReplicaLostError``.

    When one replica dies, its peers fail too, inside a collective; which error arrives first
    is a race. So on the first error, the rest get a moment to settle, and a dead actor among
    them (not the peers' follow-up errors) decides what happened. ``spec`` is what a memory
    failure's message says the search asked for.
    """
    try:
        return ray.get(refs)
    except (RayActorError, RayTaskError) as first:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=SETTLE_SECONDS)
        errors: list[BaseException] = [first]
        for ref in ready:
            try:
                ray.get(ref)
            except (RayActorError, RayTaskError) as e:
                errors.append(e)
        for e in errors:
            if is_memory_error(e):  # it would run out again: not a loss to recover from
                what = f"a replica ran out of memory ({cause_line(e)[:300]})"
                raise SearchFaultError(memory_failure(spec, what)) from None
        for e in errors:
            if isinstance(e, RayActorError) and e.actor_init_failed:
                # Users' mistakes are raised by the replica's first call, not its constructor:
                # an actor that cannot start at all will not start next time either.
                raise SearchFaultError(f"an actor could not start: {cause_line(e)}") from None
        for e in errors:
            if isinstance(e, RayActorError):
                raise ReplicaLostError(f"an actor died: {cause_line(e)}") from e
        cause = getattr(first, "cause", None)
        if isinstance(cause, RewardError):
            # Only a restarted controller forgets the batch it handed out.
            raise ReplicaLostError(f"the controller lost its batch: {cause}") from None
        if _is_collective_failure(cause):
            # A peer's node may take longer than the settle time to be declared dead.
            raise ReplicaLostError(f"a collective failed: {cause_line(first)}") from None
        if isinstance(cause, SegnasError):
            raise cause from None  # the user's mistake, in its own words
        raise first.as_instanceof_cause() from None


def _is_collective_failure(error: BaseException | None) -> bool:
    """An error raised inside a torch.distributed collective because a peer went away."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "connection closed", "connection reset")
    )


def cause_line(error: BaseException) -> str:
    """The last line of a Ray error's text: the original ``Type: message``."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
