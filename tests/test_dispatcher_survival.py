"""Dispatchers that survive: the real ``Dispatcher``, ``JobQueue`` and ``SearchLeases``.

Each test runs on PostgreSQL with the machine's Redis server and on SQLite with the embedded
Redis, with scripted drivers (``scripted_driver.py``: real processes that write a search's
rows through the fenced store, one epoch when the test says so). The dispatchers' intervals
run on a clock the test steps; the leases' age is set in database time. Every scenario ends
with one driver and exactly the rows of an undisturbed search.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from lease_clock import SkewedDatetime, make_stale
from scripted_driver import ScriptedLauncher, rows, undisturbed_rows

import storage.models
from jobqueue import JobQueue
from storage.fencing import Fence
from storage.leases import Claim
from storage.searches import SearchStore
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.launchers import LocalProcess, jobs_client

BACKENDS = pytest.mark.parametrize(
    ("db_url", "redis_url"),
    [("postgresql", "server"), ("sqlite", "embedded")],
    indirect=True,
    ids=["postgresql+redis", "sqlite+embedded-redis"],
)
LEASE, HEARTBEAT = 30.0, 5.0
SPEC = {"seed": 0}


class StepClock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def launcher(db_url: str) -> Iterator[ScriptedLauncher]:
    launcher = ScriptedLauncher(db_url)
    yield launcher
    launcher.close()


@pytest.fixture
def make(
    store: SearchStore, job_queue: JobQueue, launcher: ScriptedLauncher
) -> Callable[..., Dispatcher]:
    clock = StepClock()

    def make(name: str, *, launch: Any = None, clock: Any = clock, **config: Any) -> Dispatcher:
        settings = {
            "lease_seconds": LEASE,
            "heartbeat_seconds": HEARTBEAT,
            "cancel_grace_seconds": 600,
            "poll_ms": 20,
            **config,
        }
        return Dispatcher(
            store,
            job_queue,
            launch or launcher,
            DispatcherConfig(name=name, **settings),
            clock=clock,
        )

    make.clock = clock  # type: ignore[attr-defined]
    return make


def queued(store: SearchStore, job_queue: JobQueue) -> str:
    search_id = store.create(SPEC).id
    assert job_queue.enqueue(search_id)
    return search_id


def assert_undisturbed(store: SearchStore, search_id: str) -> None:
    record = store.get(search_id)
    assert record.status == "succeeded", record.error
    assert rows(store, search_id) == undisturbed_rows(store)


@BACKENDS
def test_a_dispatcher_shutting_down_keeps_its_lease_until_its_driver_has_stopped(
    store: SearchStore,
    job_queue: JobQueue,
    launcher: ScriptedLauncher,
    make: Callable[..., Dispatcher],
) -> None:
    """The driver stops at its next epoch boundary, longer than a lease after the SIGTERM.
    The shutdown renews the lease meanwhile, so no other dispatcher starts a second driver;
    once the driver stopped, the search is handed back and resumed elsewhere."""
    a, b = make("a"), make("b")
    search_id = queued(store, job_queue)
    a.turn()
    [first] = launcher.launched
    assert first.go() == "epoch 0"
    a.begin_shutdown()
    make_stale(store, search_id)  # the shutdown has waited longer than a lease
    make.clock.advance(HEARTBEAT)  # type: ignore[attr-defined]
    assert a.shutdown_turn() is False
    b.turn()
    assert b.running == {} and b.leases.claim(search_id, "b") is Claim.HELD

    assert first.go() == "stopped"
    first.process.wait(60)
    assert a.shutdown_turn() is True
    assert store.get(search_id).worker is None  # handed back, with a new entry
    b.turn()
    [_, second] = launcher.launched
    assert second.fence == Fence("b", 2)
    assert second.run_to_end() == 0
    b.turn()
    assert b.running == {}
    assert_undisturbed(store, search_id)


@BACKENDS
def test_a_dispatcher_whose_clock_runs_a_lease_ahead_takes_no_live_lease(
    store: SearchStore,
    job_queue: JobQueue,
    launcher: ScriptedLauncher,
    make: Callable[..., Dispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = make("a"), make("b")
    search_id = queued(store, job_queue)
    a.turn()
    [first] = launcher.launched
    assert first.go() == "epoch 0"
    monkeypatch.setattr(SkewedDatetime, "offset", timedelta(seconds=LEASE + 1))
    monkeypatch.setattr(storage.models, "datetime", SkewedDatetime)  # b's clock, from here on
    b.turn()  # reconciles (nothing is orphaned) and finds nothing to claim
    assert b.running == {} and b.leases.claim(search_id, "b") is Claim.HELD
    monkeypatch.undo()
    assert first.run_to_end() == 0
    a.turn()
    assert len(launcher.launched) == 1 and a.running == {}
    assert_undisturbed(store, search_id)


@BACKENDS
def test_a_search_whose_stream_entry_is_lost_is_enqueued_again(
    store: SearchStore,
    job_queue: JobQueue,
    launcher: ScriptedLauncher,
    make: Callable[..., Dispatcher],
) -> None:
    """The entry is gone from the stream while the id set still names the search: a plain
    enqueue would think it is waiting; reconciliation gives it a new entry."""
    search_id = queued(store, job_queue)
    [(entry_id, _fields)] = job_queue.client.xrange(job_queue.stream)
    job_queue.client.xdel(job_queue.stream, entry_id)
    assert job_queue.waiting() == [search_id]
    assert job_queue.enqueue(search_id) is False  # what reconciliation did before

    a = make("a")
    a.turn()
    [driver] = launcher.launched
    assert driver.run_to_end() == 0
    a.turn()
    assert a.running == {} and job_queue.waiting() == [] and job_queue.pending() == 0
    assert_undisturbed(store, search_id)


def test_reconciliation_adds_one_entry_per_search_and_keeps_live_ones(job_queue: JobQueue) -> None:
    live, lost, new = "a" * 32, "b" * 32, "c" * 32
    for search_id in (live, lost):
        job_queue.enqueue(search_id)
    entry_of_lost = job_queue.client.xrange(job_queue.stream)[1][0]
    job_queue.client.xdel(job_queue.stream, entry_of_lost)
    assert job_queue.enqueue_all([live, lost, new, lost]) == 2
    assert job_queue.enqueue_all([live, lost, new]) == 0
    listed = [fields["search_id"] for _, fields in job_queue.client.xrange(job_queue.stream)]
    assert sorted(listed) == [live, lost, new]
    assert job_queue.waiting() == [live, lost, new]


@BACKENDS
def test_a_turn_survives_an_error_nobody_expected_and_backs_off(
    store: SearchStore,
    job_queue: JobQueue,
    launcher: ScriptedLauncher,
    make: Callable[..., Dispatcher],
) -> None:
    """Redis answers with an error of a kind the loop never saw (a key of the wrong type):
    each turn fails, is logged, and the pause before the next one doubles, up to the
    heartbeat interval; once the key is right again, the search runs."""
    search_id = store.create(SPEC).id
    job_queue.client.set(job_queue.members, "not a set")
    a = make("a", backoff_seconds=2.0)
    assert [a.safe_turn() for _ in range(4)] == [2.0, 4.0, HEARTBEAT, HEARTBEAT]
    job_queue.client.delete(job_queue.members)
    assert a.safe_turn() == 0.0
    [driver] = launcher.launched
    assert driver.search_id == search_id and driver.run_to_end() == 0
    a.safe_turn()
    assert a.running == {}
    assert_undisturbed(store, search_id)


class RayJobsDown:
    """Drivers launched through a Ray Jobs API that drops the connection: the first launch,
    and the first status reads of each driver, fail as Ray's client fails."""

    def __init__(self, launcher: ScriptedLauncher, *, launches: int, reads: int) -> None:
        self.launcher, self.launches, self.reads = launcher, launches, reads

    def launch(self, search_id: str, fence: Fence) -> LocalProcess:
        if self.launches > 0:
            self.launches -= 1
            raise requests.exceptions.ConnectionError("Connection aborted.")
        driver = self.launcher.launch(search_id, fence)
        reads, real = [self.reads], driver.exit_status

        def exit_status() -> int | None:
            if reads[0] > 0:
                reads[0] -= 1
                raise requests.exceptions.ConnectionError("Connection refused")
            return real()

        driver.exit_status = exit_status  # type: ignore[method-assign]
        return driver


@BACKENDS
def test_a_dispatcher_survives_a_ray_jobs_api_that_drops_connections(
    store: SearchStore,
    job_queue: JobQueue,
    launcher: ScriptedLauncher,
    make: Callable[..., Dispatcher],
) -> None:
    """``run`` in a thread, as ``segnas worker`` runs it: the launch fails (the entry is
    claimed again once idle a lease long), the driver's status cannot be read for a while;
    the loop goes on and the search ends once."""
    a = make(
        "a",
        launch=RayJobsDown(launcher, launches=1, reads=3),
        clock=time.monotonic,  # this one runs in real time, as segnas worker does
        lease_seconds=1.0,
        heartbeat_seconds=0.2,
        reconcile_seconds=0.5,
        backoff_seconds=0.05,
    )
    search_id = queued(store, job_queue)
    stop = threading.Event()
    thread = threading.Thread(target=a.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for("a driver", lambda: bool(launcher.launched))
        assert launcher.launched[0].run_to_end() == 0
        wait_for("the search to be settled", lambda: not a.running)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert len(launcher.launched) == 1 and store.get(search_id).attempts == 2
    assert_undisturbed(store, search_id)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_the_ray_jobs_client_gives_up_on_a_head_that_does_not_answer() -> None:
    """A head that accepts the connection and never answers: without a timeout, Ray's client
    (and the dispatcher's loop with it) would wait forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises((requests.exceptions.Timeout, ConnectionError)):
            jobs_client(address, timeout_seconds=0.5)
