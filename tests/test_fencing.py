"""Driver writes fenced by their lease, and leases timed by the database's clock.

On SQLite and PostgreSQL: a driver whose lease another dispatcher took over writes nothing
more (no rewind of its successor's rows, no unique-key clash), whatever the dispatchers'
own clocks say; the real ``SearchDriver`` (on a local Ray) stops at its next write, and its
successor ends the search with exactly the rows of an undisturbed one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from lease_clock import LEASE, SkewedDatetime, make_stale
from scripted_driver import EPOCHS, ScriptedSearch, _sample, rows, undisturbed_rows

import storage.models
from searchspec.spec import load_search_spec
from storage.leases import Claim, Fence, LeaseLostError, SearchLeases, database_now
from storage.searches import CheckpointRecord, EpochRecord, ResultRecord, SearchStore
from workers.driver import SearchDriver, SearchProgress

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def take_over(store: SearchStore, search_id: str) -> tuple[Fence, Fence]:
    """Dispatcher a claims the search, goes silent, b takes it over: their two fences."""
    leases = SearchLeases(store, lease_seconds=LEASE)
    assert leases.claim(search_id, "a") is Claim.TAKEN
    first = Fence("a", store.get(search_id).attempts)
    make_stale(store, search_id)
    assert leases.claim(search_id, "b") is Claim.TAKEN
    return first, Fence("b", store.get(search_id).attempts)


def snapshot(store: SearchStore, search_id: str) -> tuple[Any, ...]:
    return (store.get(search_id), rows(store, search_id))


def driver_writes(store: SearchStore, search_id: str) -> dict[str, Callable[[Fence], None]]:
    epoch = EpochRecord(
        epoch=0, train_loss=1, shared_steps=1, lr=0.1, controller_entropy=None,
        mean_reward=None, baseline=None, seconds=1,
    )  # fmt: skip
    result = ResultRecord(arch=[1], reward=0.5, metrics={}, params=1)
    return {
        "mark_running": lambda f: store.mark_running(search_id, fence=f),
        "update_progress": lambda f: store.update_progress(search_id, {"epoch": 0}, fence=f),
        "add_samples": lambda f: store.add_samples(
            search_id, [_sample("controller", 0, 0, 0)], fence=f
        ),
        "add_epoch": lambda f: store.add_epoch(search_id, epoch, fence=f),
        "add_checkpoint": lambda f: store.add_checkpoint(
            search_id, CheckpointRecord(epoch=0, path="x", bytes=1), fence=f
        ),
        "set_result": lambda f: store.set_result(search_id, result, fence=f),
        "rewind": lambda f: store.rewind(search_id, -1, fence=f),
        "mark_finished": lambda f: store.mark_finished(search_id, "succeeded", fence=f),
    }


def test_every_driver_write_checks_the_lease(store: SearchStore) -> None:
    search_id = store.create({"seed": 0}).id
    first, second = take_over(store, search_id)
    for name, write in driver_writes(store, search_id).items():
        before = snapshot(store, search_id)
        with pytest.raises(LeaseLostError, match="taken over"):
            write(first)
        assert snapshot(store, search_id) == before, f"{name} wrote under a lost lease"
        write(second)  # the holder's write goes through
    assert store.get(search_id).status == "succeeded"


def test_a_fenced_write_leaves_the_revision_to_the_row_writes(store: SearchStore) -> None:
    """The fence's check changes nothing: an insert does not give the search a new ETag."""
    search_id = store.create({"seed": 0}).id
    leases = SearchLeases(store)
    leases.claim(search_id, "a")
    fence = Fence("a", 1)
    revision = store.revision(search_id)
    store.add_samples(search_id, [_sample("controller", 0, 0, 0)], fence=fence)
    assert store.revision(search_id) == revision
    store.update_progress(search_id, {"epoch": 0}, fence=fence)
    assert store.revision(search_id) == revision + 1


def test_a_driver_that_lost_its_lease_cannot_rewind_or_clash_with_its_successor(
    store: SearchStore,
) -> None:
    """Driver a goes silent inside epoch 1; b resumes from a's checkpoint of epoch 0 and runs
    epoch 1. a wakes up: its writes of epoch 1 (before fencing, a unique-key clash) and its
    rewind (which deleted b's rows) are refused, and b ends the search with the rows of an
    undisturbed one."""
    search_id = store.create({"seed": 0}).id
    leases = SearchLeases(store, lease_seconds=LEASE)
    assert leases.claim(search_id, "a") is Claim.TAKEN
    a = ScriptedSearch(store, search_id, Fence("a", store.get(search_id).attempts))
    a.start()
    a.epoch(0)
    store.add_samples(search_id, [_sample("controller", 1, 0, i) for i in range(4)], fence=a.fence)
    make_stale(store, search_id)
    assert leases.claim(search_id, "b") is Claim.TAKEN
    b = ScriptedSearch(store, search_id, Fence("b", store.get(search_id).attempts))
    assert b.start() == 1  # a's rows of epoch 1 are rewound
    b.epoch(1)
    before = snapshot(store, search_id)
    for stale_write in (lambda: a.epoch(1), lambda: store.rewind(search_id, 0, fence=a.fence)):
        with pytest.raises(LeaseLostError):
            stale_write()
        assert snapshot(store, search_id) == before
    for epoch in range(2, EPOCHS):
        b.epoch(epoch)
    b.finish()
    assert rows(store, search_id) == undisturbed_rows(store)


@pytest.mark.parametrize(
    ("a_off", "b_off"), [(0, LEASE + 1), (-(LEASE + 1), 0)], ids=["b-ahead", "a-behind"]
)
def test_a_lease_is_alive_by_the_databases_clock_not_the_dispatchers(
    store: SearchStore, monkeypatch: pytest.MonkeyPatch, a_off: int, b_off: int
) -> None:
    """Dispatcher a renews its lease; a moment later b, whose clock is a lease ahead of a's
    (either way round), finds the lease held and the search no orphan."""
    search_id = store.create({"seed": 0}).id
    leases = SearchLeases(store, lease_seconds=LEASE)
    monkeypatch.setattr(storage.models, "datetime", SkewedDatetime)

    def clock_off_by(seconds: int) -> None:
        monkeypatch.setattr(SkewedDatetime, "offset", timedelta(seconds=seconds))
        off = storage.models.utcnow() - datetime.now(UTC)
        assert abs(off - timedelta(seconds=seconds)) < timedelta(seconds=1)  # it is in effect

    clock_off_by(a_off)
    assert leases.claim(search_id, "a") is Claim.TAKEN
    assert leases.heartbeat("a", [search_id]) == [search_id]
    clock_off_by(b_off)
    assert leases.claim(search_id, "b") is Claim.HELD
    assert leases.orphans() == []
    with store._session() as s:
        now = database_now(s)
    assert abs(store.get(search_id).heartbeat_at - now) < timedelta(seconds=LEASE / 2)


# The real driver, on a local Ray


def tiny_spec() -> Any:
    return load_search_spec(TINY, {"epochs": 2})


def sample_rows(store: SearchStore, search_id: str) -> list[tuple[Any, ...]]:
    return [
        (s.phase, s.epoch, s.step, s.index, tuple(s.arch), s.reward, s.miou, s.policy_version)
        for s in store.samples(search_id)
    ]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory, local_ray: None) -> dict[str, Any]:
    """The tiny search run once from start to end by one unfenced driver."""
    from storage.migrate import upgrade

    tmp = tmp_path_factory.mktemp("undisturbed")
    url = f"sqlite:///{tmp / 'segnas.db'}"
    upgrade(url)
    store = SearchStore(url)
    try:
        spec = tiny_spec()
        search_id = store.create(spec.model_dump(mode="json")).id
        SearchDriver(spec, store=store, checkpoint_dir=tmp / "ckpt").run(search_id)
        return {
            "samples": sample_rows(store, search_id),
            "epochs": [e.epoch for e in store.epochs(search_id)],
            "result": store.result(search_id),
        }
    finally:
        store.close()


def test_the_driver_stops_at_its_first_write_after_a_takeover_and_its_successor_finishes(
    store: SearchStore, tmp_path: Path, undisturbed: dict[str, Any]
) -> None:
    spec = tiny_spec()
    search_id = store.create(spec.model_dump(mode="json")).id
    leases = SearchLeases(store, lease_seconds=LEASE)
    assert leases.claim(search_id, "a") is Claim.TAKEN
    first = Fence("a", store.get(search_id).attempts)
    successor: list[Fence] = []
    seen: list[tuple[Any, ...]] = []

    def take_over_mid_epoch(p: SearchProgress) -> None:
        """After a's first controller step of epoch 1, b takes over: it rewinds to a's
        checkpoint of epoch 0 and writes the step a is about to write."""
        if successor or (p.epoch, p.phase, p.step) != (1, "controller", 1):
            return
        make_stale(store, search_id)
        assert leases.claim(search_id, "b") is Claim.TAKEN
        second = Fence("b", store.get(search_id).attempts)
        store.rewind(search_id, 0, fence=second)
        store.add_samples(
            search_id, [_sample("controller", 1, 1, i) for i in range(4)], fence=second
        )
        successor.append(second)
        seen.append(snapshot(store, search_id))

    checkpoints = tmp_path / "ckpt"
    a = SearchDriver(
        spec,
        store=store,
        checkpoint_dir=checkpoints,
        on_progress=take_over_mid_epoch,
        interrupted_status=None,
        fence=first,
    )
    with pytest.raises(LeaseLostError):
        a.run(search_id)
    assert successor, "the takeover never happened"
    assert snapshot(store, search_id) == seen[0]  # a wrote nothing after it, not even failed
    assert a.replicas == [] and a.controller is None  # and let its actors go

    b = SearchDriver(
        spec, store=store, checkpoint_dir=checkpoints, interrupted_status=None, fence=successor[0]
    )
    b.run(search_id)
    record = store.get(search_id)
    assert record.status == "succeeded", record.error
    assert sample_rows(store, search_id) == undisturbed["samples"]
    assert [e.epoch for e in store.epochs(search_id)] == undisturbed["epochs"]
    assert store.result(search_id) == undisturbed["result"]
