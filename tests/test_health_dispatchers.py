"""``/healthz`` and the dispatchers' heartbeats in Redis: a service that expects dispatchers is
degraded (503) while none of them has a live heartbeat; one that does not says nothing of them.
Against the real app, database and Redis, and a real ``Dispatcher`` turning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jobqueue import DispatcherHeartbeats, JobQueue
from segnas.commands.serve import expect_dispatchers
from service.app import create_app
from service.settings import EXPECT_DISPATCHERS_ENV, Settings
from storage.searches import SearchStore
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.launchers import LocalLauncher

NO_BEAT = {"alive": 0, "last_heartbeat_seconds": None}


@pytest.fixture
def expecting(store: SearchStore, job_queue: JobQueue, tmp_path: Path) -> Iterator[TestClient]:
    """The API of a service whose searches are to be run by dispatchers."""
    settings = Settings(
        data_dir=tmp_path,
        data_roots=(tmp_path / "data",),
        allowed_hosts=("testserver",),
        expect_dispatchers=True,
    )
    with TestClient(create_app(settings, store=store, queue=job_queue)) as client:
        yield client


def test_healthz_is_degraded_until_a_dispatcher_beats_and_again_after_it_stops(
    expecting: TestClient, store: SearchStore, job_queue: JobQueue, tmp_path: Path
) -> None:
    health = expecting.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {
        "status": "degraded",
        "database": "ok",
        "redis": "ok",
        "dispatchers": NO_BEAT,
    }
    config = DispatcherConfig(name="d", poll_ms=10, lease_seconds=30, heartbeat_seconds=5)
    dispatcher = Dispatcher(store, job_queue, LocalLauncher(tmp_path / "logs"), config)
    dispatcher.turn()
    health = expecting.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert health.json()["dispatchers"]["alive"] == 1
    assert 0 <= health.json()["dispatchers"]["last_heartbeat_seconds"] < 30
    dispatcher.shutdown()
    health = expecting.get("/healthz")
    assert health.status_code == 503 and health.json()["dispatchers"] == NO_BEAT


def test_a_turn_that_fails_records_no_heartbeat(
    expecting: TestClient, store: SearchStore, job_queue: JobQueue, tmp_path: Path
) -> None:
    """A dispatcher whose every turn fails dispatches nothing: it does not count as alive."""
    store.create({"seed": 0})
    job_queue.client.set(job_queue.members, "not a set")  # its reconciliation fails
    config = DispatcherConfig(name="d", poll_ms=10)
    dispatcher = Dispatcher(store, job_queue, LocalLauncher(tmp_path / "logs"), config)
    assert dispatcher.safe_turn() > 0
    assert expecting.get("/healthz").json()["dispatchers"] == NO_BEAT


def test_a_heartbeat_lapses_by_itself(job_queue: JobQueue) -> None:
    beats = DispatcherHeartbeats(job_queue)
    beats.beat("gone", ttl_seconds=30)
    left = job_queue.client.pttl(beats.key("gone"))
    assert 0 < left <= 30_000  # Redis expires it without anyone's help
    assert beats.seen().alive == 1
    beats.forget("gone")
    assert beats.seen().alive == 0 and beats.seen().newest_seconds is None


def test_a_service_that_expects_no_dispatchers_does_not_report_them(api: TestClient) -> None:
    health = api.get("/healthz")
    assert health.status_code == 200 and "dispatchers" not in health.json()


def test_serve_with_dispatchers_expects_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXPECT_DISPATCHERS_ENV, "0")  # undone after the test: what serve sets too
    monkeypatch.delenv(EXPECT_DISPATCHERS_ENV)
    expect_dispatchers(0)
    assert not Settings.from_env().expect_dispatchers
    expect_dispatchers(2)
    assert Settings.from_env().expect_dispatchers
    monkeypatch.setenv(EXPECT_DISPATCHERS_ENV, "0")  # the operator's word wins
    expect_dispatchers(2)
    assert not Settings.from_env().expect_dispatchers
