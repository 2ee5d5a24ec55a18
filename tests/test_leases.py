"""The dispatcher lease and cancel transitions, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from storage.leases import CancelOutcome, Claim, SearchLeases
from storage.models import Search, utcnow
from storage.searches import SearchStore

SPEC = {"seed": 0}


def age_heartbeat(store: SearchStore, search_id: str, seconds: float) -> None:
    """Move the search's last heartbeat ``seconds`` into the past (no sleeping in tests)."""
    with store._session() as s:
        s.execute(
            update(Search)
            .where(Search.id == search_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_one_dispatcher_takes_a_search_the_other_finds_it_held(store: SearchStore) -> None:
    leases = SearchLeases(store, lease_seconds=30)
    search_id = store.create(SPEC).id
    assert leases.claim(search_id, "a") is Claim.TAKEN
    assert leases.claim(search_id, "b") is Claim.HELD
    assert leases.claim(search_id, "a") is Claim.TAKEN  # its own lease, delivered again
    record = store.get(search_id)
    assert record.worker == "a" and record.attempts == 2


def test_a_stale_lease_is_taken_over_and_its_holder_learns_it(store: SearchStore) -> None:
    leases = SearchLeases(store, lease_seconds=30)
    search_id = store.create(SPEC).id
    leases.claim(search_id, "a")
    store.mark_running(search_id)
    age_heartbeat(store, search_id, 31)
    assert leases.orphans() == [search_id]
    assert leases.claim(search_id, "b") is Claim.TAKEN
    assert leases.heartbeat("a", [search_id]) == []  # a must stop its driver
    assert leases.heartbeat("b", [search_id]) == [search_id]
    assert leases.orphans() == []


def test_heartbeats_keep_a_lease_alive(store: SearchStore) -> None:
    leases = SearchLeases(store, lease_seconds=30)
    search_id = store.create(SPEC).id
    leases.claim(search_id, "a")
    age_heartbeat(store, search_id, 29)
    assert leases.heartbeat("a", [search_id]) == [search_id]
    age_heartbeat(store, search_id, 0)
    assert leases.claim(search_id, "b") is Claim.HELD


def test_finished_and_missing_searches_are_not_claimed(store: SearchStore) -> None:
    leases = SearchLeases(store)
    search_id = store.create(SPEC).id
    store.mark_finished(search_id, "succeeded")
    assert leases.claim(search_id, "a") is Claim.FINISHED
    assert leases.claim("0" * 32, "a") is Claim.MISSING
    assert leases.orphans() == []


def test_a_pending_cancel_without_a_driver_is_settled_by_the_claim(store: SearchStore) -> None:
    leases = SearchLeases(store, lease_seconds=30)
    search_id = store.create(SPEC).id
    leases.claim(search_id, "a")
    store.mark_running(search_id)
    assert leases.request_cancel(search_id) is CancelOutcome.CANCELLING
    age_heartbeat(store, search_id, 60)  # its dispatcher died before the driver stopped
    assert leases.claim(search_id, "b") is Claim.CANCELLED
    assert store.get(search_id).status == "cancelled"


def test_cancel_transitions(store: SearchStore) -> None:
    leases = SearchLeases(store)
    queued = store.create(SPEC).id
    assert leases.request_cancel(queued) is CancelOutcome.CANCELLED
    assert store.get(queued).status == "cancelled"
    assert leases.request_cancel(queued) is CancelOutcome.FINISHED

    running = store.create(SPEC).id
    store.mark_running(running)
    assert leases.request_cancel(running) is CancelOutcome.CANCELLING
    assert leases.request_cancel(running) is CancelOutcome.CANCELLING
    assert leases.is_cancelling(running)
    # A driver that starts (or resumes) now keeps the cancel: it stops at its first step.
    store.mark_running(running)
    assert store.get(running).status == "cancelling"

    claimed = store.create(SPEC).id
    leases.claim(claimed, "a")  # queued, but a dispatcher is launching its driver
    assert leases.request_cancel(claimed) is CancelOutcome.CANCELLING


def test_release_frees_the_lease_for_anyone(store: SearchStore) -> None:
    leases = SearchLeases(store)
    search_id = store.create(SPEC).id
    leases.claim(search_id, "a")
    leases.release(search_id, "b")  # not b's to release
    assert leases.claim(search_id, "b") is Claim.HELD
    leases.release(search_id, "a")
    assert leases.orphans() == [search_id]
    assert leases.claim(search_id, "b") is Claim.TAKEN


def test_every_write_to_a_search_adds_one_to_its_revision(store: SearchStore) -> None:
    """The revision is the API's ETag: a write that left it alone would make polls answer
    304 over a changed search. Each write of the driver, the dispatcher and the API counts."""
    leases = SearchLeases(store)
    search_id = store.create(SPEC).id
    writes = [
        lambda: leases.claim(search_id, "a"),
        lambda: store.mark_running(search_id),
        lambda: store.update_progress(search_id, {"epoch": 1, "step": 2}),
        lambda: store.update_progress(
            search_id, {"epoch": 1, "step": 2}, best_arch=[1, 2], best_reward=0.5
        ),
        lambda: leases.heartbeat("a", [search_id]),
        lambda: leases.request_cancel(search_id),
        lambda: store.rewind(search_id, -1),
        lambda: store.mark_finished(search_id, "cancelled"),
        lambda: leases.release(search_id, "a"),
    ]
    seen = [store.revision(search_id)]
    assert seen == [1] and store.get(search_id).revision == 1
    for write in writes:
        write()
        seen.append(store.revision(search_id))
    assert seen == list(range(1, len(writes) + 2))
    assert store.get(search_id).revision == seen[-1]


def test_a_queued_search_cancelled_at_once_gets_a_new_revision(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    assert SearchLeases(store).request_cancel(search_id) is CancelOutcome.CANCELLED
    assert store.revision(search_id) == 2
