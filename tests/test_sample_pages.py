"""GET /searches/{id}/architectures as the page's samples table reads it: sorted by any metric,
filtered by phase, epoch and cell, the derive phase's duplicates folded, paged by cursor."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api import all_pages, assert_problem, store_of, submit

from storage.searches import SampleRecord


def scored(
    epoch: int, step: int, index: int, arch: list[int], reward: float, phase: str = "controller"
) -> SampleRecord:
    return SampleRecord(
        phase=phase, epoch=epoch, step=step, index=index, arch=arch, reward=reward,
        accuracy=1 - reward, mean_precision=0.5, mean_recall=0.5, miou=reward,
        miou_plus=reward, policy_version=0,
    )  # fmt: skip


def populated(api: TestClient) -> tuple[str, list[SampleRecord]]:
    """A search (3 layers) with 8 controller samples over 2 epochs, rewards with ties, and a
    derive phase that scored ``[2, 2, 2]`` three times and ``[0, 1, 2]`` twice."""
    search_id = submit(api)["id"]
    rows = [
        scored(0, 0, 0, [0, 0, 0], 0.30),
        scored(0, 0, 1, [1, 0, 2], 0.50),
        scored(0, 1, 0, [2, 1, 0], 0.50),
        scored(0, 1, 1, [0, 2, 1], 0.10),
        scored(1, 0, 0, [2, 2, 2], 0.70),
        scored(1, 0, 1, [1, 1, 1], 0.50),
        scored(1, 1, 0, [0, 1, 2], 0.90),
        scored(1, 1, 1, [2, 0, 1], 0.20),
    ]
    derive = [[2, 2, 2], [0, 1, 2], [2, 2, 2], [0, 1, 2], [2, 2, 2], [1, 0, 0]]
    reward = {(2, 2, 2): 0.6, (0, 1, 2): 0.61, (1, 0, 0): 0.4}  # a duplicate scores the same
    rows += [
        scored(2, 0, i, arch, reward[tuple(arch)], phase="derive") for i, arch in enumerate(derive)
    ]
    for row in rows:  # one write each: ids in this order
        store_of(api).add_samples(search_id, [row])
    return search_id, rows


def keys(items: list[dict[str, Any]]) -> list[tuple[str, int, int, int]]:
    return [(i["phase"], i["epoch"], i["step"], i["index"]) for i in items]


def key(row: SampleRecord) -> tuple[str, int, int, int]:
    return row.phase, row.epoch, row.step, row.index


def test_sorted_pages_cover_every_sample_once_in_metric_order_ties_by_id(api: TestClient):
    search_id, rows = populated(api)
    url = f"/searches/{search_id}/architectures"
    position = {key(r): i for i, r in enumerate(rows)}  # the order of their ids
    for sort in ("reward", "accuracy"):
        for order in ("asc", "desc"):
            pages = all_pages(api, url, sort=sort, order=order, limit=3)
            assert [len(p) for p in pages] == [3, 3, 3, 3, 2]
            got = keys([i for p in pages for i in p])
            expected = sorted(
                rows, key=lambda r: (getattr(r, sort), position[key(r)]), reverse=order == "desc"
            )
            assert got == [key(r) for r in expected], (sort, order)
    # A cursor belongs to its sort order.
    first = api.get(url, params={"sort": "reward", "limit": 2}).json()
    assert first["next"] and not first["next"].isdigit()
    assert_problem(api.get(url, params={"sort": "miou", "after": first["next"]}), 422, "sort")
    assert_problem(api.get(url, params={"after": first["next"]}), 422, "sort")
    by_id = api.get(url, params={"limit": 2}).json()["next"]
    assert_problem(api.get(url, params={"sort": "reward", "after": by_id}), 422, "sort")


def test_filters_by_phase_epoch_and_cell_and_they_combine(api: TestClient):
    search_id, rows = populated(api)
    url = f"/searches/{search_id}/architectures"

    def got(**params: Any) -> list[tuple[str, int, int, int]]:
        return keys([i for p in all_pages(api, url, limit=4, **params) for i in p])

    def want(keep: Any) -> list[tuple[str, int, int, int]]:
        return [key(r) for r in rows if keep(r)]

    assert got(phase="derive") == want(lambda r: r.phase == "derive")
    assert got(phase="controller", epoch=1) == want(
        lambda r: r.phase == "controller" and r.epoch == 1
    )
    assert got(cell=2, layer=0) == want(lambda r: r.arch[0] == 2)
    assert got(cell=2) == want(lambda r: 2 in r.arch)
    assert got(cell=2, layer=2, phase="controller", sort="reward", order="desc") == [
        key(r)
        for r in sorted(rows, key=lambda r: -r.reward)  # stable: ties stay in id order
        if r.arch[2] == 2 and r.phase == "controller"
    ]
    assert got(cell=5) == []


def test_fold_counts_the_derive_phases_duplicates_once_each(api: TestClient):
    search_id, _ = populated(api)
    url = f"/searches/{search_id}/architectures"
    pages = all_pages(api, url, phase="derive", fold=True, sort="reward", order="desc", limit=2)
    folded = [(tuple(i["arch"]), i["count"], i["index"]) for p in pages for i in p]
    # Each architecture once, as its first sample, with how many samples it stands for.
    assert folded == [((0, 1, 2), 2, 1), ((2, 2, 2), 3, 0), ((1, 0, 0), 1, 5)]
    unfolded = api.get(url, params={"phase": "derive"}).json()["items"]
    assert len(unfolded) == 6 and {i["count"] for i in unfolded} == {1}


def test_bad_sample_queries_are_422_naming_the_parameter(api: TestClient):
    search_id, _ = populated(api)
    url = f"/searches/{search_id}/architectures"
    for params, word in [
        ({"sort": "latency"}, "sort"),
        ({"phase": "shared"}, "phase"),
        ({"epoch": -1}, "epoch"),
        ({"cell": -1}, "cell"),
        ({"layer": 1}, "layer"),  # a layer without a cell
        ({"cell": 1, "layer": 3}, "layer"),  # the search has 3 layers: 0 to 2
        ({"fold": True}, "fold"),  # folding is for the derive phase
        ({"fold": True, "phase": "controller"}, "fold"),
        ({"sort": "reward", "after": "s!!"}, "after"),
        ({"sort": "reward", "after": "snotbase64"}, "after"),
    ]:
        assert_problem(api.get(url, params=params), 422, word)


@pytest.mark.parametrize("size", ["params", "flops"])
def test_sizes_come_with_each_sample_and_sort_leaves_out_rows_without(
    api: TestClient, size: str
) -> None:
    search_id = submit(api)["id"]
    sized = [
        scored(0, 0, i, [i, 0, 0], 0.5).model_copy(update={size: p})
        for i, p in enumerate([3000, 1000, 2000])
    ]
    unsized = scored(0, 1, 0, [2, 2, 2], 0.5)  # a row stored before sizes were recorded
    store_of(api).add_samples(search_id, [*sized, unsized])
    url = f"/searches/{search_id}/architectures"
    assert [i[size] for i in api.get(url).json()["items"]] == [3000, 1000, 2000, None]
    pages = all_pages(api, url, sort=size, order="desc", limit=2)
    assert [i[size] for p in pages for i in p] == [3000, 2000, 1000]
