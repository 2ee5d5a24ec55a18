"""The operator's limits on a spec's cost (``searchspec.budget``), alone and through the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from errors import ConfigError
from jobqueue import JobQueue
from searchspec.budget import LIMITS, Budget, Limit, over_budget
from searchspec.cost import estimate_cost
from searchspec.spec import SearchSpec, load_search_spec, parse_search_spec
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# tiny, on two replicas with a GPU each, so that every limit has something to measure.
BASE = {"resources.replicas": 2, "resources.gpus_per_replica": 1}


def base_spec() -> SearchSpec:
    return load_search_spec(ROOT / "configs" / "tiny.yaml", BASE)


def just_under(limit: Limit, spec: SearchSpec) -> tuple[float, float]:
    """The spec's measure for ``limit``, and a limit value just below it."""
    value = limit.measure(estimate_cost(spec), spec)
    assert value is not None and value > 0, limit.env
    below = value / 2 if limit.field in ("max_gpus", "max_cpus") else value - 1
    return value, below


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_within_the_default_limits(config: Path) -> None:
    assert over_budget(load_search_spec(config), Budget()) is None


def test_the_default_search_and_the_base_are_within_the_default_limits() -> None:
    assert over_budget(parse_search_spec({}), Budget()) is None
    assert over_budget(base_spec(), Budget()) is None


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.env)
def test_each_limit_alone_refuses_a_spec_over_it(limit: Limit) -> None:
    spec = base_spec()
    value, below = just_under(limit, spec)
    assert over_budget(spec, Budget(**{limit.field: value})) is None  # at the limit: taken
    detail = over_budget(spec, Budget(**{limit.field: below}))
    assert detail is not None
    assert limit.env in detail and limit.show(value) in detail and limit.show(below) in detail
    assert [other.env for other in LIMITS if other.env in detail] == [limit.env]
    assert "\n" not in detail


ISSUE_SPECS = [
    pytest.param(
        {"space": {"layers": 64, "channels": 1024}, "shared": {"sharing": "independent"}},
        ["SEGNAS_MAX_PARAMS", "SEGNAS_MAX_REPLICA_MEMORY_BYTES"],
        id="64x1024",
    ),
    pytest.param(
        {"dataset": {"kind": "digits", "images": 100_000, "size": 512}},
        ["SEGNAS_MAX_DATA_BYTES"],
        id="digits-100k-512px",
    ),
    pytest.param({"epochs": 10_000}, ["SEGNAS_MAX_EPOCHS"], id="10000-epochs"),
    pytest.param(
        {"resources": {"replicas": 1024}, "shared": {"batch_size": 1024}},
        ["SEGNAS_MAX_REPLICAS"],
        id="1024-replicas",
    ),
    pytest.param(
        {"resources": {"replicas": 4, "gpus_per_replica": 4}}, ["SEGNAS_MAX_GPUS"], id="16-gpus"
    ),
]


@pytest.mark.parametrize(("body", "names"), ISSUE_SPECS)
def test_the_maxima_of_every_field_are_refused_by_default(body: dict, names: list[str]) -> None:
    detail = over_budget(parse_search_spec(body), Budget())
    assert detail is not None
    for name in names:
        assert name in detail, detail


def test_limits_are_read_from_the_environment() -> None:
    budget = Budget.from_env(
        {
            "SEGNAS_MAX_PARAMS": "2_000_000",
            "SEGNAS_MAX_REPLICA_MEMORY_BYTES": "40GiB",
            "SEGNAS_MAX_DATA_BYTES": "16GB",
            "SEGNAS_MAX_CHECKPOINT_BYTES": "1000000",
            "SEGNAS_MAX_GPUS": "0",
            "SEGNAS_MAX_CPUS": "3.5",
            "SEGNAS_MAX_EPOCHS": " 200 ",
            "SEGNAS_MAX_REPLICAS": "",  # empty: the default
        }
    )
    assert budget.max_params == 2_000_000
    assert budget.max_replica_memory_bytes == 40 * 2**30
    assert budget.max_data_bytes == 16 * 10**9
    assert budget.max_checkpoint_bytes == 10**6
    assert (budget.max_gpus, budget.max_cpus, budget.max_epochs) == (0, 3.5, 200)
    assert budget.max_replicas == Budget().max_replicas


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEGNAS_MAX_PARAMS", "lots"),
        ("SEGNAS_MAX_PARAMS", "1.5"),
        ("SEGNAS_MAX_EPOCHS", "0"),
        ("SEGNAS_MAX_REPLICAS", "-2"),
        ("SEGNAS_MAX_REPLICA_MEMORY_BYTES", "80 parsecs"),
        ("SEGNAS_MAX_GPUS", "-1"),
        ("SEGNAS_MAX_CPUS", "nan"),
    ],
)
def test_a_bad_limit_in_the_environment_fails_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        Settings.from_env()


def test_the_settings_carry_the_limits_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGNAS_MAX_EPOCHS", "7")
    assert Settings.from_env().budget.max_epochs == 7


# through the API, on the real database and Redis


def with_budget(api: TestClient, budget: Budget) -> TestClient:
    """``api`` (conftest's client on the real app) with its server's limits set to ``budget``:
    the handler reads them from the app's settings at each request."""
    state = api.app.state  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"budget": budget})
    return api


def test_a_spec_over_a_limit_is_a_422_naming_it_and_nothing_is_queued(
    api: TestClient, job_queue: JobQueue
) -> None:
    spec = base_spec()
    body = spec.model_dump(mode="json")
    for limit in LIMITS:
        value, below = just_under(limit, spec)
        response = with_budget(api, Budget(**{limit.field: below})).post("/searches", json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/json")
        problem = response.json()
        assert set(problem) <= {"detail", "errors"} and isinstance(problem["detail"], str)
        for word in (limit.env, limit.show(value), limit.show(below)):
            assert word in problem["detail"], (word, problem["detail"])
    assert api.get("/searches").json()["items"] == []
    assert job_queue.waiting() == []
    assert with_budget(api, Budget()).post("/searches", json=body).status_code == 201


def test_the_issue_maxima_are_refused_by_the_default_api(api: TestClient) -> None:
    response = api.post("/searches", json={"epochs": 10_000})
    assert response.status_code == 422, response.text
    assert "SEGNAS_MAX_EPOCHS" in response.json()["detail"]
    assert "10,000" in response.json()["detail"] and "1,000" in response.json()["detail"]
