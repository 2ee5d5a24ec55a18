"""ControllerActor over Ray: tagged batches, updates per complete batch, restart from its file.

Every check compares the actor with an in-process ``ControllerService`` twin built with the same
config and fed the same rewards: the actor must draw and update exactly as the twin does.
"""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"  # before ray is imported: a local test cluster

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError

from controller.actor import ControllerActor, ControllerService
from controller.batcher import RewardError, SampleBatch
from controller.config import ReinforceConfig
from controller.reinforce import UpdateStats

L, K, N = 4, 6, 3  # layers, choices, batch size
CONFIG = ReinforceConfig(batch_size=N, seed=5, hidden_size=16, lr=0.05)
RESTART_WAIT_S = 60.0

T = TypeVar("T")


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(autouse=True, scope="module")
def restore_torch_threads() -> Iterator[None]:
    # ControllerService sets one torch thread for its process; the twins run in this one.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_actor(state_path: Path | None = None) -> Any:
    return ControllerActor.remote(L, K, CONFIG, None if state_path is None else str(state_path))


def make_twin() -> ControllerService:
    return ControllerService(L, K, CONFIG)


def rewards_of(batch: SampleBatch) -> dict[int, float]:
    """A distinct reward per sample, so a reward credited to another sample shows."""
    return {s.sample_id: sum(s.arch) / (L * K) + 0.1 * s.sample_id for s in batch.samples}


def get(ref: Any) -> Any:
    return ray.get(ref, timeout=RESTART_WAIT_S)


def call_until_available(call: Callable[[], T]) -> T:
    """``call()``, retried while the actor is being restarted (bounded: a state, not a delay)."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while True:
        try:
            return call()
        except (ActorUnavailableError, RayActorError) as e:
            if time.monotonic() > deadline:
                pytest.fail(f"the actor did not come back within {RESTART_WAIT_S:.0f} s: {e}")
            time.sleep(0.2)


def wait_for_restored_incarnation(actor: Any) -> None:
    """Wait until calls reach the incarnation Ray restarted after a kill.

    ``ray.kill`` returns before the process is gone: a call made right after it may still be
    served by the old incarnation (which answers ``was_restored() == False``). Only a restarted
    one reads the state file, so the first ``True`` marks the switch; every later call is served
    by the new incarnation. Bounded: a restore that never happens fails here with a message.
    """
    deadline = time.monotonic() + RESTART_WAIT_S
    while not call_until_available(lambda: get(actor.was_restored.remote())):
        if time.monotonic() > deadline:
            pytest.fail(f"no incarnation restored from the state file within {RESTART_WAIT_S} s")
        time.sleep(0.2)


def assert_same_state(a: object, b: object, where: str = "state") -> None:
    """Nested state dicts equal, tensors bitwise."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def run_batch_in_parts(actor: Any, twin: ControllerService) -> UpdateStats:
    """One batch on the actor, rewards sent as separate calls in reverse order; the twin too."""
    batch = get(actor.sample_batch.remote())
    assert batch == twin.sample_batch()
    rewards = rewards_of(batch)
    ids = sorted(rewards, reverse=True)
    results = [get(actor.report.remote(batch.version, {i: rewards[i]})) for i in ids]
    assert results[:-1] == [None] * (len(ids) - 1)
    expected = twin.report(batch.version, rewards)
    assert results[-1] == expected
    assert isinstance(expected, UpdateStats)
    return expected


def test_actor_updates_once_per_complete_batch_whatever_the_order() -> None:
    actor, twin = make_actor(), make_twin()
    assert get(actor.version.remote()) == 0
    assert get(actor.was_restored.remote()) is False
    for step in (1, 2):
        assert run_batch_in_parts(actor, twin).step == step
        assert get(actor.version.remote()) == step
    assert_same_state(get(actor.state_dict.remote()), twin.state_dict())


def test_actor_parts_sent_concurrently_make_one_update() -> None:
    actor, twin = make_actor(), make_twin()
    batch = get(actor.sample_batch.remote())
    assert batch == twin.sample_batch()
    rewards = rewards_of(batch)
    # All parts in flight at once: an actor runs its calls one at a time, in submission order.
    refs = [actor.report.remote(batch.version, {i: r}) for i, r in reversed(rewards.items())]
    results = get(refs)
    assert results[:-1] == [None] * (N - 1)
    assert results[-1] == twin.report(batch.version, rewards)
    assert get(actor.version.remote()) == 1


def test_actor_refuses_stale_rewards_and_keeps_serving() -> None:
    actor, twin = make_actor(), make_twin()
    batch = get(actor.sample_batch.remote())
    twin.sample_batch()
    rewards = rewards_of(batch)
    with pytest.raises(RewardError, match="version"):
        get(actor.report.remote(batch.version + 1, rewards))
    assert get(actor.report.remote(batch.version, rewards)) == twin.report(0, rewards)


def test_restarted_actor_continues_from_its_state_file(tmp_path: Path) -> None:
    state_path = tmp_path / "controller" / "state.pt"
    actor, twin = make_actor(state_path), make_twin()
    for _ in range(2):
        run_batch_in_parts(actor, twin)
    assert state_path.exists()

    ray.kill(actor, no_restart=False)
    wait_for_restored_incarnation(actor)

    assert get(actor.version.remote()) == 2
    batch = get(actor.sample_batch.remote())
    assert batch == twin.sample_batch()
    assert batch.samples[0].sample_id == 2 * N
    rewards = rewards_of(batch)
    assert get(actor.report.remote(batch.version, rewards)) == twin.report(2, rewards)
    assert_same_state(get(actor.state_dict.remote()), twin.state_dict())


def test_actor_without_a_state_file_starts_fresh(tmp_path: Path) -> None:
    actor = make_actor(tmp_path / "absent.pt")
    assert get(actor.was_restored.remote()) is False
    assert get(actor.sample_batch.remote()) == make_twin().sample_batch()


def test_state_loaded_into_the_actor_comes_back_out_and_continues() -> None:
    source = make_twin()
    for _ in range(2):
        batch = source.sample_batch()
        source.report(batch.version, rewards_of(batch))
    state = source.state_dict()

    actor = make_actor()
    get(actor.sample_batch.remote())  # an open batch, dropped by the load
    get(actor.load_state_dict.remote(state))
    assert_same_state(get(actor.state_dict.remote()), state)
    assert get(actor.version.remote()) == 2
    batch = get(actor.sample_batch.remote())
    assert batch == source.sample_batch()
    rewards = rewards_of(batch)
    assert get(actor.report.remote(batch.version, rewards)) == source.report(2, rewards)


def test_reset_returns_to_the_seeded_initial_policy(tmp_path: Path) -> None:
    actor = make_actor(tmp_path / "state.pt")
    fresh = make_actor()
    first = get(fresh.sample_batch.remote())
    assert first == make_twin().sample_batch()

    batch = get(actor.sample_batch.remote())
    assert batch == first
    get(actor.report.remote(0, rewards_of(batch)))
    get(actor.sample_batch.remote())
    assert get(actor.version.remote()) == 1

    get(actor.reset.remote())
    assert get(actor.version.remote()) == 0
    assert get(actor.sample_batch.remote()) == first
    assert_same_state(get(actor.state_dict.remote()), get(fresh.state_dict.remote()))
