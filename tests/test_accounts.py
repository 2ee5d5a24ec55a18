"""Accounts and tokens (``storage.accounts``, ``service.auth``) on every database: who may call
the API, and that one user's searches are invisible to another."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from errors import ConfigError
from service.app import create_app
from service.quotas import WINDOW_S, QuotaExceededError, Quotas, count_submission
from service.settings import Settings
from storage.accounts import TOKEN_PREFIX, AccountError, AccountStore, Principal
from storage.models import LOCAL_ADMIN, ApiToken
from storage.searches import CheckpointRecord, SearchStore

SPEC: dict[str, Any] = {"epochs": 1, "space": {"layers": 2, "channels": 4}}
HEADERS = {"X-Requested-With": "segnas-tests"}


def test_a_token_is_shown_once_and_only_its_hash_is_kept(store: SearchStore) -> None:
    accounts = AccountStore(store)
    ada = accounts.add_user("ada")
    made = accounts.create_token("ada", name="laptop")
    assert made.token.startswith(TOKEN_PREFIX) and len(made.token) > 40
    with store._session() as s:
        stored = s.scalars(select(ApiToken)).all()
    assert len(stored) == 1 and made.token not in repr(stored[0].__dict__)
    who = accounts.authenticate(made.token)
    assert who is not None and (who.user_id, who.name, who.is_admin) == (ada.id, "ada", False)
    assert accounts.authenticate(made.token + "x") is None
    assert accounts.authenticate("not-a-token") is None
    [listed] = accounts.tokens("ada")
    assert (listed.id, listed.name, listed.revoked_at) == (made.id, "laptop", None)

    revoked = accounts.revoke(made.id)
    assert revoked.revoked_at is not None
    assert accounts.authenticate(made.token) is None


def test_names_are_checked_and_unique(store: SearchStore) -> None:
    accounts = AccountStore(store)
    accounts.add_user("bob")
    with pytest.raises(AccountError, match="exists already"):
        accounts.add_user("bob")
    for bad in ("", "Bob", "a b", "x" * 65, "-x", "é"):
        with pytest.raises(AccountError, match="not valid"):
            accounts.add_user(bad)
    with pytest.raises(AccountError, match="segnas user add"):
        accounts.create_token("nobody")
    with pytest.raises(AccountError, match="no token"):
        accounts.revoke("0" * 32)
    assert [u.name for u in accounts.users()] == [LOCAL_ADMIN, "bob"]


def test_a_token_from_a_secret_file_is_registered_once(store: SearchStore) -> None:
    accounts = AccountStore(store)
    token = TOKEN_PREFIX + "s" * 43
    assert accounts.register_token(LOCAL_ADMIN, token) is True
    assert accounts.register_token(LOCAL_ADMIN, token) is False
    who = accounts.authenticate(token)
    assert who is not None and who.is_admin
    with pytest.raises(AccountError, match="starts with"):
        accounts.register_token(LOCAL_ADMIN, "short")


@pytest.fixture
def team(store: SearchStore, job_queue: Any, tmp_path: Path) -> Iterator[dict[str, TestClient]]:
    """One server that asks for tokens, and a client per user: ada, bob, the admin, and one
    without a token."""
    accounts = AccountStore(store)
    accounts.add_user("ada")
    accounts.add_user("bob")
    settings = Settings(data_dir=tmp_path, allowed_hosts=("testserver",), auth="required")
    app = create_app(settings, store=store, queue=job_queue)
    clients = {}
    for user in ("ada", "bob", LOCAL_ADMIN):
        token = accounts.create_token(user).token
        clients[user] = TestClient(app, headers={**HEADERS, "Authorization": f"Bearer {token}"})
    clients["anonymous"] = TestClient(app, headers=HEADERS)
    with clients["ada"]:  # runs the app's lifespan once; the others share its state
        yield clients


def secured_operations(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the OpenAPI document says needs a token, path parameters filled."""
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if operation.get("security"):
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "0" * 32, path)))
    return found


def test_without_a_good_token_every_secured_operation_is_401(
    team: dict[str, TestClient],
) -> None:
    anonymous = team["anonymous"]
    routes = secured_operations(anonymous.app)
    assert {("GET", "/searches"), ("POST", "/searches"), ("GET", "/me")} <= set(routes)
    assert ("GET", "/evaluations") in routes and len(routes) >= 10
    for method, path in routes:
        for bad in (None, "Bearer segnas_nope-nope-nope-nope", "Basic YWRhOnB3", "Bearer"):
            headers = {} if bad is None else {"Authorization": bad}
            body = SPEC if method in ("POST", "PUT", "PATCH") else None
            answer = anonymous.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, (method, path, bad, answer.text)
            assert answer.headers["WWW-Authenticate"] == "Bearer"
            assert "token" in answer.json()["detail"]
        # A body the schema refuses is still a 401 first: nothing is said to a stranger.
        if method == "POST":
            answer = anonymous.request(method, path, json={"epochs": "many"})
            assert answer.status_code == 401, (method, path, answer.text)
    assert anonymous.get("/healthz").status_code == 200  # probes need no token
    assert anonymous.get("/", headers={"Accept": "text/html"}).status_code == 200


def test_a_users_searches_are_invisible_to_another(team: dict[str, TestClient]) -> None:
    ada, bob, admin = team["ada"], team["bob"], team[LOCAL_ADMIN]
    created = ada.post("/searches", json=SPEC)
    assert created.status_code == 201
    search_id = created.json()["id"]
    etag = ada.get(f"/searches/{search_id}").headers["ETag"]

    for path in ("", "/architectures", "/rewards", "/result", "/retrains"):
        answer = bob.get(f"/searches/{search_id}{path}")
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["detail"] == f"no search with id {search_id!r}"
    # Not even the revision leaks: a poll with the right ETag is a 404 too, not a 304.
    assert bob.get(f"/searches/{search_id}", headers={"If-None-Match": etag}).status_code == 404
    assert bob.post(f"/searches/{search_id}/cancel").status_code == 404
    assert bob.get("/searches").json()["items"] == []

    assert [s["id"] for s in ada.get("/searches").json()["items"]] == [search_id]
    listed = admin.get("/searches").json()["items"]
    assert [(s["id"], s["owner"]) for s in listed] == [(search_id, "ada")]  # whose it is
    assert admin.get(f"/searches/{search_id}").json()["owner"] == "ada"
    assert created.json()["owner"] == "ada"
    assert ada.get("/me").json() == {"name": "ada", "admin": False, "auth": "required"}
    assert admin.get("/me").json()["admin"] is True
    # The command line's evaluations are the admin's.
    assert bob.get("/evaluations").json() == {"items": []}
    assert bob.get(f"/evaluations/{'0' * 32}").status_code == 404

    assert bob.post(f"/searches/{search_id}/cancel").status_code == 404
    assert ada.post(f"/searches/{search_id}/cancel").status_code == 202


def test_idempotency_keys_are_the_owners(team: dict[str, TestClient]) -> None:
    ada, bob = team["ada"], team["bob"]
    key = {"Idempotency-Key": "the-same-key"}
    first = ada.post("/searches", json=SPEC, headers=key)
    theirs = bob.post("/searches", json={**SPEC, "epochs": 2}, headers=key)
    assert (first.status_code, theirs.status_code) == (201, 201)
    assert first.json()["id"] != theirs.json()["id"]
    assert ada.post("/searches", json=SPEC, headers=key).json()["id"] == first.json()["id"]
    conflict = bob.post("/searches", json={**SPEC, "epochs": 3}, headers=key)
    assert conflict.status_code == 409
    assert first.json()["id"] not in conflict.text  # names bob's own search only
    assert theirs.json()["id"] in conflict.text


def test_with_authentication_off_every_request_is_the_local_admin(
    store: SearchStore, job_queue: Any, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, allowed_hosts=("testserver",), auth="off")
    with TestClient(create_app(settings, store=store, queue=job_queue), headers=HEADERS) as c:
        assert c.get("/me").json() == {"name": LOCAL_ADMIN, "admin": True, "auth": "off"}
        search_id = c.post("/searches", json=SPEC).json()["id"]
    assert store.get(search_id).owner_id == AccountStore(store).user(LOCAL_ADMIN).id


# Per-user limits (service.quotas)


@pytest.fixture
def limited(store: SearchStore, job_queue: Any, tmp_path: Path) -> Iterator[dict[str, TestClient]]:
    """A server that lets a user have 2 searches queued or running, 50 submissions a minute."""
    accounts = AccountStore(store)
    accounts.add_user("ada")
    quotas = Quotas(max_active=2, max_submits_per_minute=50)
    settings = Settings(data_dir=tmp_path, allowed_hosts=("testserver",), quotas=quotas)
    app = create_app(settings, store=store, queue=job_queue)
    clients = {}
    for user in ("ada", LOCAL_ADMIN):
        token = accounts.create_token(user).token
        clients[user] = TestClient(app, headers={**HEADERS, "Authorization": f"Bearer {token}"})
    with clients["ada"]:
        yield clients


def test_a_user_may_have_so_many_searches_queued_or_running(
    limited: dict[str, TestClient],
) -> None:
    ada, admin = limited["ada"], limited[LOCAL_ADMIN]
    first = ada.post("/searches", json=SPEC, headers={"Idempotency-Key": "k1"})
    ada.post("/searches", json=SPEC)
    refused = ada.post("/searches", json=SPEC)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert "SEGNAS_MAX_ACTIVE_SEARCHES=2" in refused.json()["detail"]
    # A retry of a submission that went through is its search, not a refusal.
    again = ada.post("/searches", json=SPEC, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # Admins are not limited; a search that ends frees a place.
    assert admin.post("/searches", json=SPEC).status_code == 201
    assert ada.post(f"/searches/{first.json()['id']}/cancel").status_code == 202
    assert ada.post("/searches", json=SPEC).status_code == 201


def test_submissions_a_minute_are_counted_per_user_in_redis(job_queue: Any) -> None:
    ada = Principal(user_id=7, name="ada", is_admin=False)
    quotas = Quotas(max_submits_per_minute=2)
    start = 1_000_000 * WINDOW_S + 10.0  # 10 s into a minute
    for k in range(2):
        count_submission(job_queue.client, job_queue.prefix, ada, quotas, now=start + k)
    with pytest.raises(QuotaExceededError) as refused:
        count_submission(job_queue.client, job_queue.prefix, ada, quotas, now=start + 5)
    assert refused.value.retry_after == 45  # the window ends 60 s after it began
    assert "SEGNAS_MAX_SUBMITS_PER_MINUTE" in refused.value.detail
    # The next minute is a new window; another user has their own.
    count_submission(job_queue.client, job_queue.prefix, ada, quotas, now=start + 60)
    bob = Principal(user_id=8, name="bob", is_admin=False)
    count_submission(job_queue.client, job_queue.prefix, bob, quotas, now=start + 5)
    admin = Principal(user_id=1, name=LOCAL_ADMIN, is_admin=True)
    for _ in range(5):
        count_submission(job_queue.client, job_queue.prefix, admin, quotas, now=start)


def test_over_the_rate_the_api_answers_429(
    store: SearchStore, job_queue: Any, tmp_path: Path
) -> None:
    AccountStore(store).add_user("ada")
    token = AccountStore(store).create_token("ada").token
    quotas = Quotas(max_submits_per_minute=1)
    settings = Settings(data_dir=tmp_path, allowed_hosts=("testserver",), quotas=quotas)
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, store=store, queue=job_queue), headers=headers) as c:
        # Three within a minute fall in at most two one-minute windows: one at least is refused.
        answers = [c.post("/searches", json=SPEC) for _ in range(3)]
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(1 <= int(a.headers["Retry-After"]) <= 60 for a in refused)
    assert {a.status_code for a in answers} <= {201, 429}


def test_a_bad_limit_in_the_environment_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="SEGNAS_MAX_ACTIVE_SEARCHES='ten'"):
        Quotas.from_env({"SEGNAS_MAX_ACTIVE_SEARCHES": "ten"})
    assert Quotas.from_env({"SEGNAS_MAX_SUBMITS_PER_MINUTE": "5"}).max_submits_per_minute == 5


# DELETE /searches/{id}


def test_deleting_a_search_removes_its_rows_and_files_and_only_its_owner_may(
    team: dict[str, TestClient], store: SearchStore, tmp_path: Path
) -> None:
    ada, bob = team["ada"], team["bob"]
    finished = ada.post("/searches", json=SPEC).json()["id"]
    checkpoint = tmp_path / "checkpoints" / finished / "epoch-0.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    log = tmp_path / "logs" / f"{finished}.log"
    log.parent.mkdir()
    log.write_text("a log line\n")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-not-ours.pt"
    elsewhere.write_bytes(b"not in the data folder")
    store.mark_running(finished)
    for epoch, path in ((0, checkpoint), (1, elsewhere)):
        store.add_checkpoint(finished, CheckpointRecord(epoch=epoch, path=str(path), bytes=7))
    store.mark_finished(finished, "succeeded")

    assert bob.delete(f"/searches/{finished}").status_code == 404
    assert store.get(finished).status == "succeeded"
    assert ada.delete(f"/searches/{finished}").status_code == 204
    assert ada.get(f"/searches/{finished}").status_code == 404
    assert not checkpoint.exists() and not log.exists()
    assert elsewhere.exists()  # a path outside the data folder is not the API's to remove
    assert store.checkpoints(finished) == []
    assert ada.delete(f"/searches/{finished}").status_code == 404

    # Queued: cancelled and removed at once. Running: told to stop, and 409 until it has.
    queued = ada.post("/searches", json=SPEC).json()["id"]
    assert ada.delete(f"/searches/{queued}").status_code == 204
    running = ada.post("/searches", json=SPEC).json()["id"]
    assert acquire_lease(store, running)
    refused = ada.delete(f"/searches/{running}")
    assert refused.status_code == 409 and "being cancelled" in refused.json()["detail"]
    assert store.get(running).status == "cancelling"
    store.mark_finished(running, "cancelled")
    assert ada.delete(f"/searches/{running}").status_code == 204


def acquire_lease(store: SearchStore, search_id: str) -> bool:
    """A dispatcher takes the search and its driver starts it."""
    from storage.leases import Claim, SearchLeases

    taken = SearchLeases(store).claim(search_id, "worker-1") is Claim.TAKEN
    store.mark_running(search_id)
    return taken
