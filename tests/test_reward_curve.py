"""The reward curve from its per-step aggregate: written with the samples, rewound with them,
read incrementally (``after=``) and downsampled (``max_points=``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from test_api import assert_problem, sample, store_of, submit

from storage.migrate import downgrade, upgrade
from storage.models import Sample, utcnow
from storage.searches import SearchStore


def steps(epochs: int, per_epoch: int, batch: int = 2) -> list:
    """Controller samples, reward rising with the step; each step's batch alone."""
    return [
        [sample(e, s, i, reward=round(0.01 * (e * per_epoch + s) + 0.001 * i, 6))
         for i in range(batch)]
        for e in range(epochs) for s in range(per_epoch)
    ]  # fmt: skip


def test_the_page_asks_only_for_what_is_new_after_its_cursor(api: TestClient) -> None:
    search_id = submit(api)["id"]
    url = f"/searches/{search_id}/rewards"
    batches = steps(2, 3)
    for batch in batches[:4]:
        store_of(api).add_samples(search_id, batch)
    first = api.get(url).json()
    assert [p["index"] for p in first["points"]] == [0, 1, 2, 3] and first["next"] == "1.0"
    assert first["steps"] == 4
    for batch in batches[4:]:
        store_of(api).add_samples(search_id, batch)
    more = api.get(url, params={"after": first["next"]}).json()
    assert [(p["index"], p["epoch"], p["step"]) for p in more["points"]] == [(4, 1, 1), (5, 1, 2)]
    whole = api.get(url).json()["points"]
    assert first["points"] + more["points"] == whole  # best so far carried over the cursor
    assert api.get(url, params={"after": more["next"]}).json()["points"] == []
    assert api.get(url, params={"after": more["next"]}).json()["next"] == more["next"]


def test_a_long_curve_is_downsampled_to_buckets_that_keep_the_totals(api: TestClient) -> None:
    search_id = submit(api)["id"]
    for batch in steps(5, 20):  # 100 steps of 2 samples
        store_of(api).add_samples(search_id, batch)
    url = f"/searches/{search_id}/rewards"
    full = api.get(url).json()
    assert not full["downsampled"] and len(full["points"]) == 100
    small = api.get(url, params={"max_points": 7}).json()
    assert small["downsampled"] and small["steps"] == 100 and len(small["points"]) <= 7
    points = small["points"]
    assert sum(p["samples"] for p in points) == 200
    assert (
        points[-1]["index"] == 99 and points[-1]["best_so_far"] == full["points"][-1]["best_so_far"]
    )
    mean = sum(p["mean_reward"] * p["samples"] for p in points) / 200
    assert mean == pytest.approx(sum(p["mean_reward"] * 2 for p in full["points"]) / 200)
    assert max(p["max_reward"] for p in points) == max(p["max_reward"] for p in full["points"])


def test_a_step_written_in_two_batches_adds_up(api: TestClient) -> None:
    search_id = submit(api)["id"]
    url = f"/searches/{search_id}/rewards"
    store_of(api).add_samples(search_id, [sample(0, 0, 0, reward=0.2)])
    first = api.get(url)
    assert api.get(url).content == first.content  # unchanged: the same answer
    # The same step again, with more samples: the answer made before is not the answer now.
    store_of(api).add_samples(search_id, [sample(0, 0, 1, reward=0.6), sample(0, 0, 2, reward=0.4)])
    (point,) = api.get(url).json()["points"]
    assert point["samples"] == 3 and point["mean_reward"] == pytest.approx(0.4)
    assert point["max_reward"] == pytest.approx(0.6)


def test_bad_cursors_and_sizes_are_422(api: TestClient) -> None:
    url = f"/searches/{submit(api)['id']}/rewards"
    for name, value in [("after", "1"), ("after", "a.b"), ("after", "1.2.3"),
                        ("max_points", 0), ("max_points", 20_001)]:  # fmt: skip
        assert_problem(api.get(url, params={name: value}), 422, name)


def test_rewind_forgets_the_steps_of_the_epochs_after(store: SearchStore) -> None:
    search_id = store.create({"epochs": 3}, name="r").id
    for batch in steps(3, 2):
        store.add_samples(search_id, batch)
    store.rewind(search_id, 0)
    assert [(p.epoch, p.step) for p in store.reward_curve(search_id)] == [(0, 0), (0, 1)]


def test_the_migration_builds_the_curves_of_searches_written_before_it(db_url: str) -> None:
    upgrade(db_url, "0007")
    old = SearchStore(db_url, check_schema=False)
    try:
        search_id = old.create({"epochs": 2}, name="before").id
        rows = [sample(0, 0, i, reward=0.1 * i) for i in range(3)] + [sample(1, 0, 0, reward=0.9)]
        with old._session() as s:  # as the store wrote samples before 0008: no aggregate
            s.execute(
                insert(Sample),
                [{**r.model_dump(), "search_id": search_id, "created_at": utcnow()} for r in rows],
            )
    finally:
        old.close()
    upgrade(db_url)
    store = SearchStore(db_url)
    try:
        curve = store.reward_curve(search_id)
        assert [(p.epoch, p.samples) for p in curve] == [(0, 3), (1, 1)]
        assert curve[0].mean_reward == pytest.approx(0.1) and curve[1].best_so_far == pytest.approx(
            0.9
        )
    finally:
        store.close()
    downgrade(db_url, "0007")
