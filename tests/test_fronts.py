"""The size front: the samples no other beats on both reward and size, read in one aggregate."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import assert_problem, sample, store_of, submit

from searchspec.spec import load_search_spec
from storage.fronts import staircase
from storage.searches import ResultRecord, SearchStore
from workers.retrain_jobs import RetrainSettings, search_jobs, spread

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def test_the_staircase_keeps_what_nothing_smaller_beats() -> None:
    pairs = [(30, 0.5), (10, 0.2), (20, 0.2), (20, 0.4), (40, 0.45), (10, 0.1), (50, 0.9)]
    assert staircase(pairs) == [1, 3, 0, 6]  # (10 .2), (20 .4), (30 .5), (50 .9)
    assert staircase([]) == []
    assert staircase([(5, 0.3), (5, 0.3)]) == [0]  # equal pairs: the first


def test_the_front_of_a_search_is_its_best_reward_at_each_size(api: TestClient) -> None:
    search_id = submit(api)["id"]
    sized = [  # (step, index, params, flops, reward)
        (0, 0, 3000, 900, 0.50), (0, 1, 1000, 300, 0.20), (0, 2, 2000, 600, 0.40),
        (1, 0, 2000, 600, 0.40), (1, 1, 4000, 100, 0.45), (1, 2, 5000, 1500, 0.90),
    ]  # fmt: skip
    rows = [
        sample(0, step, i, reward=r).model_copy(update={"params": p, "flops": f, "arch": [i]})
        for step, i, p, f, r in sized
    ]
    store_of(api).add_samples(search_id, [*rows, sample(0, 2, 0, reward=0.99)])  # unsized
    url = f"/searches/{search_id}/front"
    front = api.get(url).json()
    assert front["cost"] == "params" and front["samples"] == 6
    got = [(p["cost"], p["reward"]) for p in front["points"]]
    assert got == [(1000, 0.2), (2000, 0.4), (3000, 0.5), (5000, 0.9)]
    first_2000 = front["points"][1]  # stored twice: the first of them
    assert (first_2000["epoch"], first_2000["arch"]) == (0, [2])
    by_flops = api.get(url, params={"cost": "flops"}).json()["points"]
    assert [(p["cost"], p["reward"]) for p in by_flops] == [(100, 0.45), (900, 0.5), (1500, 0.9)]
    assert api.get(url, params={"phase": "derive"}).json() == {
        "cost": "params", "samples": 0, "points": []
    }  # fmt: skip
    assert_problem(api.get(url, params={"cost": "latency"}), 422, "cost")
    assert api.get("/searches/nope/front").status_code == 404


def test_a_kept_front_answer_follows_new_samples(api: TestClient) -> None:
    """The front's answer is kept while nothing changes; a sample added since is in the next
    answer (samples are written without touching the search's row)."""
    search_id = submit(api)["id"]
    store = store_of(api)
    first = sample(0, 0, 0, reward=0.5).model_copy(update={"params": 3000, "arch": [0]})
    store.add_samples(search_id, [first])
    url = f"/searches/{search_id}/front"
    assert api.get(url).json() == api.get(url).json()  # the kept answer, the same
    smaller = sample(0, 1, 0, reward=0.6).model_copy(update={"params": 1000, "arch": [1]})
    store.add_samples(search_id, [smaller])
    front = api.get(url).json()
    assert front["samples"] == 2
    assert [(p["cost"], p["reward"]) for p in front["points"]] == [(1000, 0.6)]


def test_spread_takes_the_ends_and_evenly_between() -> None:
    assert spread(list(range(10)), 3) == [0, 4, 9]  # 4.5 rounds to even
    assert spread(list(range(10)), 2) == [0, 9]
    assert spread([1, 2], 5) == [1, 2]
    assert spread(list(range(10)), 1) == [9]  # one: the best of the front


def test_retrain_pareto_adds_architectures_spread_along_the_front(store: SearchStore) -> None:
    spec = load_search_spec(TINY)
    search_id = store.create(spec.model_dump(mode="json"), name="front").id
    store.mark_running(search_id)
    rows = [  # rewards rise with the size: every sample is on the front
        sample(0, 0, i, reward=0.1 * (i + 1)).model_copy(update={"params": 1000 * (i + 1)})
        for i in range(5)
    ]
    # the derive phase's pick: smaller than 3,000 but beaten by the 2,000 sample, off the front
    derive = sample(spec.epochs, 0, 0, phase="derive", reward=0.15).model_copy(
        update={"arch": [1, 1, 1], "params": 2500}
    )
    store.add_samples(search_id, [*rows, derive])
    store.set_result(
        search_id, ResultRecord(arch=[1, 1, 1], reward=0.15, metrics={}, params=2500, candidates=1)
    )
    store.mark_finished(search_id, "succeeded")
    _, jobs = search_jobs(store, search_id, RetrainSettings(top_k=1, pareto=3))
    targets = [(j.targets[0].source, j.targets[0].rank, j.arch) for j in jobs]
    assert targets[0] == ("enas", 0, [1, 1, 1])
    front = [(s, r, a) for s, r, a in targets if s == "pareto"]
    assert front == [("pareto", 0, [0, 0, 0]), ("pareto", 1, [0, 0, 2]), ("pareto", 2, [0, 0, 4])]
    assert [j.targets[0].shared_score for j in jobs[1:]] == pytest.approx([0.1, 0.3, 0.5])
