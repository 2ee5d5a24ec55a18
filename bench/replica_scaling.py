"""Replica scaling: architectures scored and shared steps trained per second, 1 vs N replicas.

Builds the replica group of a search (``configs/shapes.yaml`` by default) with 1, then 2, ...
replicas of one CPU thread each (or one GPU each with ``--gpus``), and times the two phases:

- scoring: batches of ``--batch`` architectures, each scored on one validation minibatch,
  spread round-robin over the replicas (the controller phase);
- shared training: steps of one global batch cut into shards and all-reduced (the shared
  phase; more replicas make each step's shard smaller, not the step count).

Prints a table and one JSON line.

    python bench/replica_scaling.py [--replicas 1 2] [--config configs/shapes.yaml] [--gpus]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

os.environ.setdefault("SEGNAS_ALLOW_UNAUTHENTICATED_RAY", "1")  # a bench machine

import numpy as np
import ray

from searchspec.spec import load_search_spec
from workers.actors import ReplicaActor

ROOT = Path(__file__).resolve().parents[1]


def measure(spec: dict, replicas: int, *, gpus: bool, batches: int, batch: int, steps: int) -> dict:
    actors = [
        ReplicaActor.options(num_cpus=1, num_gpus=1 if gpus else 0).remote(
            spec, rank=rank, world_size=replicas, threads=1
        )
        for rank in range(replicas)
    ]
    try:
        address, port = ray.get(actors[0].address.remote())
        ray.get([a.join_group.remote(address, port) for a in actors])
        info = ray.get(actors[0].describe.remote())
        layers, choices = spec["space"]["layers"], len(spec["space"]["cells"])
        rng = np.random.default_rng(0)
        score_batch = spec["controller_phase"]["batch_size"]

        def draw(n: int) -> list[tuple[int, ...]]:
            return [tuple(int(c) for c in rng.integers(0, choices, layers)) for _ in range(n)]

        def score_round(k: int) -> None:
            archs = draw(batch)
            refs = []
            for r, actor in enumerate(actors):
                part = [archs[i] for i in range(r, batch, replicas)]
                if part:
                    refs.append(actor.score_minibatch.remote(part, k, score_batch))
            ray.get(refs)

        def train_round(first: int, n: int) -> None:
            archs = draw(n)
            ray.get([a.train_steps.remote(0, first, archs) for a in actors])

        score_round(0)  # warm-up: first calls pay for imports and allocations
        train_round(0, 2)
        started = time.perf_counter()
        for k in range(1, batches + 1):
            score_round(k)
        scoring = time.perf_counter() - started
        steps = min(steps, info["steps_per_epoch"] - 2)
        started = time.perf_counter()
        for first in range(2, 2 + steps, 4):
            train_round(first, min(4, 2 + steps - first))
        training = time.perf_counter() - started
        return {
            "replicas": replicas,
            "device": info["device"],
            "scored_per_s": batches * batch / scoring,
            "shared_steps_per_s": steps / training,
            "global_batch": spec["shared"]["batch_size"],
        }
    finally:
        for actor in actors:
            ray.kill(actor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shapes.yaml")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus", action="store_true", help="one GPU per replica")
    parser.add_argument("--batches", type=int, default=20, help="scored batches per run")
    parser.add_argument("--batch", type=int, default=20, help="architectures per batch")
    parser.add_argument("--steps", type=int, default=24, help="shared steps per run")
    args = parser.parse_args()

    spec = load_search_spec(args.config).model_dump(mode="json")
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        object_store_memory=256 * 1024**2,
        log_to_driver=False,
    )
    rows = [
        measure(spec, n, gpus=args.gpus, batches=args.batches, batch=args.batch, steps=args.steps)
        for n in args.replicas
    ]
    base = rows[0]
    print(f"{'replicas':>8} {'device':>6} {'scored/s':>9} {'x':>5} {'steps/s':>8} {'x':>5}")
    for row in rows:
        row["scoring_speedup"] = row["scored_per_s"] / base["scored_per_s"]
        row["training_speedup"] = row["shared_steps_per_s"] / base["shared_steps_per_s"]
        print(
            f"{row['replicas']:8d} {row['device']:>6} {row['scored_per_s']:9.1f} "
            f"{row['scoring_speedup']:5.2f} {row['shared_steps_per_s']:8.2f} "
            f"{row['training_speedup']:5.2f}"
        )
    print(
        json.dumps(
            {
                "bench": "replica_scaling",
                "config": str(args.config),
                "cpus": os.cpu_count(),
                "rows": [
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                    for row in rows
                ],
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
