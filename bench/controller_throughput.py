"""How many samples per second can the controller actor hand out and the database keep?

The controller phase of a search, with the supernet replaced by a synthetic reward (the
fraction of layers that chose cell 2): the ``ControllerActor`` (a Ray actor, 12 layers x 6
choices) samples a batch, the rewards go back in two parts in reverse order (as remote scorers
would send them), the actor makes its REINFORCE update, and the batch's samples go to
``SearchStore.add_samples``. Run on SQLite and on PostgreSQL, each in a fresh database, after a
short warm-up, for every batch size of ``--batch-sizes``:

- 20, the ENAS controller's batch;
- 200, the scoring wave of a large cluster. REINFORCE is on-policy: one batch per update, all
  drawn by the same policy, so at most a batch's worth of scorers can be busy at once. With
  batches of 20 only 20 GPUs score in parallel, whatever the actor's speed (the algorithm's
  limit, not the actor's); a cluster of N GPUs needs batches of about N samples.

Every backend x schedule x batch size is one run. Two schedules of the same work:

- ``sequential``: every call waits for its answer; the batch is written, then the next asked for.
- ``pipelined``: the reports and the next ``sample_batch`` are sent together (Ray runs one
  caller's calls on an actor in the order sent, so the next batch still comes from the updated
  policy: on-policy as before), and the database write of batch k overlaps the actor's update
  and sampling of batch k+1.

Two references show where the time goes: the controller's own work in this process (no Ray, no
database: the ceiling of every loop) and the pipelined loop writing nowhere (backend ``none``:
what the actor and its round trips allow), both per batch size. Prints a table and, last, one
JSON line: the headline figure per backend is the pipelined one; keys end in ``_batch<size>``
per batch size, and the keys without that suffix are batch 20's (the only size measured before
``--batch-sizes``). ``--profile`` adds cProfile tables.

    python bench/controller_throughput.py [--batch-sizes 20 200] [--batches N] [--backend both]

Goal: at least 5,000 samples/s per backend (``met_batch<size>`` per batch size; ``met``: at
every batch size measured).
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
LAYERS, CHOICES = 12, 6
BATCH = 20  # ENAS's controller batch; the JSON keys without a ``_batch<size>`` suffix are its
BATCH_SIZES = (BATCH, 200)
SAMPLES_PER_RUN = 4000  # default measured batches per run: this many samples' worth
WARMUP_SAMPLES = 400  # default warm-up batches: this many samples' worth (at least 2 batches)
REWARDED_CELL = 2
MODES = ("sequential", "pipelined")
POSTGRES_URL_ENV = "SEGNAS_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def batch_size(value: str) -> int:
    number = int(value)
    if number < 2:  # the rewards go back in two non-empty parts
        raise argparse.ArgumentTypeError(f"must be at least 2, got {number}")
    return number


def measured_batches(args: argparse.Namespace, size: int) -> int:
    """``--batches``, or by default ``SAMPLES_PER_RUN`` samples' worth of batches."""
    return args.batches or max(1, round(SAMPLES_PER_RUN / size))


def warmup_batches(args: argparse.Namespace, size: int) -> int:
    """``--warmup``, or by default ``WARMUP_SAMPLES`` samples' worth, at least 2 batches."""
    return args.warmup or max(2, round(WARMUP_SAMPLES / size))


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
    batch_size: int
    batches: int
    seconds: float
    actor_seconds: float  # waiting on the actor: sample_batch and report round trips
    db_seconds: float  # in add_samples
    mean_reward: float  # of the last batch: the policy learns (the loop is not a no-op)
    round_trip_ms: float = 0.0  # one cheap actor call (``version``), after the run

    @property
    def samples(self) -> int:
        return self.batches * self.batch_size

    @property
    def per_s(self) -> float:
        return self.samples / self.seconds


Write = Callable[[list[SampleRecord]], None]


def run_loop(
    actor: Any,
    write: Write,
    *,
    backend: str,
    mode: str,
    size: int,
    batches: int,
    first_step: int,
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
    return Run(backend, mode, size, batches, seconds, actor_s, db_s, stats[1].mean_reward)


def measure(write: Write, *, backend: str, mode: str, size: int, args: argparse.Namespace) -> Run:
    """A fresh actor drawing batches of ``size``, a warm-up, then the measured run (profiled
    with ``--profile``)."""
    import ray

    from controller.actor import ControllerActor

    warmup = warmup_batches(args, size)
    loop = partial(run_loop, backend=backend, mode=mode, size=size)
    actor = ControllerActor.remote(LAYERS, CHOICES, ReinforceConfig(batch_size=size))
    try:
        loop(actor, write, batches=warmup, first_step=0)
        with profiled(args.profile, f"driver, {backend} {mode}, batch {size}"):
            run = loop(actor, write, batches=measured_batches(args, size), first_step=warmup)
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
    """Every batch size x mode on one database, each into a search of its own."""
    upgrade(url)
    store = SearchStore(url)
    runs = []
    try:
        for size in args.batch_sizes:
            for mode in args.modes:
                spec = {"bench": "controller_throughput", "mode": mode, "batch_size": size}
                search_id = store.create(spec).id
                write = partial(store.add_samples, search_id)
                runs.append(measure(write, backend=backend, mode=mode, size=size, args=args))
                stored = store.count_samples(search_id)
                expected = (warmup_batches(args, size) + measured_batches(args, size)) * size
                if stored != expected:
                    raise RuntimeError(
                        f"{backend} {mode} batch {size}: {stored} samples stored, not {expected}"
                    )
    finally:
        store.close()
    return runs


def in_process(args: argparse.Namespace, size: int) -> tuple[float, float]:
    """The controller's own work per batch of ``size``, in this process, without Ray or a
    database: ``(sample_batch ms, report ms)``, the floor of every loop above."""
    from controller.actor import ControllerService

    service = ControllerService(LAYERS, CHOICES, ReinforceConfig(batch_size=size))
    warmup, batches = warmup_batches(args, size), measured_batches(args, size)
    sample_s = report_s = 0.0
    with profiled(args.profile, f"controller in-process, batch {size}", sort="tottime"):
        for k in range(warmup + batches):
            t0 = time.perf_counter()
            batch = service.sample_batch()
            t1 = time.perf_counter()
            rewards = {s.sample_id: reward(s.arch) for s in batch.samples}
            ids = list(rewards)
            half = len(ids) // 2
            service.report(batch.version, {i: rewards[i] for i in ids[half:]})
            service.report(batch.version, {i: rewards[i] for i in ids[:half]})
            t2 = time.perf_counter()
            if k >= warmup:
                sample_s, report_s = sample_s + t1 - t0, report_s + t2 - t1
    return 1e3 * sample_s / batches, 1e3 * report_s / batches


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
    f"{'backend':<11} {'mode':<11} {'batch':>5} {'samples':>7} {'seconds':>8} {'samples/s':>10} "
    f"{'actor ms/b':>11} {'db ms/b':>8} {'rtt ms':>7} {'reward':>7}"
)


def print_row(run: Run) -> None:
    print(
        f"{run.backend:<11} {run.mode:<11} {run.batch_size:>5} {run.samples:>7} "
        f"{run.seconds:>8.2f} {run.per_s:>10.0f} {1e3 * run.actor_seconds / run.batches:>11.2f} "
        f"{1e3 * run.db_seconds / run.batches:>8.2f} {run.round_trip_ms:>7.2f} "
        f"{run.mean_reward:>7.3f}",
        flush=True,
    )


def summarise(runs: list[Run], backends: list[str], size: int) -> dict[str, Any]:
    """The database runs' figures at batch ``size``, under keys without a batch suffix."""
    summary: dict[str, Any] = {}
    for backend in backends:
        by_mode = {r.mode: r for r in runs if r.backend == backend and r.batch_size == size}
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
    parser.add_argument(
        "--batch-sizes",
        nargs="+",
        type=batch_size,
        default=list(BATCH_SIZES),
        help="controller batch sizes, each measured on every backend and schedule (default: "
        "20, ENAS's batch, and 200, a large cluster's scoring wave)",
    )
    parser.add_argument(
        "--batches",
        type=positive,
        default=None,
        help=f"measured batches per run, at every batch size (default: {SAMPLES_PER_RUN:,} "
        f"samples' worth, so that every run stores about as many: 200 batches at batch 20, "
        f"20 at batch 200)",
    )
    parser.add_argument(
        "--warmup",
        type=positive,
        default=None,
        help=f"batches before measuring, at every batch size (default: {WARMUP_SAMPLES} "
        f"samples' worth, at least 2: 20 at batch 20, 2 at batch 200)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL,
        help=f"server to create the bench database on (env {POSTGRES_URL_ENV})",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile driver and controller")
    args = parser.parse_args()
    args.batch_sizes = list(dict.fromkeys(args.batch_sizes))  # each size once, in order given
    # Before anything imports ray (controller.actor does).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGNAS_ALLOW_UNAUTHENTICATED_RAY", "1")  # a bench machine

    ceilings: dict[int, tuple[float, float, float]] = {}
    for size in args.batch_sizes:
        sample_ms, report_ms = in_process(args, size)
        ceiling = 1e3 * size / (sample_ms + report_ms)
        ceilings[size] = sample_ms, report_ms, ceiling
        print(
            f"controller in-process (no Ray, no database): sample_batch {sample_ms:.2f} ms + "
            f"report {report_ms:.2f} ms per batch of {size} = at most {ceiling:.0f} samples/s",
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
    actor_only: dict[int, Run] = {}
    errors: dict[str, str] = {}
    try:
        # The same loop writing nowhere: what the actor and its round trips allow.
        for size in args.batch_sizes:
            actor_only[size] = measure(
                lambda rows: None, backend="none", mode="pipelined", size=size, args=args
            )
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

    per_size: dict[int, dict[str, Any]] = {}
    for size in args.batch_sizes:
        sample_ms, report_ms, ceiling = ceilings[size]
        only = actor_only[size]
        numbers = summarise(runs, backends, size)
        headlines = [numbers[f"{b}_samples_per_s"] for b in backends]
        numbers.update(
            met=all(h is not None and h >= GOAL for h in headlines),
            no_database_samples_per_s=round(only.per_s),
            no_database_actor_ms_per_batch=round(1e3 * only.actor_seconds / only.batches, 3),
            round_trip_ms=round(only.round_trip_ms, 3),
            in_process_sample_ms=round(sample_ms, 3),
            in_process_report_ms=round(report_ms, 3),
            in_process_ceiling_samples_per_s=round(ceiling),
            batches=only.batches,
            warmup_batches=warmup_batches(args, size),
        )
        per_size[size] = numbers
    summary: dict[str, Any] = {
        "bench": "controller_throughput",
        "goal": GOAL,
        "met": all(numbers["met"] for numbers in per_size.values()),  # at every batch size
        "batch_sizes": args.batch_sizes,
    }
    if BATCH in per_size:  # the keys of the runs before --batch-sizes: batch 20's figures
        summary.update({k: v for k, v in per_size[BATCH].items() if k != "met"})
        summary["batch_size"] = BATCH
    for size, numbers in per_size.items():
        summary.update({f"{key}_batch{size}": value for key, value in numbers.items()})
    summary["errors"] = errors
    print(json.dumps(summary))
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
