"""The dispatcher with real drivers: local processes running tiny searches with a local Ray.

Each test runs once on PostgreSQL with the machine's Redis server and once on SQLite with the
embedded Redis. Waits poll the database with generous deadlines; no test asserts a duration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue import EmbeddedRedis, JobQueue, redis_client
from searchspec.spec import load_search_spec
from storage.searches import SearchRecord, SearchStore
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.launchers import LocalLauncher

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
BACKENDS = pytest.mark.parametrize(
    ("db_url", "redis_url"),
    [("postgresql", "server"), ("sqlite", "embedded")],
    indirect=True,
    ids=["postgresql+redis", "sqlite+embedded-redis"],
)
CONTROLLER_SAMPLES_PER_EPOCH = 3 * 4  # tiny: 3 controller steps x 4 architectures
DERIVE_SAMPLES = 6 + 1  # tiny: 6 sampled candidates and the greedy one


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    return load_search_spec(TINY, overrides).model_dump(mode="json")


def driver_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "SEGNAS_DATA_DIR": str(tmp_path / "data"),
        "RAY_AUTH_MODE": "disabled",
    }


def wait_for(
    what: str, condition: Callable[[], bool], *, timeout: float = 300, every: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every)


def status_is(store: SearchStore, search_id: str, *statuses: str) -> Callable[[], bool]:
    return lambda: store.get(search_id).status in statuses


class DispatcherThread:
    """A dispatcher looping in a thread of the test, as `segnas worker` loops in its process."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.stop = threading.Event()
        self.thread = threading.Thread(target=dispatcher.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Dispatcher:
        self.thread.start()
        return self.dispatcher

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the dispatcher did not stop"


@pytest.fixture
def make_dispatcher(
    store: SearchStore, job_queue: JobQueue, db_url: str, tmp_path: Path
) -> Iterator[Callable[..., DispatcherThread]]:
    def make(queue: JobQueue | None = None, **config: Any) -> DispatcherThread:
        settings = {"lease_seconds": 4, "heartbeat_seconds": 0.5, "reconcile_seconds": 1, **config}
        launcher = LocalLauncher(tmp_path / "logs", env=driver_env(db_url, tmp_path))
        dispatcher = Dispatcher(
            store, queue or job_queue, launcher, DispatcherConfig(poll_ms=200, **settings)
        )
        return DispatcherThread(dispatcher)

    yield make


def assert_complete_rows(store: SearchStore, record: SearchRecord, epochs: int) -> None:
    """Every slot of the search written exactly once: none missing, none twice."""
    samples = store.samples(record.id)
    slots = [(s.phase, s.epoch, s.step, s.index) for s in samples]
    assert len(slots) == len(set(slots))
    controller = [s for s in samples if s.phase == "controller"]
    assert len(controller) == epochs * CONTROLLER_SAMPLES_PER_EPOCH
    assert {(s.epoch, s.step, s.index) for s in controller} == {
        (e, t, i) for e in range(epochs) for t in range(3) for i in range(4)
    }
    assert len([s for s in samples if s.phase == "derive"]) == DERIVE_SAMPLES
    assert [e.epoch for e in store.epochs(record.id)] == list(range(epochs))
    assert store.result(record.id) is not None


@BACKENDS
def test_a_queued_search_without_a_stream_entry_is_enqueued_and_run(
    store: SearchStore, job_queue: JobQueue, make_dispatcher: Callable[..., DispatcherThread]
) -> None:
    """A crash between the INSERT and the XADD leaves a queued row the stream never saw."""
    search_id = store.create(tiny_spec(epochs=1), name="orphan").id
    assert job_queue.waiting() == []
    with make_dispatcher():
        wait_for("the search to end", status_is(store, search_id, "succeeded", "failed"))
    record = store.get(search_id)
    assert record.status == "succeeded", record.error
    assert record.worker is None and record.attempts == 1
    assert_complete_rows(store, record, epochs=1)
    assert job_queue.waiting() == [] and job_queue.pending() == 0


@BACKENDS
def test_cancel_stops_a_running_search_at_a_step_boundary(
    store: SearchStore, job_queue: JobQueue, make_dispatcher: Callable[..., DispatcherThread]
) -> None:
    search_id = store.create(tiny_spec(epochs=50)).id
    job_queue.enqueue(search_id)
    with make_dispatcher() as dispatcher:
        wait_for("the search to make progress", lambda: store.count_samples(search_id) > 0)
        from storage.leases import SearchLeases

        SearchLeases(store).request_cancel(search_id)
        wait_for("the search to be cancelled", status_is(store, search_id, "cancelled"))
        wait_for("its driver to exit", lambda: not dispatcher.running)
    record = store.get(search_id)
    assert record.finished_at is not None and record.error is None
    assert store.get(search_id).progress["epoch"] < 50
    assert job_queue.waiting() == []


@BACKENDS
def test_a_dispatcher_killed_mid_search_is_replaced_and_the_search_resumes(
    store: SearchStore,
    job_queue: JobQueue,
    db_url: str,
    redis_url: str,
    queue_prefix: str,
    tmp_path: Path,
) -> None:
    """SIGKILL the dispatcher (`segnas worker`) while its driver runs; its driver dies with it.
    A second dispatcher claims the pending entry once the lease is stale and resumes the
    search from its last checkpoint: every sample row exactly once."""
    epochs = 8
    search_id = store.create(tiny_spec(epochs=epochs)).id
    job_queue.enqueue(search_id)
    env = {
        **os.environ,
        **driver_env(db_url, tmp_path),
        "REDIS_URL": redis_url,
        "SEGNAS_QUEUE_PREFIX": queue_prefix,
    }
    env.pop("RAY_ADDRESS", None)
    worker = [sys.executable, "-m", "segnas.cli", "worker", "--lease-seconds", "3"]
    worker += ["--heartbeat-seconds", "0.5", "--reconcile-seconds", "1"]

    def start(name: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([*worker, "--name", name], env=env, stdout=log, stderr=log)

    first = start("first")
    try:
        wait_for("a checkpoint", lambda: store.last_checkpoint(search_id) is not None)
        assert store.get(search_id).status == "running"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    second = start("second")
    try:
        wait_for("the search to end", status_is(store, search_id, "succeeded", "failed"))
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(120)
    record = store.get(search_id)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
    assert record.status == "succeeded", f"{record.error}\n{logs}"
    assert record.attempts == 2, logs
    assert second.returncode == 0
    assert_complete_rows(store, record, epochs)


@pytest.mark.parametrize(("db_url", "redis_url"), [("sqlite", "embedded")], indirect=True)
def test_a_redis_restart_that_loses_everything_loses_no_search(
    store: SearchStore,
    db_url: str,
    tmp_path: Path,
    make_dispatcher: Callable[..., DispatcherThread],
) -> None:
    """The worst restart: Redis comes back empty (no persistence). The running search goes on,
    the queued one is enqueued again from its row, and both finish."""
    redis_dir = tmp_path / "lost-redis"
    server = EmbeddedRedis(redis_dir).start()
    port = server.port
    queue = JobQueue(redis_client(server.url, socket_timeout=5), prefix="segnas")
    queue.ensure_group()
    first = store.create(tiny_spec(epochs=3)).id
    second = store.create(tiny_spec(epochs=1)).id
    queue.enqueue(first)
    queue.enqueue(second)
    try:
        with make_dispatcher(queue, max_concurrent=1):
            wait_for("the first search to run", lambda: store.count_samples(first) > 0)
            server.stop()
            for leftover in redis_dir.iterdir():  # no data survives the restart
                if leftover.name != "password":  # the server's own secret, not data
                    leftover.unlink()
            server = EmbeddedRedis(redis_dir, port=port).start()
            for search_id in (first, second):
                wait_for("the searches to end", status_is(store, search_id, "succeeded", "failed"))
    finally:
        queue.client.close()
        server.stop()
    for search_id, epochs in ((first, 3), (second, 1)):
        record = store.get(search_id)
        assert record.status == "succeeded", record.error
        assert_complete_rows(store, record, epochs)
