"""Where an epoch of the paper's search goes: every part of the loop timed, the epoch projected.

``configs/voc.yaml`` (150 epochs; 4 replicas sharing a batch of 32; 50 controller steps of 20
samples, each step scored on one validation minibatch of 32) on a generated VOC-layout folder
(``bench/data_pipeline.py``'s generator, 500x375 images, the paper's 7:2:1 split), on this
machine: one search replica driven in this process (``workers.replica.SupernetReplica``, the
class the Ray actors run), timed part by part:

- ``data``: a replica's share of a shared batch, and a scoring minibatch: today's per-item path
  (``split[i]`` stacked) against the ``DataFeed`` (section 1 of the paper-scale issue);
- ``forward/backward``: one shared step of a sampled child at the replica's share of the batch;
- ``all-reduce``: the gradients of a child, averaged over a gloo group of ``--replicas``
  processes on this machine (0 with one replica);
- ``scoring``: the forward passes of a controller step's 20 samples on its minibatch;
- ``controller``: sampling 20 architectures and a REINFORCE update (``ReinforceTrainer``);
- ``database``: inserting a step's 20 sample rows (``SearchStore.add_samples``, SQLite);
- ``checkpoint``: writing the replica's and the controller's state once an epoch.

Each part's time a call, times its calls an epoch (the paper's counts, at the full 2,913
images), gives the epoch and the 150-epoch search, before and after the DataFeed.

    python bench/search_profile.py                      # CPU, 400 generated images
    python bench/search_profile.py --device cuda --images 2913 --repeats 5

The last line is one JSON object: ``parts`` (ms a call, calls an epoch), ``epoch_s``
(``before`` / ``after``) and ``search_hours``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline import make_voc

from controller.reinforce import ReinforceTrainer
from searchspec.spec import load_search_spec
from storage.migrate import upgrade
from storage.searches import SampleRecord, SearchStore

ROOT = Path(__file__).resolve().parents[1]
PAPER_IMAGES = 2913


def timed(run: Callable[[], Any], repeats: int, *, warm: bool = True) -> float:
    """Median milliseconds of ``run`` over ``repeats`` calls (after one to warm up, unless
    ``warm`` is False: the paper's scoring step takes minutes on a CPU)."""
    if warm:
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _all_reduce_worker(
    rank: int, world: int, numel: int, repeats: int, port: int, out: Any, cuda: bool
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # As the replicas do: nccl between GPUs, gloo between CPU processes.
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    grads = torch.randn(numel, device=f"cuda:{rank}" if cuda else "cpu")
    times = []
    for k in range(repeats + 1):
        start = time.perf_counter()
        dist.all_reduce(grads)
        grads /= world
        if cuda:
            torch.cuda.synchronize(rank)
        if k:
            times.append(time.perf_counter() - start)
    if rank == 0:
        out.put(1000 * statistics.median(times))
    dist.destroy_process_group()


def all_reduce_ms(world: int, numel: int, repeats: int, *, cuda: bool) -> float:
    """Median milliseconds of averaging ``numel`` float32 gradients over ``world`` processes
    (on ``world`` GPUs with ``cuda``: fewer GPUs than that, or one process, is 0)."""
    if world < 2 or (cuda and torch.cuda.device_count() < world):
        return 0.0
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = 29_500 + os.getpid() % 1000
    mp.start_processes(
        _all_reduce_worker, args=(world, numel, repeats, port, out, cuda), nprocs=world,
        join=True,
        start_method="spawn",
    )  # fmt: skip
    return float(out.get())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="generated samples (400)")
    parser.add_argument(
        "--replicas", type=int, default=2, help="all-reduce group size (2; GPUs with cuda)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per part (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SEGNAS_DATA_DIR"] = str(tmp / "data")
        from workers.replica import SupernetReplica  # reads the data folder's cache

        make_voc(tmp / "voc", args.images)
        paper = load_search_spec(ROOT / "configs" / "voc.yaml")
        share = paper.shared.batch_size // paper.resources.replicas
        # One replica here, with one paper replica's share of the batch.
        overrides: dict[str, Any] = {
            "dataset.root": str(tmp / "voc"), "resources.replicas": 1, "shared.batch_size": share,
        }  # fmt: skip
        if args.device == "cpu":
            overrides["resources.gpus_per_replica"] = 0
        spec = load_search_spec(ROOT / "configs" / "voc.yaml", overrides)
        start = time.perf_counter()
        replica = SupernetReplica(
            spec.model_dump(mode="json"), rank=0, world_size=1, threads=args.threads
        )
        replica._check_ready()
        build_s = time.perf_counter() - start
        feed, data = replica.feed, replica.data
        trainer = ReinforceTrainer(
            num_layers=spec.space.layers,
            num_choices=len(spec.space.cells),
            config=spec.controller_config(),
        )
        samples = paper.controller.batch_size
        minibatch = paper.controller_phase.batch_size
        archs = trainer.sample(samples)
        ids = list(range(share))
        val_ids = list(range(min(minibatch, len(data.val))))
        device = replica.device

        def stack(split: Any, items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = [split[i] for i in items]
            return (
                torch.stack([p[0] for p in pairs]).to(device),
                torch.stack([p[1] for p in pairs]).to(device),
            )

        steps = iter(range(10**9))
        parts: dict[str, dict[str, float]] = {}
        shared_steps = (PAPER_IMAGES * 7 // 10) // paper.shared.batch_size
        controller_steps = paper.controller_phase.steps
        parts["data: training share, today"] = {
            "ms": timed(lambda: stack(data.train, ids), args.repeats), "calls": shared_steps,
        }  # fmt: skip
        parts["data: training share, DataFeed"] = {
            "ms": timed(lambda: feed.train_batch(ids, (0, 0, next(steps), 0)), args.repeats),
            "calls": shared_steps,
        }
        parts["data: scoring minibatch, today"] = {
            "ms": timed(lambda: stack(data.val, val_ids), args.repeats), "calls": controller_steps,
        }  # fmt: skip
        parts["data: scoring minibatch, DataFeed"] = {
            "ms": timed(lambda: feed.val_batch(val_ids), args.repeats), "calls": controller_steps,
        }  # fmt: skip

        # A shared step through the replica (its data included), less the data it read.
        arch = list(archs[0])
        step_ms = timed(
            lambda: replica.train_steps(0, next(steps) % replica.steps_per_epoch, [arch]),
            args.repeats,
        )
        parts["forward/backward"] = {
            "ms": max(0.0, step_ms - parts["data: training share, DataFeed"]["ms"]),
            "calls": shared_steps,
        }
        child_params = sum(p.numel() for p in replica.net.parameters() if p.grad is not None)
        parts["all-reduce"] = {
            "ms": all_reduce_ms(
                args.replicas, child_params, args.repeats, cuda=device.type == "cuda"
            ),
            "calls": shared_steps,
        }
        score_ms = timed(
            lambda: replica.score_minibatch(archs, next(steps), minibatch),
            args.repeats if device.type == "cuda" else 1,
            warm=device.type == "cuda",
        )
        parts["scoring"] = {
            "ms": max(0.0, score_ms - parts["data: scoring minibatch, DataFeed"]["ms"]),
            "calls": controller_steps,
        }
        rewards = [0.5 + 0.01 * k for k in range(samples)]
        parts["controller"] = {
            "ms": timed(lambda: trainer.update(trainer.sample(samples), rewards), args.repeats),
            "calls": controller_steps,
        }
        url = f"sqlite:///{tmp / 'profile.db'}"
        upgrade(url)
        store = SearchStore(url)
        search_id = store.create(spec.model_dump(mode="json")).id
        slot = iter(range(10**9))

        def insert() -> None:
            step = next(slot)
            store.add_samples(
                search_id,
                [
                    SampleRecord(
                        phase="controller",
                        epoch=0,
                        step=step,
                        index=k,
                        arch=list(archs[k]),
                        reward=0.5,
                        accuracy=0.9,
                        mean_precision=0.5,
                        mean_recall=0.5,
                        miou=0.5,
                        miou_plus=0.7,
                        policy_version=step,
                        params=100_000,
                        flops=10**9,
                    )
                    for k in range(samples)
                ],
            )

        parts["database"] = {"ms": timed(insert, args.repeats), "calls": controller_steps}
        store.close()

        def checkpoint() -> None:
            state = {"replica": replica.state(), "controller": trainer.state_dict()}
            torch.save(state, tmp / "checkpoint.pt")

        parts["checkpoint"] = {"ms": timed(checkpoint, args.repeats), "calls": 1}

    common = [k for k in parts if not k.startswith("data:")]
    epoch = {
        "before": sum(parts[k]["ms"] * parts[k]["calls"] for k in common) / 1000
        + sum(parts[k]["ms"] * parts[k]["calls"] for k in parts if k.endswith("today")) / 1000,
        "after": sum(parts[k]["ms"] * parts[k]["calls"] for k in common) / 1000
        + sum(parts[k]["ms"] * parts[k]["calls"] for k in parts if k.endswith("DataFeed")) / 1000,
    }
    epochs = paper.epochs
    print(f"{'part':36} {'ms a call':>10} {'calls':>6} {'s an epoch':>11}", file=sys.stderr)
    for name, part in parts.items():
        print(
            f"{name:36} {part['ms']:10.1f} {part['calls']:6.0f} "
            f"{part['ms'] * part['calls'] / 1000:11.1f}",
            file=sys.stderr,
        )
    for when, seconds in epoch.items():
        print(
            f"epoch {when}: {seconds:.0f} s; {epochs} epochs: {seconds * epochs / 3600:.1f} h",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "device": str(device),
                "images": args.images,
                "threads": args.threads,
                "replica_build_s": build_s,
                "parts": parts,
                "epoch_s": epoch,
                "search_hours": {k: v * epochs / 3600 for k, v in epoch.items()},
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
                if torch.cuda.is_available()
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
