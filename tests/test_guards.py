"""DNS rebinding and cross-site requests (``service.guards``), on the real app over a real
store and queue, with a client that sends what a browser would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.guards import CSP, host_name
from service.settings import Settings

BASE = "http://127.0.0.1:8000"
UNKNOWN = "0" * 32


@pytest.fixture
def browser_like(store: Any, job_queue: Any, tmp_path: Path) -> Iterator[TestClient]:
    """The app on its defaults (loopback hosts only), reached as http://127.0.0.1:8000, with
    authentication off as ``segnas serve`` runs it there: what guards it is the guard."""
    settings = Settings(data_dir=tmp_path, data_roots=(tmp_path / "data",), auth="off")
    with TestClient(create_app(settings, store=store, queue=job_queue), base_url=BASE) as c:
        yield c


@pytest.mark.parametrize(
    ("host", "name"),
    [("127.0.0.1:8000", "127.0.0.1"), ("[::1]:8000", "::1"), ("LocalHost", "localhost"),
     ("::1", "::1"), ("example.org", "example.org")],
)  # fmt: skip
def test_host_names_lose_their_port(host: str, name: str) -> None:
    assert host_name(host) == name


def test_a_host_this_server_is_not_is_refused(browser_like: TestClient) -> None:
    assert browser_like.get("/healthz").status_code == 200
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.2"):
        answer = browser_like.get("/searches", headers={"Host": host})
        assert answer.status_code == 400
        assert answer.json() == {
            "detail": "this server does not answer to that Host (SEGNAS_ALLOWED_HOSTS)"
        }
    assert browser_like.get("/searches", headers={"Host": "localhost:8000"}).status_code == 200


def test_what_a_cross_site_form_can_send_does_not_change_state(browser_like: TestClient) -> None:
    cancel = f"/searches/{UNKNOWN}/cancel"
    bodyless = browser_like.post(cancel)
    assert bodyless.status_code == 403 and "X-Requested-With" in bodyless.json()["detail"]
    form = browser_like.post("/searches", data={"epochs": "1"})
    assert form.status_code == 403
    other_origin = browser_like.post(
        "/searches", json={}, headers={"Origin": "https://attacker.example"}
    )
    assert other_origin.status_code == 403 and "Origin" in other_origin.json()["detail"]
    opaque = browser_like.post(cancel, headers={"Origin": "null", "X-Requested-With": "x"})
    assert opaque.status_code == 403
    # What the page sends: its own Origin, and JSON or X-Requested-With.
    page = browser_like.post(cancel, headers={"Origin": BASE, "X-Requested-With": "segnas-page"})
    assert page.status_code == 404  # past the guard: no such search
    assert browser_like.get("/searches").json()["items"] == []


def test_every_answer_carries_the_security_headers(browser_like: TestClient) -> None:
    for path in ("/", "/searches", f"/searches/{UNKNOWN}", "/static/common.js", "/openapi.json"):
        answer = browser_like.get(path)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["content-security-policy"] == CSP
    docs = browser_like.get("/docs")  # Swagger UI from this server: the same CSP
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == CSP
    assert "cdn" not in docs.text.lower()
    assert browser_like.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    refused = browser_like.get("/", headers={"Host": "attacker.example"})
    assert refused.headers["x-frame-options"] == "DENY"


def test_serve_answers_to_the_address_it_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from segnas.commands.serve import allow_listen_host
    from service.settings import ALLOWED_HOSTS_ENV

    monkeypatch.delenv(ALLOWED_HOSTS_ENV, raising=False)
    assert allow_listen_host("127.0.0.1") is None
    assert ALLOWED_HOSTS_ENV not in os.environ
    assert allow_listen_host("10.1.2.3") is None
    assert Settings.from_env().allowed_hosts == ("localhost", "127.0.0.1", "::1", "10.1.2.3")
    monkeypatch.delenv(ALLOWED_HOSTS_ENV)
    note = allow_listen_host("0.0.0.0")
    assert note is not None and ALLOWED_HOSTS_ENV in note
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "segnas.example.org")
    assert allow_listen_host("0.0.0.0") is None  # the operator's list stands
    assert Settings.from_env().allowed_hosts == ("segnas.example.org",)
