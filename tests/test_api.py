"""The REST API of ``docs/service.md`` through the real app, on every database and Redis backend.

Each test drives ``api`` (a ``TestClient`` over ``store`` and ``job_queue``); searches are put in
the state a test needs by writing to the store the way the search driver would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from jobqueue import JobQueue, redis_client
from searchspec.spec import SearchSpec, load_search_spec
from service.app import create_app
from service.pages import WEB_DIR
from service.settings import Settings
from storage.models import Search
from storage.searches import ResultRecord, SampleRecord, SearchStore
from supernet.space import CELL_NAMES

ROOT = Path(__file__).resolve().parents[1]
SPEC: dict[str, Any] = {
    "name": "t",
    "epochs": 2,
    "space": {"layers": 3, "channels": 8},
    "dataset": {
        "kind": "digits",
        "images": 50,
        "size": 24,
        "digit_size": [10, 14],
        "max_digits": 2,
    },
}
UNKNOWN_ID = "0" * 32
CLIENT_HEADERS = {"X-Requested-With": "segnas-tests"}  # as conftest's api client sends it
MAX_BODY = 64 * 1024
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PROGRESS = {"epoch": 0, "epochs": 2, "phase": "shared", "step": 3, "steps": 10, "samples": 0}


def spec(**changes: Any) -> dict[str, Any]:
    """``SPEC`` with top-level fields replaced."""
    return {**json.loads(json.dumps(SPEC)), **changes}


def submit(api: TestClient, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = api.post("/searches", json=SPEC if body is None else body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def store_of(api: TestClient) -> SearchStore:
    return api.app.state.store  # type: ignore[attr-defined,no-any-return]


def sample(
    epoch: int, step: int, index: int, *, phase: str = "controller", reward: float = 0.5
) -> SampleRecord:
    return SampleRecord(
        phase=phase,
        epoch=epoch,
        step=step,
        index=index,
        arch=[epoch, step, index],
        reward=reward,
        accuracy=0.9,
        mean_precision=0.8,
        mean_recall=0.7,
        miou=reward,
        miou_plus=reward + 0.05,
        policy_version=epoch * 10 + step,
    )


def assert_problem(response: Any, status: int, *words: str) -> None:
    """An error answer: ``status``, a JSON body whose string ``detail`` names ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, f"{word!r} not in {detail!r}"


def all_pages(api: TestClient, url: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a paged list, following ``next`` from the first."""
    pages, after = [], None
    while True:
        query = {**params, **({} if after is None else {"after": after})}
        response = api.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        after = page["next"]
        if after is None:
            return pages


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """The one folder ``api`` lets a spec's ``dataset.root`` lie in."""
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The settings of ``api``, for a second app beside it."""
    return Settings(
        data_dir=tmp_path, data_roots=(tmp_path / "data",), allowed_hosts=("testserver",)
    )


def listed_ids(api: TestClient) -> list[str]:
    return [s["id"] for s in api.get("/searches").json()["items"]]


def as_json(body: Any) -> dict[str, Any]:
    """``post`` arguments sending ``body`` as JSON the way Python writes it (httpx's ``json=``
    refuses NaN, which Python's JSON parser, and so the API's, reads)."""
    return {"content": json.dumps(body), "headers": {"Content-Type": "application/json"}}


def chunked(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """``body`` as a generator: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


# POST /searches


def test_an_empty_body_is_the_default_search(api: TestClient) -> None:
    body = submit(api, {})
    default = load_search_spec(ROOT / "configs" / "shapes.yaml")
    assert body["spec"] == default.model_dump(mode="json")
    assert body["name"] == "shapes"


def test_submit_answers_201_with_the_queued_search(api: TestClient, job_queue: JobQueue) -> None:
    response = api.post("/searches", json=SPEC)
    assert response.status_code == 201, response.text
    body = response.json()
    search_id = body["id"]
    assert len(search_id) == 32 and int(search_id, 16) >= 0
    assert response.headers["location"] == f"/searches/{search_id}"
    assert response.headers["etag"]
    assert body["status"] == "queued" and body["name"] == "t"
    assert body["progress"] is None and body["best"] is None and body["error"] is None
    assert body["started_at"] is None and body["finished_at"] is None
    assert body["spec"] == SearchSpec.model_validate(SPEC).model_dump(mode="json")
    # A default, filled in from the default search (configs/shapes.yaml).
    assert body["spec"]["shared"]["batch_size"] == 32
    assert body["spec"]["controller"]["seed"] == 0  # the seed, written into the spec
    base = f"/searches/{search_id}"
    assert body["links"] == {
        "self": base,
        "architectures": f"{base}/architectures",
        "rewards": f"{base}/rewards",
        "result": f"{base}/result",
        "cancel": f"{base}/cancel",
        "retrains": f"{base}/retrains",
        "page": base,
    }
    assert job_queue.waiting() == [search_id]

    fetched = api.get(f"/searches/{search_id}").json()
    assert fetched["spec"] == body["spec"]
    # The stored spec is itself a valid body, and means the same search.
    assert SearchSpec.model_validate(fetched["spec"]).model_dump(mode="json") == body["spec"]


def test_an_idempotent_retry_replays_the_first_search(api: TestClient, job_queue: JobQueue) -> None:
    first = api.post("/searches", json=SPEC, headers={"Idempotency-Key": "retry-1"})
    again = api.post("/searches", json=SPEC, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert listed_ids(api) == [first.json()["id"]]
    assert job_queue.waiting() == [first.json()["id"]]

    other = api.post("/searches", json=SPEC, headers={"Idempotency-Key": "retry-2"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert len(job_queue.waiting()) == 2


def test_an_idempotency_key_reused_with_another_body_is_409(
    api: TestClient, job_queue: JobQueue
) -> None:
    first = submit(api, **{"Idempotency-Key": "key-42"})
    response = api.post("/searches", json=spec(epochs=3), headers={"Idempotency-Key": "key-42"})
    assert_problem(response, 409, "key-42")
    assert listed_ids(api) == [first["id"]]
    assert job_queue.waiting() == [first["id"]]


def test_an_idempotency_key_must_be_1_to_200_printable_characters(api: TestClient) -> None:
    for key in ["k" * 201, "", "with space", "tab\there", "del\x7f", "clé".encode()]:
        response = api.post("/searches", json=SPEC, headers={"Idempotency-Key": key})
        assert_problem(response, 422, "idempotency-key")
    assert listed_ids(api) == []
    assert api.post("/searches", json=SPEC, headers={"Idempotency-Key": "k" * 200}).is_success
    assert api.post("/searches", json=SPEC, headers={"Idempotency-Key": "~!"}).is_success


BAD_SPECS = [
    pytest.param(spec(colour="red"), ["colour"], id="unknown-field"),
    pytest.param(spec(space={"layers": 3, "widht": 8}), ["space.widht"], id="unknown-nested"),
    pytest.param(
        spec(dataset={"kind": "digits", "imgs": 5}), ["dataset", "imgs"], id="unknown-in-dataset"
    ),
    pytest.param(spec(epochs="many"), ["epochs"], id="wrong-type"),
    pytest.param(spec(space=5), ["space"], id="section-not-mapping"),
    pytest.param(spec(epochs=0), ["epochs"], id="epochs-0"),
    pytest.param(spec(space={"layers": 1000}), ["space.layers"], id="layers-1000"),
    pytest.param(spec(shared={"lr": float("nan")}), ["shared.lr"], id="lr-nan"),
    pytest.param(spec(dataset={"kind": "mnist"}), ["dataset", "mnist"], id="unknown-kind"),
    pytest.param(spec(reward="loss"), ["reward"], id="unknown-reward"),
    pytest.param(spec(space={"cells": ["nope"]}), ["space", "nope"], id="unknown-cell"),
    pytest.param(
        spec(shared={"batch_size": 1}, resources={"replicas": 2}), ["batch_size"], id="cross-field"
    ),
    pytest.param([SPEC], ["body"], id="not-an-object"),
    pytest.param(None, ["body"], id="null"),
]


@pytest.mark.parametrize(("body", "words"), BAD_SPECS)
def test_a_bad_spec_is_422_naming_the_problem(
    api: TestClient, job_queue: JobQueue, body: Any, words: list[str]
) -> None:
    response = api.post("/searches", **as_json(body))
    assert_problem(response, 422, *words)
    errors = response.json()["errors"]
    assert errors and all(isinstance(e["loc"], list) and e["msg"] for e in errors)
    assert listed_ids(api) == []
    assert job_queue.waiting() == []


def test_a_body_that_is_not_json_is_4xx(api: TestClient) -> None:
    json_type = {"Content-Type": "application/json"}
    response = api.post("/searches", content=b'{"name": "t",', headers=json_type)
    assert_problem(response, 422, "not valid JSON")
    for content in [b"{'name': 't'}", b"", b"\xff\xfe{}", b"[" * 20_000 + b"]" * 20_000]:
        response = api.post("/searches", content=content, headers=json_type)
        assert 400 <= response.status_code < 500, (content[:20], response.text)
        assert isinstance(response.json()["detail"], str)
    assert listed_ids(api) == []


def test_a_body_that_is_not_sent_as_json_is_415(api: TestClient) -> None:
    body = json.dumps(SPEC).encode()
    for content_type in ["text/plain", "application/x-yaml", "multipart/form-data", None]:
        headers = {} if content_type is None else {"Content-Type": content_type}
        assert_problem(api.post("/searches", content=body, headers=headers), 415, "JSON")
    assert listed_ids(api) == []
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert api.post("/searches", content=body, headers=with_charset).status_code == 201


def big_body() -> bytes:
    return json.dumps(spec(name="x" * (MAX_BODY + 1))).encode()


def test_a_body_over_64_kib_is_413(api: TestClient) -> None:
    response = api.post(
        "/searches", content=big_body(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "bytes")
    assert listed_ids(api) == []


def test_a_chunked_body_over_64_kib_is_413(api: TestClient) -> None:
    response = api.post(
        "/searches", content=chunked(big_body()), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "bytes")
    assert listed_ids(api) == []


def test_a_chunked_body_under_the_limit_is_taken(api: TestClient) -> None:
    json_type = {"Content-Type": "application/json"}
    small = api.post("/searches", content=chunked(json.dumps(SPEC).encode(), 16), headers=json_type)
    assert "content-length" not in small.request.headers
    assert small.status_code == 201, small.text


def folder_spec(root: str) -> dict[str, Any]:
    return spec(dataset={"kind": "folder", "root": root, "size": 32})


def test_a_dataset_root_outside_the_data_roots_is_422(api: TestClient, data_root: Path) -> None:
    outside = data_root.parent / "outside"
    outside.mkdir()
    (data_root / "link").symlink_to(outside, target_is_directory=True)
    for root in [
        "/etc",
        f"{data_root}/../outside",  # .. climbs out
        f"{data_root}/link/set",  # a link inside that points outside
        f"{data_root}-sibling/set",  # a prefix of the name is not the folder
        "relative/set",  # relative to the API's working folder
        "~nosuchuser/set",  # a home folder that does not exist
        "~/set",
    ]:
        response = api.post("/searches", json=folder_spec(root))
        assert_problem(response, 422, "dataset.root", "outside", "SEGNAS_DATA_ROOTS")
        assert str(data_root) not in response.json()["detail"].replace(root, "")
    for root in [f"{data_root}/a\x00b", f"{data_root}/a\nb"]:
        response = api.post("/searches", json=folder_spec(root))
        assert_problem(response, 422, "control characters")
    assert listed_ids(api) == []


def make_folder_dataset(root: Path) -> None:
    """What a folder data set's loader looks for first: classes.txt and images/."""
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nthing\n")


def test_a_dataset_root_inside_the_data_roots_is_accepted(api: TestClient, data_root: Path) -> None:
    make_folder_dataset(data_root)
    make_folder_dataset(data_root / "set")
    (data_root / "a").mkdir()
    for root in [str(data_root), f"{data_root}/set", f"{data_root}/a/../set"]:
        body = submit(api, folder_spec(root))
        assert body["spec"]["dataset"] == {
            "kind": "folder",
            "root": root,
            "size": 32,
            "augment": True,
            "scale": [0.5, 2.0],
            "flip": True,
            "seed": 0,
        }
    assert len(listed_ids(api)) == 3


def test_a_root_that_is_not_a_data_set_is_422_at_submission(
    api: TestClient, data_root: Path
) -> None:
    """Inside the allowed folders but not what the loader needs: said now, not by a search
    that fails once it has started."""
    (data_root / "empty").mkdir()
    (data_root / "no-images").mkdir()
    (data_root / "no-images" / "classes.txt").write_text("background\nthing\n")
    for root, words in [
        (f"{data_root}/missing", ("does not exist",)),
        (f"{data_root}/empty", ("classes.txt", "is missing")),
        (f"{data_root}/no-images", ("images", "is missing")),
    ]:
        response = api.post("/searches", json=folder_spec(root))
        assert_problem(response, 422, "dataset.root: ", *words)
    voc = spec(dataset={"kind": "voc", "root": f"{data_root}/empty"})
    response = api.post("/searches", json=voc)
    assert_problem(response, 422, "dataset.root: ", "is not a PASCAL VOC 2012 folder")
    assert listed_ids(api) == []


# GET /searches


def test_the_list_is_newest_first_and_pages_walk_every_search_once(api: TestClient) -> None:
    created = [submit(api, spec(name=f"s{i}"))["id"] for i in range(7)]
    pages = all_pages(api, "/searches", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [s["id"] for p in pages for s in p] == created[::-1]
    assert [s["name"] for s in pages[0]] == ["s6", "s5", "s4"]
    assert listed_ids(api) == created[::-1]
    # A last page that is full has no `next`: no empty page follows.
    assert [len(p) for p in all_pages(api, "/searches", limit=7)] == [7]


def test_pages_walk_searches_created_at_the_same_instant_once(api: TestClient) -> None:
    created = {submit(api)["id"] for _ in range(5)}
    with store_of(api).engine.begin() as connection:  # a coarse clock: one instant for all
        connection.execute(update(Search).values(created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    pages = all_pages(api, "/searches", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    walked = [s["id"] for p in pages for s in p]
    assert walked == sorted(created, reverse=True)


def test_the_list_finds_names_by_a_part_of_them(api: TestClient) -> None:
    names = ["VOC base", "voc-wide", "digits", "100%_done", "100 percent"]
    ids = {name: submit(api, spec(name=name))["id"] for name in names}
    found = lambda q: [s["name"] for s in api.get("/searches", params={"q": q}).json()["items"]]  # noqa: E731
    assert found("voc") == ["voc-wide", "VOC base"]  # any case, newest first
    assert found("%_") == ["100%_done"]  # % and _ are themselves, not wildcards
    assert found("nothing like it") == []
    pages = all_pages(api, "/searches", limit=1, q="VOC")
    assert [s["id"] for p in pages for s in p] == [ids["voc-wide"], ids["VOC base"]]
    for bad in ("", "x" * 101, "a\x00b"):
        assert_problem(api.get("/searches", params={"q": bad}), 422, "q")


def test_the_list_filters_by_status(api: TestClient) -> None:
    ids = [submit(api)["id"] for _ in range(5)]
    for search_id in ids[1:3]:
        assert api.post(f"/searches/{search_id}/cancel").status_code == 202
    store_of(api).mark_running(ids[3])

    def listed(status: str, **params: Any) -> list[str]:
        pages = all_pages(api, "/searches", status=status, **params)
        return [s["id"] for p in pages for s in p]

    assert listed("cancelled") == [ids[2], ids[1]]
    assert listed("cancelled", limit=1) == [ids[2], ids[1]]
    assert listed("queued") == [ids[4], ids[0]]
    assert listed("running") == [ids[3]]
    assert listed("succeeded") == []


def test_bad_list_parameters_are_422(api: TestClient) -> None:
    submit(api)
    for name, value in [
        ("limit", 0),
        ("limit", 101),
        ("limit", "ten"),
        ("status", "done"),
        ("after", "garbage"),
        ("after", "!!!"),
        ("after", "x" * 201),
    ]:
        assert_problem(api.get("/searches", params={name: value}), 422, name)


# GET /searches/{id}


def test_the_etag_answers_304_until_the_search_changes(api: TestClient) -> None:
    submitted = api.post("/searches", json=SPEC)
    search_id = submitted.json()["id"]
    etag = api.get(f"/searches/{search_id}").headers["etag"]
    assert etag == submitted.headers["etag"]
    unchanged = api.get(f"/searches/{search_id}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    among_others = api.get(f"/searches/{search_id}", headers={"If-None-Match": f'"x", {etag}'})
    assert among_others.status_code == 304

    store_of(api).update_progress(search_id, PROGRESS)
    changed = api.get(f"/searches/{search_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["progress"]["step"] == 3


def test_progress_and_best_come_from_the_driver_reports(api: TestClient) -> None:
    search_id = submit(api)["id"]
    store = store_of(api)
    store.mark_running(search_id)
    fractions = []
    for position in [
        PROGRESS,
        {**PROGRESS, "phase": "controller", "step": 5},
        {**PROGRESS, "epoch": 1, "phase": "controller", "step": 10, "samples": 20},
        {**PROGRESS, "epoch": 1, "phase": "derive", "step": 2, "samples": 40},
    ]:
        store.update_progress(search_id, position, best_arch=[1, 0, 2], best_reward=0.75)
        body = api.get(f"/searches/{search_id}").json()
        assert body["status"] == "running" and body["started_at"] is not None
        progress = body["progress"]
        assert {k: v for k, v in progress.items() if k != "fraction"} == position
        assert 0 <= progress["fraction"] <= 1
        fractions.append(progress["fraction"])
        assert body["best"] == {"arch": [1, 0, 2], "reward": 0.75}
    assert fractions == sorted(set(fractions))  # it only grows


@pytest.mark.parametrize(
    "stored",
    [{"epoch": 1}, {**PROGRESS, "phase": "warmup"}, {**PROGRESS, "step": "two"}],
    ids=["fields-missing", "unknown-phase", "not-a-number"],
)
def test_a_stored_progress_that_is_no_report_reads_as_none(api: TestClient, stored: Any) -> None:
    """A row written by hand or by older code: the search reads, without its progress bar."""
    search_id = submit(api)["id"]
    store = store_of(api)
    store.mark_running(search_id)
    store.update_progress(search_id, stored)
    response = api.get(f"/searches/{search_id}")
    assert response.status_code == 200
    assert response.json()["progress"] is None
    assert api.get("/searches").status_code == 200


def test_a_browser_gets_the_web_page(api: TestClient) -> None:
    if not (WEB_DIR / "search.html").exists():
        pytest.skip("service/web/search.html is not written yet")
    search_id = submit(api)["id"]
    response = api.get(f"/searches/{search_id}", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for accept in ["application/json", "*/*", "text/html, application/json"]:
        json_client = api.get(f"/searches/{search_id}", headers={"Accept": accept})
        assert json_client.json()["id"] == search_id, accept


# GET /searches/{id}/architectures


def slot(item: dict[str, Any]) -> tuple[str, int, int, int]:
    return item["phase"], item["epoch"], item["step"], item["index"]


def test_architecture_pages_cover_every_sample_once_in_order(api: TestClient) -> None:
    search_id = submit(api)["id"]
    url = f"/searches/{search_id}/architectures"
    assert api.get(url).json() == {"items": [], "next": None}
    samples = [sample(0, s, i, reward=0.1 * (s + i)) for s in range(2) for i in range(3)]
    samples.append(sample(2, 0, 0, phase="derive", reward=0.9))
    for s in samples:  # one write each, in the order a search scores them
        store_of(api).add_samples(search_id, [s])
    stored = [(s.phase, s.epoch, s.step, s.index) for s in samples]

    for order, expected in [("asc", stored), ("desc", stored[::-1])]:
        pages = all_pages(api, url, limit=3, order=order)
        assert [len(p) for p in pages] == [3, 3, 1]
        items = [item for p in pages for item in p]
        assert [slot(i) for i in items] == expected
        ids = [i["id"] for i in items]
        assert ids == sorted(ids, reverse=order == "desc") and len(set(ids)) == len(ids)
        assert [slot(i) for i in api.get(url, params={"order": order}).json()["items"]] == expected
    assert [slot(i) for i in api.get(url).json()["items"]] == stored  # asc by default


def test_the_cell_distribution_counts_the_policys_choices_per_epoch(api: TestClient) -> None:
    search_id = submit(api)["id"]
    url = f"/searches/{search_id}/cells"
    body = api.get(url).json()
    assert body == {"cells": list(CELL_NAMES), "epochs": []}
    found = [sample(0, 0, 0), sample(0, 0, 1), sample(0, 1, 2), sample(1, 0, 0)]
    found.append(sample(2, 0, 3, phase="derive"))  # the derive phase is not the policy's
    store_of(api).add_samples(search_id, found)
    body = api.get(url).json()
    assert body["epochs"] == [
        {"epoch": 0, "samples": 3, "counts": [
            [3, 0, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]},
        {"epoch": 1, "samples": 1, "counts": [
            [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]},
    ]  # fmt: skip
    assert_problem(api.get(f"/searches/{'0' * 32}/cells"), 404, "no search")


def test_an_architecture_carries_its_slot_arch_reward_and_metrics(api: TestClient) -> None:
    search_id = submit(api)["id"]
    store_of(api).add_samples(search_id, [sample(1, 4, 2, reward=0.52)])
    page = api.get(f"/searches/{search_id}/architectures").json()
    assert page["next"] is None
    (item,) = page["items"]
    assert isinstance(item["id"], int) and item["created_at"]
    assert {k: v for k, v in item.items() if k not in ("id", "created_at")} == {
        "phase": "controller",
        "epoch": 1,
        "step": 4,
        "index": 2,
        "arch": [1, 4, 2],
        "reward": 0.52,
        "accuracy": 0.9,
        "mean_precision": 0.8,
        "mean_recall": 0.7,
        "miou": 0.52,
        "miou_plus": pytest.approx(0.57),
        "policy_version": 14,
        "params": None,  # the test's row has none; a search's rows have theirs
        "flops": None,  # likewise
        "count": 1,
    }


def test_bad_architecture_parameters_are_422(api: TestClient) -> None:
    url = f"/searches/{submit(api)['id']}/architectures"
    for name, value in [
        ("limit", 1001),
        ("limit", 0),
        ("after", "garbage"),
        ("after", "-1"),
        ("after", "9" * 25),
        ("order", "up"),
    ]:
        assert_problem(api.get(url, params={name: value}), 422, name)
    assert api.get(url, params={"limit": 1000}).status_code == 200


# GET /searches/{id}/rewards


def test_the_reward_curve_is_the_mean_per_controller_step_and_the_best_so_far(
    api: TestClient,
) -> None:
    search_id = submit(api)["id"]
    empty = {"points": [], "downsampled": False, "steps": 0, "next": None}
    assert api.get(f"/searches/{search_id}/rewards").json() == empty
    store_of(api).add_samples(
        search_id,
        [
            sample(0, 0, 0, reward=0.2),
            sample(0, 0, 1, reward=0.4),
            sample(0, 1, 0, reward=0.6),
            sample(0, 1, 1, reward=0.8),
            sample(0, 1, 2, reward=0.7),
            sample(1, 0, 0, reward=0.1),
            sample(1, 0, 1, reward=0.3),
            sample(2, 0, 0, phase="derive", reward=0.99),
            sample(2, 0, 1, phase="derive", reward=0.01),
        ],
    )
    points = api.get(f"/searches/{search_id}/rewards").json()["points"]
    expected = [(0, 0, 2, 0.3, 0.4, 0.4), (0, 1, 3, 0.7, 0.8, 0.8), (1, 0, 2, 0.2, 0.3, 0.8)]
    assert points == [
        {
            "index": index,
            "epoch": epoch,
            "step": step,
            "samples": samples,
            "mean_reward": pytest.approx(mean),
            "max_reward": pytest.approx(top),
            "best_so_far": pytest.approx(best),
        }
        for index, (epoch, step, samples, mean, top, best) in enumerate(expected)
    ]


# GET /searches/{id}/result

RESULT = ResultRecord(
    arch=[2, 0, 1],
    reward=0.91,
    metrics={
        "accuracy": 0.97,
        "mean_precision": 0.9,
        "mean_recall": 0.88,
        "miou": 0.91,
        "miou_plus": 0.93,
    },
    params=12_345,
)


def test_the_result_is_409_until_the_search_succeeds(api: TestClient) -> None:
    search_id = submit(api)["id"]
    store = store_of(api)
    assert_problem(api.get(f"/searches/{search_id}/result"), 409, "queued")
    store.mark_running(search_id)
    assert_problem(api.get(f"/searches/{search_id}/result"), 409, "running")
    store.set_result(search_id, RESULT)  # written before the search is marked finished
    assert_problem(api.get(f"/searches/{search_id}/result"), 409, "running")

    store.update_progress(search_id, {**PROGRESS, "epoch": 1, "phase": "derive", "step": 10})
    store.mark_finished(search_id, "succeeded")
    response = api.get(f"/searches/{search_id}/result")
    assert response.status_code == 200, response.text
    assert response.json() == RESULT.model_dump()
    search = api.get(f"/searches/{search_id}").json()
    assert search["status"] == "succeeded" and search["finished_at"] is not None
    assert search["progress"]["fraction"] == 1.0


def test_a_search_that_ended_without_a_result_has_none(api: TestClient) -> None:
    store = store_of(api)
    for status, error in [("failed", "out of memory"), ("cancelled", None)]:
        search_id = submit(api)["id"]
        store.mark_running(search_id)
        store.mark_finished(search_id, status, error=error)
        assert_problem(api.get(f"/searches/{search_id}/result"), 409, status)
        assert api.get(f"/searches/{search_id}").json()["error"] == error


# POST /searches/{id}/cancel


def test_cancelling_a_queued_search_cancels_it_at_once(api: TestClient) -> None:
    search_id = submit(api)["id"]
    response = api.post(f"/searches/{search_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    assert api.get(f"/searches/{search_id}").json()["status"] == "cancelled"
    assert_problem(api.post(f"/searches/{search_id}/cancel"), 409, search_id, "cancelled")


def test_cancelling_a_running_search_asks_its_driver_to_stop(api: TestClient) -> None:
    leases = api.app.state.leases  # type: ignore[attr-defined]
    running, claimed = submit(api)["id"], submit(api)["id"]
    store_of(api).mark_running(running)
    leases.claim(claimed, "worker-1")  # a dispatcher took it; its driver has not started
    for search_id in [running, claimed]:
        for _ in range(2):  # asking twice changes nothing
            response = api.post(f"/searches/{search_id}/cancel")
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "cancelling"
            assert response.json()["finished_at"] is None
        assert api.get(f"/searches/{search_id}").json()["status"] == "cancelling"
        assert leases.is_cancelling(search_id)


def test_cancelling_a_finished_search_is_409(api: TestClient) -> None:
    for status in ["succeeded", "failed", "cancelled"]:
        search_id = submit(api)["id"]
        store_of(api).mark_running(search_id)
        store_of(api).mark_finished(search_id, status)
        assert_problem(api.post(f"/searches/{search_id}/cancel"), 409, "already finished", status)
        assert api.get(f"/searches/{search_id}").json()["status"] == status


# Unknown ids


def test_an_unknown_id_is_404_everywhere(api: TestClient) -> None:
    submit(api)  # a search exists: the 404 is about the id, not an empty table
    for search_id in [UNKNOWN_ID, "nope"]:
        for method, path in [
            ("GET", ""),
            ("GET", "/architectures"),
            ("GET", "/rewards"),
            ("GET", "/result"),
            ("GET", "/retrains"),
            ("POST", "/cancel"),
        ]:
            response = api.request(method, f"/searches/{search_id}{path}")
            assert_problem(response, 404, search_id)


def test_a_browser_asking_for_an_unknown_id_gets_404(api: TestClient) -> None:
    response = api.get(f"/searches/{UNKNOWN_ID}", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")  # the page says so


# GET /healthz and outages


def test_healthz_says_both_parts_are_ok(api: TestClient) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_without_redis_healthz_is_503_and_a_submitted_search_is_kept(
    api: TestClient, job_queue: JobQueue, settings: Settings
) -> None:
    dead_queue = JobQueue(redis_client("redis://127.0.0.1:1/0", socket_connect_timeout=0.5))
    try:
        app = create_app(settings, store=store_of(api), queue=dead_queue)
        with TestClient(app, headers=dict(api.headers)) as client:
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            assert health.json()["database"] == "ok"
            assert "Redis" in health.json()["redis"]

            response = client.post("/searches", json=SPEC)
            assert response.status_code == 201, response.text
            search_id = response.json()["id"]
    finally:
        dead_queue.client.close()
    # The row is the truth: the dispatcher's reconciliation enqueues it once Redis is back.
    assert api.get(f"/searches/{search_id}").json()["status"] == "queued"
    assert search_id in api.app.state.leases.orphans()  # type: ignore[attr-defined]
    assert job_queue.waiting() == []


def test_without_the_database_every_route_is_503(
    api: TestClient, job_queue: JobQueue, settings: Settings
) -> None:
    down = SearchStore("postgresql://postgres@127.0.0.1:1/segnas", check_schema=False)
    try:
        app = create_app(settings, store=down, queue=job_queue)
        with TestClient(app, headers=dict(api.headers)) as client:
            for method, path, body in [
                ("GET", f"/searches/{UNKNOWN_ID}", None),
                ("GET", "/searches", None),
                ("POST", "/searches", SPEC),
                ("GET", f"/searches/{UNKNOWN_ID}/architectures", None),
                ("GET", f"/searches/{UNKNOWN_ID}/rewards", None),
                ("GET", f"/searches/{UNKNOWN_ID}/result", None),
                ("POST", f"/searches/{UNKNOWN_ID}/cancel", None),
            ]:
                assert_problem(client.request(method, path, json=body), 503, "database")
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["redis"] == "ok"
            assert health.json()["database"] not in ("", "ok")
    finally:
        down.close()
    assert job_queue.waiting() == []


# The API's description and process


def test_the_openapi_document_lists_the_contract(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    expected = {
        "/searches": {"get", "post"},
        "/searches/{search_id}": {"get"},
        "/searches/{search_id}/architectures": {"get"},
        "/searches/{search_id}/rewards": {"get"},
        "/searches/{search_id}/result": {"get"},
        "/searches/{search_id}/cancel": {"post"},
        "/healthz": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths
        assert methods <= set(paths[path]), path
    assert api.get("/docs").status_code == 200


def test_the_api_process_imports_neither_torch_nor_ray(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from service.app import create_app\n"
        "create_app()\n"
        "import segnas.commands.serve\n"
        "loaded = sorted({'torch', 'ray'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("SEGNAS_")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# GET /searches/{id}/retrains


def test_retrains_are_empty_until_a_retrain_and_then_listed_by_source_and_rank(
    api: TestClient,
) -> None:
    from storage.retrains import RetrainRecord, RetrainStore

    search_id = submit(api)["id"]
    assert api.get(f"/searches/{search_id}/retrains").json() == {"items": []}

    def row(arch: list[int], source: str, rank: int, status: str = "succeeded") -> RetrainRecord:
        failed = status == "failed"
        metric = None if failed else 0.5 + rank / 10
        return RetrainRecord(
            source=source,
            rank=rank,
            arch=arch,
            shared_score=None if source == "random" else 0.4,
            status=status,
            epochs=2,
            params=None if failed else 321,
            accuracy=metric,
            mean_precision=metric,
            mean_recall=metric,
            miou=metric,
            miou_plus=metric,
            val=None,
            config={},
            weights_path=None,
            error="boom" if failed else None,
            seconds=3.0,
        )

    RetrainStore(store_of(api)).save(
        search_id,
        [row([1, 1], "random", 0), row([2, 2], "enas", 1, "failed"), row([3, 3], "enas", 0)],
    )
    items = api.get(f"/searches/{search_id}/retrains").json()["items"]
    assert [(i["source"], i["rank"], i["arch"], i["status"]) for i in items] == [
        ("enas", 0, [3, 3], "succeeded"),
        ("enas", 1, [2, 2], "failed"),
        ("random", 0, [1, 1], "succeeded"),
    ]
    assert items[0]["miou"] == 0.5 and items[0]["params"] == 321
    assert items[0]["shared_score"] == 0.4 and items[2]["shared_score"] is None
    assert items[1]["error"] == "boom" and items[1]["miou"] is None


def test_every_database_call_runs_off_the_event_loop(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handlers are async: a store call made on the event loop would stall every request
    in flight for its round trip. Each must go through the app's thread pool."""
    import threading

    store = store_of(api)
    search_id = submit(api)["id"]
    threads: set[str] = set()
    for name in ("get", "page", "sample_page", "reward_curve", "result", "submit"):
        real = getattr(store, name)

        def recorded(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            threads.add(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, recorded)
    for path in ("", "/architectures", "/rewards", "/result", "/retrains"):
        api.get(f"/searches/{search_id}{path}")
    api.get("/searches")
    api.post("/searches", json=SPEC)
    api.post(f"/searches/{search_id}/cancel")
    api.get("/healthz")
    assert threads and all(t.startswith("segnas-api-io") for t in threads), threads


def test_a_poll_with_an_etag_for_an_unknown_search_is_404(api: TestClient) -> None:
    response = api.get(f"/searches/{UNKNOWN_ID}", headers={"If-None-Match": 'W/"1.x"'})
    assert_problem(response, 404, UNKNOWN_ID)


def test_every_write_the_poll_can_see_changes_the_etag(api: TestClient) -> None:
    """A heartbeat, a cancel, a finish: after each, the old ETag gets the new body, not 304."""
    search_id = submit(api)["id"]
    leases = api.app.state.leases  # type: ignore[attr-defined]
    store = store_of(api)
    etags = [api.get(f"/searches/{search_id}").headers["etag"]]
    for write in (
        lambda: leases.claim(search_id, "a"),
        lambda: leases.heartbeat("a", [search_id]),
        lambda: store.mark_running(search_id),
        lambda: api.post(f"/searches/{search_id}/cancel"),
        lambda: store.mark_finished(search_id, "cancelled"),
    ):
        write()
        response = api.get(f"/searches/{search_id}", headers={"If-None-Match": etags[-1]})
        assert response.status_code == 200, response.status_code
        assert response.json() == api.get(f"/searches/{search_id}").json()
        etags.append(response.headers["etag"])
    assert len(set(etags)) == len(etags)
    assert api.get(f"/searches/{search_id}").json()["status"] == "cancelled"


# /evaluations: what segnas evaluate stored, read-only.

EVALUATION_SUMMARY = ROOT / "docs" / "results" / "evaluate-independent" / "summary.json"


def _evaluation(api: TestClient, *, summary: dict[str, Any] | None) -> tuple[str, str]:
    from storage.evaluations import EvaluationStore

    search = submit(api)
    evaluations = EvaluationStore(store_of(api))
    evaluation_id = "e" * 32
    settings = {"seeds": 3, "rewards": ["accuracy", "miou", "miou_plus"], "uniform": 30}
    evaluations.open(evaluation_id, spec={"name": "shapes"}, settings=settings)
    evaluations.add_search(evaluation_id, "0/enas_miou", search["id"])
    if summary is not None:
        evaluations.finish(evaluation_id, "succeeded", summary=summary)
    return evaluation_id, search["id"]


def test_an_evaluation_is_listed_and_read_with_its_table_and_searches(api: TestClient) -> None:
    summary = json.loads(EVALUATION_SUMMARY.read_text())
    evaluation_id, search_id = _evaluation(api, summary=summary)

    listed = api.get("/evaluations")
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["items"]] == [evaluation_id]

    answer = api.get(f"/evaluations/{evaluation_id}")
    assert answer.headers["vary"] == "Accept"
    body = answer.json()
    assert body["status"] == "succeeded" and body["name"] == "shapes"
    assert body["progress"] == {
        "searches_planned": 12, "searches_finished": 0, "trainings_stored": 0
    }  # fmt: skip
    assert body["searches"] == [
        {"slot": "0/enas_miou", "seed": 0, "method": "enas_miou", "search_id": search_id,
         "status": "queued", "page": f"/searches/{search_id}"}
    ]  # fmt: skip
    methods = body["summary"]["methods"]
    assert set(methods) == {
        "enas_accuracy", "enas_miou", "enas_miou_plus", "random_ws", "largest", "param_matched"
    }  # fmt: skip
    assert methods["largest"]["test_miou_mean"] == pytest.approx(
        summary["methods"]["largest"]["test_miou_mean"]
    )
    assert body["summary"]["goal"]["met"] is False
    assert body["page"] == f"/evaluations/{evaluation_id}"


def test_a_running_evaluation_has_no_summary_and_an_unknown_one_is_404(api: TestClient) -> None:
    evaluation_id, _ = _evaluation(api, summary=None)
    body = api.get(f"/evaluations/{evaluation_id}").json()
    assert body["status"] == "running" and body["summary"] is None
    for unknown in ("f" * 32, "not-an-id", "x" * 500):
        answer = api.get(f"/evaluations/{unknown}")
        assert answer.status_code == 404
        assert answer.json() == {"detail": "no evaluation has this id"}
    assert api.get("/evaluations?limit=0").status_code == 422
    assert api.get("/evaluations?limit=51").status_code == 422


def test_an_evaluations_page_for_a_browser(api: TestClient) -> None:
    evaluation_id, _ = _evaluation(api, summary={"not": "a summary of this version"})
    page = api.get(f"/evaluations/{evaluation_id}", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/static/evaluation.js"' in page.text
    assert api.get(f"/evaluations/{evaluation_id}").json()["summary"] is None  # still answers


# Inputs that once answered 500.


def test_cursors_of_unicode_digits_or_past_the_largest_row_id(api: TestClient) -> None:
    search_id = submit(api)["id"]
    for url in ("/searches?after=²", f"/searches/{search_id}/architectures?after=²"):
        assert_problem(api.get(url), 422, "after")
    past = api.get(f"/searches/{search_id}/architectures?after={'9' * 19}")
    assert past.status_code == 200 and past.json() == {"items": [], "next": None}
    assert_problem(api.get(f"/searches/{search_id}/architectures?after={'9' * 20}"), 422, "after")


def test_a_body_that_is_not_utf8_is_a_400_in_one_line(api: TestClient) -> None:
    response = api.post(
        "/searches", content=b'{"name": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "UTF-8")
    assert listed_ids(api) == []


def test_an_unexpected_error_is_a_500_in_one_line_without_a_traceback(
    api: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_kwargs: Any) -> None:
        raise RuntimeError("a bug at /srv/segnas/secret.py")

    monkeypatch.setattr(store_of(api), "page", broken)
    with TestClient(api.app, raise_server_exceptions=False, headers=dict(api.headers)) as client:
        response = client.get("/searches")
    assert_problem(response, 500, "internal error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "a bug at" in caplog.text  # the operator's log has it


def test_a_method_a_path_does_not_answer_names_all_it_does(api: TestClient) -> None:
    response = api.delete("/searches")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
