"""Placing a search's replicas within ``SEGNAS_PLACEMENT_TIMEOUT_S`` on a real local Ray.

The local Ray of ``local_ray`` has 2 CPUs and no GPU. The timeouts here are short; no test
asserts a duration, only that the search fails (within the timeout) with its message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray

from errors import ConfigError
from searchspec.spec import ResourcesSpec, load_search_spec
from storage.migrate import upgrade
from storage.searches import SearchStore
from workers.entry import run_search
from workers.placement import (
    DEFAULT_PLACEMENT_TIMEOUT_S,
    PLACEMENT_TIMEOUT_ENV,
    PlacementTimeoutError,
    placement_timeout,
    release,
    reserve_replicas,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("local_ray")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def free_cpus() -> float:
    return ray.available_resources().get("CPU", 0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SearchStore]:
    url = f"sqlite:///{tmp_path / 'segnas.db'}"
    upgrade(url)
    store = SearchStore(url)
    yield store
    store.close()


def test_more_cpus_than_the_cluster_has_fail_in_the_timeout_saying_what() -> None:
    with pytest.raises(PlacementTimeoutError) as caught:
        reserve_replicas(ResourcesSpec(replicas=3, cpus_per_replica=1), timeout_s=0.5)
    message = str(caught.value)
    assert "\n" not in message
    for words in [
        "within 0.5 s",
        PLACEMENT_TIMEOUT_ENV,
        "3 replicas x (1 CPU) = 3 CPUs",
        "the cluster has 2 CPUs",
        "0 GPUs (0 free)",
        "resources.replicas",
    ]:
        assert words in message, message
    wait_for("the reservation to be gone", lambda: free_cpus() == 2)


def test_a_gpu_on_a_cpu_cluster_fails_naming_the_gpus() -> None:
    asked = r"1 replica x \(2 CPUs, 1 GPU\) = 2 CPUs, 1 GPU;.*0 GPUs \(0 free\)"
    with pytest.raises(PlacementTimeoutError, match=asked):
        reserve_replicas(ResourcesSpec(cpus_per_replica=2, gpus_per_replica=1), timeout_s=0.5)


def test_a_group_that_fits_is_reserved_until_released() -> None:
    group = reserve_replicas(ResourcesSpec(replicas=2, cpus_per_replica=1), timeout_s=60)
    try:
        wait_for("the reservation to hold both CPUs", lambda: free_cpus() == 0)
    finally:
        release(group)
    wait_for("the CPUs to be free again", lambda: free_cpus() == 2)
    release(None)  # nothing reserved: nothing to do


@ray.remote(num_cpus=2)
class Occupant:
    """Another search's replica holding every CPU of the cluster."""

    def ready(self) -> bool:
        return True


def test_a_search_that_finds_no_room_fails_instead_of_waiting(
    store: SearchStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local Ray has the CPUs the search asks for, but another holds them: the driver
    gives up after the timeout, marks the search failed, and holds nothing afterwards."""
    occupant = Occupant.remote()  # type: ignore[attr-defined]
    try:
        assert ray.get(occupant.ready.remote())
        monkeypatch.setenv(PLACEMENT_TIMEOUT_ENV, "0.5")
        spec = load_search_spec(ROOT / "configs" / "tiny.yaml", {"resources.replicas": 2})
        created: list[str] = []
        with pytest.raises(PlacementTimeoutError):
            run_search(spec, store=store, checkpoint_dir=tmp_path, on_created=created.append)
        record = store.get(created[0])
        assert record.status == "failed"
        assert record.error is not None and record.error.startswith("PlacementTimeoutError: ")
        assert "2 replicas x (1 CPU) = 2 CPUs; the cluster has 2 CPUs (0 free)" in record.error
    finally:
        ray.kill(occupant)
    wait_for("the CPUs to be free again", lambda: free_cpus() == 2)


def test_the_timeout_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLACEMENT_TIMEOUT_ENV, raising=False)
    assert placement_timeout() == DEFAULT_PLACEMENT_TIMEOUT_S
    monkeypatch.setenv(PLACEMENT_TIMEOUT_ENV, "90.5")
    assert placement_timeout() == 90.5
    for bad in ["0", "-1", "soon", "inf", "nan"]:
        monkeypatch.setenv(PLACEMENT_TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=PLACEMENT_TIMEOUT_ENV):
            placement_timeout()


@ray.remote(num_cpus=0)
def reserve_inside(resources: ResourcesSpec) -> bool:
    """As a Tune trial's driver: whether it made a group of its own."""
    return reserve_replicas(resources, timeout_s=0.5) is not None


def test_inside_a_placement_group_the_driver_reserves_nothing() -> None:
    """A Tune trial's placement group already holds its replicas' CPUs (segnas reproduce): a
    reservation of its own would wait for what the trial holds, and time out."""
    parent = ray.util.placement_group([{"CPU": 1}, {"CPU": 1}])
    assert parent.wait(timeout_seconds=60)
    try:
        strategy = ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(
            parent, placement_group_capture_child_tasks=True
        )
        inside = reserve_inside.options(scheduling_strategy=strategy).remote(
            ResourcesSpec(replicas=2, cpus_per_replica=1)
        )
        assert ray.get(inside, timeout=60) is False
    finally:
        release(parent)
    wait_for("the CPUs to be free again", lambda: free_cpus() == 2)
