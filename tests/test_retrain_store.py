"""``RetrainStore`` on every database backend: save, replace, order, unknown searches."""

from __future__ import annotations

import pytest

from storage.retrains import RetrainRecord, RetrainStore
from storage.searches import SearchNotFoundError, SearchStore


def record(arch: list[int], *, source: str = "enas", rank: int = 0, miou: float = 0.5):
    return RetrainRecord(
        source=source,
        rank=rank,
        arch=arch,
        shared_score=None if source == "random" else miou + 0.1,
        status="succeeded",
        epochs=3,
        params=1234,
        accuracy=0.9,
        mean_precision=0.8,
        mean_recall=0.7,
        miou=miou,
        miou_plus=miou + 0.05,
        val={"miou": miou},
        config={"epochs": 3},
        weights_path="/tmp/w.pt",
        error=None,
        seconds=1.5,
    )


def test_retrains_are_listed_enas_by_rank_then_random(store: SearchStore) -> None:
    search = store.create({"epochs": 1})
    retrains = RetrainStore(store)
    retrains.save(
        search.id,
        [record([2, 2], rank=1), record([0, 1], source="random"), record([5, 5], rank=0)],
    )
    listed = retrains.list(search.id)
    assert [(r.source, r.rank, r.arch) for r in listed] == [
        ("enas", 0, [5, 5]),
        ("enas", 1, [2, 2]),
        ("random", 0, [0, 1]),
    ]
    assert all(r.search_id == search.id and r.created_at.tzinfo for r in listed)
    assert listed[0].shared_score == pytest.approx(0.6)


def test_retraining_an_architecture_again_replaces_its_row(store: SearchStore) -> None:
    search = store.create({"epochs": 1})
    retrains = RetrainStore(store)
    retrains.save(search.id, [record([1, 2], miou=0.4), record([3, 3], rank=1)])
    retrains.save(search.id, [record([1, 2], miou=0.7)])
    listed = retrains.list(search.id)
    assert [(r.arch, r.miou) for r in listed] == [([1, 2], 0.7), ([3, 3], 0.5)]
    # The same architecture as a random baseline is another row.
    retrains.save(search.id, [record([1, 2], source="random", miou=0.2)])
    assert len(retrains.list(search.id)) == 3


def test_retrains_of_an_unknown_search_are_refused(store: SearchStore) -> None:
    retrains = RetrainStore(store)
    with pytest.raises(SearchNotFoundError):
        retrains.list("f" * 32)
    with pytest.raises(SearchNotFoundError):
        retrains.save("f" * 32, [record([1])])
