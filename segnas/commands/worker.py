"""``segnas worker``: a dispatcher that takes search jobs from Redis and runs them."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.dispatcher import DispatcherConfig
    from workers.launchers import Launcher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-concurrent", type=int, default=1, metavar="N", help="searches run at once (1)"
    )
    parser.add_argument("--name", help="consumer name (default: host-pid-random)")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="a dispatcher silent this long is taken to be dead and its searches resumed (30)",
    )
    parser.add_argument(
        "--heartbeat-seconds", type=float, default=5.0, help="lease renewal interval (5)"
    )
    parser.add_argument(
        "--reconcile-seconds",
        type=float,
        default=15.0,
        help="how often orphaned searches are enqueued again (15)",
    )


def dispatcher_config(args: argparse.Namespace) -> DispatcherConfig:
    from pydantic import ValidationError

    from errors import ConfigError, validation_problems
    from workers.dispatcher import DispatcherConfig

    values: dict[str, object] = {
        "max_concurrent": args.max_concurrent,
        "lease_seconds": args.lease_seconds,
        "heartbeat_seconds": args.heartbeat_seconds,
        "reconcile_seconds": args.reconcile_seconds,
    }
    if args.name:
        values["name"] = args.name
    try:
        return DispatcherConfig.model_validate(values)
    except ValidationError as e:
        raise ConfigError(f"worker options: {validation_problems(e)}") from None


def job_database_url(url: Any) -> str:
    """The database URL for a Ray Job's environment: without its password."""
    return url._replace(password=None).render_as_string(hide_password=False)


def run(args: argparse.Namespace) -> int:
    from errors import ConfigError
    from jobqueue import JobQueue, redis_client
    from storage.engine import data_dir, database_url, make_engine
    from storage.migrate import ensure_schema
    from storage.searches import SearchStore
    from workers.dispatcher import Dispatcher
    from workers.launchers import LocalLauncher, RayJobLauncher, jobs_address
    from workers.ray_auth import check_ray_auth

    os.umask(0o077)  # checkpoints and logs: the service user's only
    config = dispatcher_config(args)
    check_ray_auth(os.environ.get("RAY_ADDRESS"))  # before a search is taken, not in each
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise ConfigError("set REDIS_URL to the job queue's Redis (segnas serve starts one)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    folder = data_dir().resolve()
    db_url = database_url()
    engine = make_engine(db_url)
    ensure_schema(engine)
    store = SearchStore(engine=engine)
    prefix = os.environ.get("SEGNAS_QUEUE_PREFIX") or "segnas"
    queue = JobQueue(redis_client(redis_url, socket_timeout=10), prefix=prefix)
    # The driver reaches the same database and data folder as this dispatcher.
    env = {"SEGNAS_DATA_DIR": str(folder)}
    ray_address = os.environ.get("RAY_ADDRESS")
    if ray_address:
        # A Ray Job's runtime_env is shown by the Ray dashboard: the database password stays
        # out of it; the cluster's nodes give it to libpq themselves (PGPASSFILE, ~/.pgpass).
        env["DATABASE_URL"] = job_database_url(engine.url)
        launcher: Launcher = RayJobLauncher(jobs_address(ray_address), env=env)
    else:
        env["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
        launcher = LocalLauncher(Path(folder) / "logs", env=env)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        Dispatcher(store, queue, launcher, config).run(stop)
    finally:
        store.close()
        queue.client.close()
    return 0
