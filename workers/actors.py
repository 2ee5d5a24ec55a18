"""The Ray actor for supernet replicas (the controller's is ``controller.actor``)."""

from __future__ import annotations

import ray

from workers.replica import SupernetReplica

# Resources (CPUs, GPUs) are set per search with .options(); a replica that dies is not
# restarted by Ray alone: its group is broken, so the driver rebuilds the whole group.
ReplicaActor = ray.remote(max_restarts=0)(SupernetReplica)
