"""How many samples per second can the controller actor hand out and the database keep?

The controller phase of a search, with the supernet replaced by a synthetic reward (the
fraction of layers that chose cell 2): the ``ControllerActor`` (a Ray actor, 12 layers x 6
choices, batches of 20) samples a batch, the rewards go back in two parts in reverse order (as
remote scorers would send them), the actor makes its REINFORCE update, and the batch's 20
samples go to ``SearchStore.add_samples``. Run on SQLite and on PostgreSQL, each in a fresh
database, after a short warm-up. Two schedules of the same work:

- ``sequential``: every call waits for its answer; the batch is written, then the next asked for.
- ``pipelined``: the reports and the next ``sample_batch`` are sent together (Ray runs one
  caller's calls on an actor in the order sent, so the next batch still comes from the updated
  policy: on-policy as before), and the database write of batch k overlaps the actor's update
  and sampling of batch k+1.

Two references show where the time goes: the controller's own work in this process (no Ray, no
database: the ceiling of every loop) and the pipelined loop writing nowhere (backend ``none``:
what the actor and its round trips allow). Prints a table and, last, one JSON line (the headline
figure per backend is the pipelined one). ``--profile`` adds cProfile tables.

    python bench/controller_throughput.py [--batches 200] [--backend both] [--profile]

Goal: at least 5,000 samples/s per backend.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from controller.config import ReinforceConfig
from storage.engine import normalise_url
from storage.migrate import upgrade
from storage.searches import SampleRecord, SearchStore

GOAL = 5000.0
LAYERS, CHOICES, BATCH = 12, 6, 20
REWARDED_CELL = 2
MODES = ("sequential", "pipelined")
POSTGRES_URL_ENV = "SEGNAS_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def reward(arch: tuple[int, ...]) -> float:
    """Deterministic synthetic reward: the share of layers that chose ``REWARDED_CELL``."""
    return sum(cell == REWARDED_CELL for cell in arch) / len(arch)


def records(batch: Any, rewards: dict[int, float], step: int) -> list[SampleRecord]:
    return [
        SampleRecord(
            phase="controller",
            epoch=0,
            step=step,
            index=i,
            arch=list(s.arch),
            reward=rewards[s.sample_id],
            accuracy=rewards[s.sample_id],
            mean_precision=rewards[s.sample_id],
            mean_recall=rewards[s.sample_id],
            miou=rewards[s.sample_id],
            miou_plus=rewards[s.sample_id],
            policy_version=batch.version,
        )
        for i, s in enumerate(batch.samples)
    ]


def report_parts(actor: Any, batch: Any) -> tuple[dict[int, float], list[Any]]:
    """Send the batch's rewards in two parts, the second half first; returns the rewards and
    the two calls' refs."""
    rewards = {s.sample_id: reward(s.arch) for s in batch.samples}
    ids = list(rewards)
    half = len(ids) // 2
    parts = [{i: rewards[i] for i in ids[half:]}, {i: rewards[i] for i in ids[:half]}]
    return rewards, [actor.report.remote(batch.version, part) for part in parts]


@dataclass
class Run:
    backend: str
    mode: str
    batches: int
    seconds: float
    actor_seconds: float  # waiting on the actor: sample_batch and report round trips
    db_seconds: float  # in add_samples
    mean_reward: float  # of the last batch: the policy learns (the loop is not a no-op)
    round_trip_ms: float = 0.0  # one cheap actor call (``version``), after the run

    @property
    def samples(self) -> int:
        return self.batches * BATCH

    @property
    def per_s(self) -> float:
        return self.samples / self.seconds


Write = Callable[[list[SampleRecord]], None]


def run_loop(
    actor: Any, write: Write, *, backend: str, mode: str, batches: int, first_step: int
) -> Run:
    """``batches`` batches from the actor, scored, reported and written; steps from
    ``first_step`` on."""
    import ray

    actor_s = db_s = 0.0
    start = time.perf_counter()
    batch = ray.get(actor.sample_batch.remote())
    actor_s += time.perf_counter() - start
    stats: list[Any] = []
    for k in range(batches):
        rewards, reports = report_parts(actor, batch)
        rows = records(batch, rewards, first_step + k)
        last = k + 1 == batches
        if mode == "pipelined":
            next_ref = None if last else actor.sample_batch.remote()
            t = time.perf_counter()
            write(rows)
            db_s += time.perf_counter() - t
            t = time.perf_counter()
            stats = ray.get(reports)
            batch = None if next_ref is None else ray.get(next_ref)
            actor_s += time.perf_counter() - t
        else:
            t = time.perf_counter()
            stats = ray.get(reports)
            batch = None if last else ray.get(actor.sample_batch.remote())
            actor_s += time.perf_counter() - t
            t = time.perf_counter()
            write(rows)
            db_s += time.perf_counter() - t
        # The first part leaves the batch open, the second completes it: one update per batch.
        if stats[0] is not None or stats[1] is None:
            raise RuntimeError(f"batch {first_step + k}: not one update per batch: {stats}")
    seconds = time.perf_counter() - start
    return Run(backend, mode, batches, seconds, actor_s, db_s, stats[1].mean_reward)


def measure(write: Write, *, backend: str, mode: str, args: argparse.Namespace) -> Run:
    """A fresh actor, a warm-up, then the measured run (profiled with ``--profile``)."""
    import ray

    from controller.actor import ControllerActor

    actor = ControllerActor.remote(LAYERS, CHOICES, ReinforceConfig(batch_size=BATCH))
    try:
        run_loop(actor, write, backend=backend, mode=mode, batches=args.warmup, first_step=0)
        with profiled(args.profile, f"driver, {backend} {mode}"):
            run = run_loop(
                actor,
                write,
                backend=backend,
                mode=mode,
                batches=args.batches,
                first_step=args.warmup,
            )
        run.round_trip_ms = round_trip_ms(actor)
    finally:
        ray.kill(actor)
    print_row(run)
    return run


def round_trip_ms(actor: Any, calls: int = 200) -> float:
    """Mean time of a call that does nothing: what Ray itself adds to each call."""
    import ray

    start = time.perf_counter()
    for _ in range(calls):
        ray.get(actor.version.remote())
    return 1e3 * (time.perf_counter() - start) / calls


def bench_backend(backend: str, url: str, args: argparse.Namespace) -> list[Run]:
    """Every mode on one database, each into a search of its own."""
    upgrade(url)
    store = SearchStore(url)
    runs = []
    try:
        for mode in args.modes:
            search_id = store.create({"bench": "controller_throughput", "mode": mode}).id
            runs.append(
                measure(
                    partial(store.add_samples, search_id), backend=backend, mode=mode, args=args
                )
            )
            stored = store.count_samples(search_id)
            if stored != (args.warmup + args.batches) * BATCH:
                raise RuntimeError(f"{backend} {mode}: {stored} samples stored")
    finally:
        store.close()
    return runs


def in_process(args: argparse.Namespace) -> tuple[float, float]:
    """The controller's own work per batch, in this process, without Ray or a database:
    ``(sample_batch ms, report ms)``, the floor of every loop above."""
    from controller.actor import ControllerService

    service = ControllerService(LAYERS, CHOICES, ReinforceConfig(batch_size=BATCH))
    sample_s = report_s = 0.0
    with profiled(args.profile, "controller in-process", sort="tottime"):
        for k in range(args.warmup + args.batches):
            t0 = time.perf_counter()
            batch = service.sample_batch()
            t1 = time.perf_counter()
            rewards = {s.sample_id: reward(s.arch) for s in batch.samples}
            ids = list(rewards)
            half = len(ids) // 2
            service.report(batch.version, {i: rewards[i] for i in ids[half:]})
            service.report(batch.version, {i: rewards[i] for i in ids[:half]})
            t2 = time.perf_counter()
            if k >= args.warmup:
                sample_s, report_s = sample_s + t1 - t0, report_s + t2 - t1
    return 1e3 * sample_s / args.batches, 1e3 * report_s / args.batches


@contextmanager
def profiled(enabled: bool, title: str, sort: str = "cumulative") -> Iterator[None]:
    if not enabled:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        print(f"--- profile: {title} (by {sort}, top 20) ---")
        pstats.Stats(profiler).sort_stats(sort).print_stats(20)


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="segnas-bench-") as folder:
        yield f"sqlite:///{Path(folder) / 'segnas.db'}"


@contextmanager
def postgres_url(server: str) -> Iterator[str]:
    """A database of its own on the server, dropped afterwards."""
    admin = create_engine(
        normalise_url(server),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    name = f"segnas_bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


HEADER = (
    f"{'backend':<11} {'mode':<11} {'samples':>7} {'seconds':>8} {'samples/s':>10} "
    f"{'actor ms/b':>11} {'db ms/b':>8} {'rtt ms':>7} {'reward':>7}"
)


def print_row(run: Run) -> None:
    print(
        f"{run.backend:<11} {run.mode:<11} {run.samples:>7} {run.seconds:>8.2f} "
        f"{run.per_s:>10.0f} {1e3 * run.actor_seconds / run.batches:>11.2f} "
        f"{1e3 * run.db_seconds / run.batches:>8.2f} {run.round_trip_ms:>7.2f} "
        f"{run.mean_reward:>7.3f}",
        flush=True,
    )


def summarise(runs: list[Run], backends: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for backend in backends:
        by_mode = {r.mode: r for r in runs if r.backend == backend}
        headline = by_mode.get("pipelined") or by_mode.get("sequential")
        summary[f"{backend}_samples_per_s"] = None if headline is None else round(headline.per_s)
        for mode, run in by_mode.items():
            summary[f"{backend}_{mode}_samples_per_s"] = round(run.per_s)
            summary[f"{backend}_{mode}_actor_ms_per_batch"] = round(
                1e3 * run.actor_seconds / run.batches, 3
            )
            summary[f"{backend}_{mode}_db_ms_per_batch"] = round(
                1e3 * run.db_seconds / run.batches, 3
            )
            summary[f"{backend}_{mode}_round_trip_ms"] = round(run.round_trip_ms, 3)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=positive, default=200, help="measured batches of 20")
    parser.add_argument("--warmup", type=positive, default=20, help="batches before measuring")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL,
        help=f"server to create the bench database on (env {POSTGRES_URL_ENV})",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile driver and controller")
    args = parser.parse_args()
    # Before anything imports ray (controller.actor does).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    sample_ms, report_ms = in_process(args)
    ceiling = 1e3 * BATCH / (sample_ms + report_ms)
    print(
        f"controller in-process (no Ray, no database): sample_batch {sample_ms:.2f} ms + "
        f"report {report_ms:.2f} ms per batch of {BATCH} = at most {ceiling:.0f} samples/s",
        flush=True,
    )

    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * 1024**2,
        log_to_driver=False,
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(HEADER, flush=True)
    runs: list[Run] = []
    errors: dict[str, str] = {}
    try:
        # The same loop writing nowhere: what the actor and its round trips allow.
        actor_only = measure(lambda rows: None, backend="none", mode="pipelined", args=args)
        for backend in backends:
            where = sqlite_url() if backend == "sqlite" else postgres_url(args.postgres_url)
            try:
                with where as url:
                    runs += bench_backend(backend, url, args)
            except SQLAlchemyError as e:
                errors[backend] = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
                print(f"{backend}: not measured: {errors[backend]}", flush=True)
    finally:
        ray.shutdown()

    summary = {"bench": "controller_throughput", **summarise(runs, backends), "goal": GOAL}
    headlines = [summary[f"{b}_samples_per_s"] for b in backends]
    summary.update(
        met=all(h is not None and h >= GOAL for h in headlines),
        no_database_samples_per_s=round(actor_only.per_s),
        no_database_actor_ms_per_batch=round(1e3 * actor_only.actor_seconds / args.batches, 3),
        round_trip_ms=round(actor_only.round_trip_ms, 3),
        in_process_sample_ms=round(sample_ms, 3),
        in_process_report_ms=round(report_ms, 3),
        in_process_ceiling_samples_per_s=round(ceiling),
        batches=args.batches,
        batch_size=BATCH,
        errors=errors,
    )
    print(json.dumps(summary))
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
