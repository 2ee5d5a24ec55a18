"""A dispatcher that dies leaves its Ray Job running: its successor stops it before it submits
its own. Against a real local Ray head (``test_ray_jobs.ray_head``), real drivers, SQLite and
the embedded Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lease_clock import make_stale
from test_ray_jobs import ray_head  # noqa: F401 - the module's Ray head

from jobqueue import JobQueue
from searchspec.spec import load_search_spec
from storage.searches import SearchStore
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.launchers import SEARCH_METADATA, RayJobLauncher

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
EPOCHS = 3


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.5)


def turned(dispatcher: Dispatcher) -> Dispatcher:
    dispatcher.safe_turn()
    return dispatcher


def jobs_of(launcher: RayJobLauncher, search_id: str) -> dict[str, str]:
    """The search's Ray Jobs: submission id -> status."""
    return {
        job.submission_id: str(job.status.value)
        for job in launcher.client.list_jobs()
        if (job.metadata or {}).get(SEARCH_METADATA) == search_id
    }


@pytest.mark.parametrize(("db_url", "redis_url"), [("sqlite", "embedded")], indirect=True)
def test_the_ray_job_of_a_dead_dispatcher_is_stopped_before_another_is_submitted(
    ray_head: dict[str, str],  # noqa: F811
    store: SearchStore,
    job_queue: JobQueue,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {
        "DATABASE_URL": db_url,
        "SEGNAS_DATA_DIR": str(tmp_path / "data"),
        "RAY_AUTH_MODE": "disabled",
    }

    def dispatcher(name: str, **config: Any) -> Dispatcher:
        launcher = RayJobLauncher(ray_head["RAY_ADDRESS"], env=env)
        settings = DispatcherConfig(name=name, poll_ms=200, heartbeat_seconds=1, **config)
        return Dispatcher(store, job_queue, launcher, settings)

    spec = load_search_spec(TINY, {"epochs": EPOCHS}).model_dump(mode="json")
    search_id = store.create(spec).id
    job_queue.enqueue(search_id)
    first = dispatcher("a", lease_seconds=30)
    first.turn()
    assert list(first.running) == [search_id]
    wait_for("a checkpoint", lambda: store.last_checkpoint(search_id) is not None)
    # The first dispatcher dies here: it never turns again, its Ray Job runs on.
    make_stale(store, search_id)
    assert jobs_of(first.launcher, search_id) == {f"segnas-{search_id}-1": "RUNNING"}

    second = dispatcher("b", lease_seconds=4)
    wait_for("the second dispatcher to take the search", lambda: bool(turned(second).running))
    jobs = jobs_of(second.launcher, search_id)
    assert set(jobs) == {f"segnas-{search_id}-1", f"segnas-{search_id}-2"}
    # It found the first job running and stopped it (its fence would stop it too, later).
    assert f"stopping segnas-{search_id}-1, an earlier driver of search {search_id}" in caplog.text
    wait_for(
        "the first Ray Job to end",
        lambda: (
            jobs_of(second.launcher, search_id)[f"segnas-{search_id}-1"] in ("STOPPED", "FAILED")
        ),
    )
    wait_for("the search to end", lambda: not turned(second).running)

    record = store.get(search_id)
    assert record.status == "succeeded", record.error
    assert record.worker is None and record.attempts == 2
    final = jobs_of(second.launcher, search_id)
    assert final[f"segnas-{search_id}-2"] == "SUCCEEDED"
    assert final[f"segnas-{search_id}-1"] in ("STOPPED", "FAILED")
    samples = store.samples(search_id)
    slots = [(s.phase, s.epoch, s.step, s.index) for s in samples]
    assert len(slots) == len(set(slots))
    assert {slot[1:] for slot in slots if slot[0] == "controller"} == {
        (e, t, i) for e in range(EPOCHS) for t in range(3) for i in range(4)
    }
    assert len([s for s in samples if s.phase == "derive"]) == 7
    assert [e.epoch for e in store.epochs(search_id)] == list(range(EPOCHS))
    assert store.result(search_id) is not None
