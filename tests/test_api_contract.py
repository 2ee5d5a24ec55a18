"""The API against its own OpenAPI document, by property-based testing (schemathesis over
hypothesis): for generated requests to every operation, no answer is a 5xx, and every answer
conforms to the document (status code, content type, headers, body schema).

The app runs in-process over SQLite and an embedded Redis, with a bounded number of examples per
operation so that the suite stays fast; ``SEGNAS_CONTRACT_EXAMPLES`` raises it for a long run.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.specs.openapi.checks import ignored_auth, missing_required_header

from service.app import create_app
from service.settings import Settings

EXAMPLES = int(os.environ.get("SEGNAS_CONTRACT_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def contract_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from jobqueue import EmbeddedRedis, JobQueue, redis_client
    from storage.accounts import AccountStore
    from storage.migrate import upgrade
    from storage.searches import SearchStore

    folder = tmp_path_factory.mktemp("contract")
    url = f"sqlite:///{folder / 'segnas.db'}"
    upgrade(url)
    store = SearchStore(url)
    with EmbeddedRedis(folder / "redis") as redis:
        queue = JobQueue(redis_client(redis.url), prefix=f"contract-{secrets.token_hex(4)}")
        queue.ensure_group()
        settings_ = Settings(
            data_dir=folder, data_roots=(folder / "data",), allowed_hosts=("testserver",)
        )
        app = create_app(settings_, store=store, queue=queue)
        token = AccountStore(store).create_token("admin").token
        # As the page sends them. The client's Authorization replaces a case's own (generated
        # or left out), so every case is answered as a signed-in user would be; the refusals
        # without or with a bad token are test_accounts' (every secured operation, by name).
        headers = {"X-Requested-With": "segnas-tests", "Authorization": f"Bearer {token}"}
        with TestClient(app, raise_server_exceptions=False, headers=headers) as client:
            yield client
        queue.client.close()
    store.close()


# The document alone: building the app opens nothing (the database and Redis open on start-up).
SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(data_dir=Path(tempfile.gettempdir()))).openapi()
)


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
def test_every_answer_is_documented_and_none_is_a_5xx(case: Any, contract_api: Any) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    method, url = kwargs.pop("method"), kwargs.pop("url")
    if "data" in kwargs and isinstance(kwargs["data"], bytes | str):
        kwargs["content"] = kwargs.pop("data")
    sent = {k: v for k, v in kwargs.items() if v is not None}
    if "headers" in sent:  # a non-ASCII header goes out as its UTF-8 bytes, as a raw client's
        sent["headers"] = {
            k: v.encode() if isinstance(v, str) and not v.isascii() else v
            for k, v in sent["headers"].items()
        }
    response = contract_api.request(method, url, **sent)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    # What is checked is the answers. Not checked: "every schema-valid request is accepted"
    # (some rules are not JSON Schema's to say: a spec's cross-field checks, the operator's
    # data folders, which strings are cursors this API gave out; they answer a documented
    # 422), nor "every schema-violating request is refused" (pydantic's lax mode reads "5"
    # and 5.0 as the integer 5), nor the refusals without a good token (see the fixture).
    excluded = [positive_data_acceptance, negative_data_rejection, ignored_auth]
    case.validate_response(response, excluded_checks=[*excluded, missing_required_header])


def test_operations_have_plain_ids_and_document_the_body_guard() -> None:
    """A generated client names its methods after the operation ids: ``submit_search``, not
    FastAPI's ``submit_search_searches_post``. Any request with a body may get 413 or 415."""
    document = create_app(Settings(data_dir=Path(tempfile.gettempdir()))).openapi()
    operations = [op for item in document["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert {"submit_search", "list_searches", "get_search", "cancel_search", "me"} <= set(ids)
    for operation in operations:
        assert {"413", "415"} <= set(operation["responses"]), operation["operationId"]
