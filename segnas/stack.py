"""The whole service on one machine: what ``segnas serve`` and ``segnas demo`` start.

``LocalStack`` brings up, in order: the data folder, the database schema, Redis (the
embedded server unless ``REDIS_URL`` is set) and the dispatcher processes (``segnas worker``).
The API itself runs in uvicorn next to it. Everything a child process needs travels in the
environment, which this module sets for the process too (uvicorn's workers read it).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import IO

from jobqueue import EmbeddedRedis
from storage.engine import data_dir, database_url, make_engine
from storage.migrate import ensure_schema
from workers.processes import die_with_parent

log = logging.getLogger("segnas.stack")


class LocalStack:
    """Database, Redis and dispatchers for an API on this machine.

    Args:
        dispatchers: ``segnas worker`` processes to start (0: the API only).
        max_concurrent: searches each dispatcher runs at once.
        worker_output: where the dispatchers' logs go (default: inherited stdout/stderr).
    """

    def __init__(
        self, *, dispatchers: int = 1, max_concurrent: int = 1, worker_output: IO[str] | None = None
    ) -> None:
        self.dispatchers = dispatchers
        self.max_concurrent = max_concurrent
        self.worker_output = worker_output
        self.redis: EmbeddedRedis | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> LocalStack:
        # What the service writes (database, checkpoints, logs, the embedded Redis's files)
        # is its user's only: 0600 files, 0700 folders, for this process and its children.
        os.umask(0o077)
        folder = data_dir().resolve()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        os.environ["SEGNAS_DATA_DIR"] = str(folder)
        embedded_db = not os.environ.get("DATABASE_URL")
        engine = make_engine(database_url())
        try:
            # The embedded SQLite database is segnas's own: bring it up to date. A server's
            # schema changes only through `segnas db upgrade` (docker-compose's migrate step).
            ensure_schema(engine, upgrade_older=embedded_db)
            os.environ["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
        finally:
            engine.dispose()
        if not os.environ.get("REDIS_URL"):
            self.redis = EmbeddedRedis(folder / "redis").start()
            os.environ["REDIS_URL"] = self.redis.url
        command = [sys.executable, "-m", "segnas.cli", "worker"]
        for i in range(self.dispatchers):
            self.workers.append(
                subprocess.Popen(
                    [*command, "--max-concurrent", str(self.max_concurrent)],
                    stdin=subprocess.DEVNULL,
                    stdout=self.worker_output,
                    stderr=self.worker_output,
                    preexec_fn=die_with_parent(),
                )
            )
            log.info("dispatcher %d: pid %d", i, self.workers[-1].pid)
        return self

    def stop(self) -> None:
        """Stop the dispatchers (they stop their drivers and hand the searches back), then
        Redis."""
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=90)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.workers = []
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()
