"""RewardBatcher: rewards credited to the architecture that earned them, whatever their order.

Every update the batcher makes is compared, bit for bit, with the one a twin trainer makes when
it is handed the batch's architectures and rewards directly, in sample-id order.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator, Mapping

import pytest
import torch

from controller.batcher import RewardBatcher, RewardError, SampleBatch
from controller.config import ReinforceConfig
from controller.reinforce import ReinforceTrainer, UpdateStats

L, K, N = 5, 6, 4  # layers, choices, batch size
CONFIG = ReinforceConfig(batch_size=N, seed=3, hidden_size=16, lr=0.05)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Tiny tensors: extra intra-op threads only slow updates down on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_trainer() -> ReinforceTrainer:
    return ReinforceTrainer(num_layers=L, num_choices=K, config=CONFIG)


def make_batcher() -> RewardBatcher:
    return RewardBatcher(make_trainer())


def reward_of(sample_id: int, arch: tuple[int, ...]) -> float:
    """A distinct reward per sample, so crediting one to another sample changes the update."""
    return sum(arch) / (L * K) + 0.1 * sample_id + 0.01


def rewards_of(batch: SampleBatch) -> dict[int, float]:
    return {s.sample_id: reward_of(s.sample_id, s.arch) for s in batch.samples}


def ids_of(batch: SampleBatch) -> list[int]:
    return [s.sample_id for s in batch.samples]


def archs_of(batch: SampleBatch) -> list[tuple[int, ...]]:
    return [s.arch for s in batch.samples]


def assert_same_state(a: object, b: object, where: str = "state") -> None:
    """Nested state dicts equal, tensors bitwise."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping), where
        assert set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def same_state(a: object, b: object) -> bool:
    try:
        assert_same_state(a, b)
    except AssertionError:
        return False
    return True


def reference_update(
    twin: ReinforceTrainer, batch: SampleBatch, rewards: Mapping[int, float]
) -> UpdateStats:
    """What the batcher must do: draw the same batch, update on it in sample-id order."""
    assert twin.sample(len(batch.samples)) == archs_of(batch)
    ids = sorted(rewards)
    assert ids == ids_of(batch)
    return twin.update([batch.samples[ids.index(i)].arch for i in ids], [rewards[i] for i in ids])


def report_in_parts(
    batcher: RewardBatcher, version: int, rewards: Mapping[int, float], parts: list[list[int]]
) -> list[UpdateStats | None]:
    return [batcher.report(version, {i: rewards[i] for i in part}) for part in parts]


def assert_matches_reference(
    batcher: RewardBatcher, stats: UpdateStats | None, twin: ReinforceTrainer, expected: UpdateStats
) -> None:
    assert stats == expected
    assert_same_state(batcher.trainer.state_dict(), twin.state_dict())
    assert batcher.pending == 0


# --- crediting -----------------------------------------------------------------------------------


def test_in_order_report_makes_the_reference_update() -> None:
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch()
    assert batch.version == 0 and ids_of(batch) == list(range(N))
    rewards = rewards_of(batch)
    stats = batcher.report(0, rewards)
    assert_matches_reference(batcher, stats, twin, reference_update(twin, batch, rewards))
    assert stats is not None and stats.step == 1 and batcher.version == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_one_by_one_reports_make_the_same_update_as_in_order(seed: int) -> None:
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch()
    rewards = rewards_of(batch)
    order = ids_of(batch)
    random.Random(seed).shuffle(order)
    results = report_in_parts(batcher, 0, rewards, [[i] for i in order])
    assert results[:-1] == [None] * (N - 1)
    assert_matches_reference(batcher, results[-1], twin, reference_update(twin, batch, rewards))


def test_partial_reports_in_reverse_make_the_same_update_as_in_order() -> None:
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch()
    rewards = rewards_of(batch)
    ids = ids_of(batch)
    results = report_in_parts(batcher, 0, rewards, [ids[3:], ids[:1], ids[1:3]])
    assert results[:2] == [None, None]
    assert_matches_reference(batcher, results[2], twin, reference_update(twin, batch, rewards))


def test_report_returns_none_until_the_batch_is_complete_then_stats_of_step_one() -> None:
    batcher = make_batcher()
    batch = batcher.sample_batch()
    rewards = rewards_of(batch)
    for k, sample_id in enumerate(ids_of(batch)[:-1]):
        assert batcher.report(0, {sample_id: rewards[sample_id]}) is None
        assert batcher.pending == N - 1 - k
        assert batcher.version == 0
    last = ids_of(batch)[-1]
    stats = batcher.report(0, {last: rewards[last]})
    assert isinstance(stats, UpdateStats)
    assert stats.step == 1 and batcher.version == 1 and batcher.pending == 0
    assert stats.mean_reward == pytest.approx(sum(rewards.values()) / N)


def test_reference_comparison_detects_rewards_credited_to_the_wrong_architecture() -> None:
    # The reference check above could pass vacuously if the update ignored which reward went
    # with which architecture: a twin given the same rewards permuted must end up elsewhere.
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch()
    assert len(set(archs_of(batch))) == N, "the check needs distinct architectures"
    rewards = rewards_of(batch)
    batcher.report(0, rewards)
    ids = ids_of(batch)
    rotated = {i: rewards[ids[(k + 1) % N]] for k, i in enumerate(ids)}
    reference_update(twin, batch, rotated)
    assert not same_state(batcher.trainer.state_dict(), twin.state_dict())


def test_consecutive_batches_each_make_the_reference_update() -> None:
    batcher, twin = make_batcher(), make_trainer()
    for step in range(1, 4):
        batch = batcher.sample_batch()
        assert batch.version == step - 1
        rewards = rewards_of(batch)
        ids = ids_of(batch)
        stats = report_in_parts(batcher, batch.version, rewards, [ids[::-1][:2], ids[:2]])[-1]
        assert_matches_reference(batcher, stats, twin, reference_update(twin, batch, rewards))
        assert stats is not None and stats.step == step


# --- refused rewards -----------------------------------------------------------------------------


def test_stale_version_is_refused_and_credits_nothing() -> None:
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch()
    rewards = rewards_of(batch)
    with pytest.raises(RewardError, match="version"):
        batcher.report(1, rewards)
    assert batcher.pending == N and batcher.version == 0
    stats = batcher.report(0, rewards)
    assert_matches_reference(batcher, stats, twin, reference_update(twin, batch, rewards))


def test_rewards_for_the_previous_policy_are_refused_after_an_update() -> None:
    batcher, twin = make_batcher(), make_trainer()
    first = batcher.sample_batch()
    batcher.report(0, rewards_of(first))
    reference_update(twin, first, rewards_of(first))
    second = batcher.sample_batch()
    rewards = rewards_of(second)
    with pytest.raises(RewardError, match="version 0"):
        batcher.report(0, rewards)
    assert batcher.pending == N
    stats = batcher.report(1, rewards)
    assert_matches_reference(batcher, stats, twin, reference_update(twin, second, rewards))


def bad_entry(batch: SampleBatch, rewards: Mapping[int, float], kind: str) -> tuple[int, float]:
    first = ids_of(batch)[0]
    if kind == "unknown id":
        return ids_of(batch)[-1] + 100, 0.5
    if kind == "repeated id":
        return first, rewards[first]
    return first, {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[kind]


@pytest.mark.parametrize("kind", ["unknown id", "repeated id", "nan", "inf", "-inf"])
def test_report_with_a_bad_entry_is_refused_whole_and_the_batch_still_completes(kind: str) -> None:
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch()
    rewards = rewards_of(batch)
    ids = ids_of(batch)
    done: list[int] = []
    if kind == "repeated id":
        assert batcher.report(0, {ids[0]: rewards[ids[0]]}) is None
        done = [ids[0]]
    bad_id, bad_reward = bad_entry(batch, rewards, kind)
    # A good entry (with a wrong value: it must not stick) alongside the bad one.
    good = ids[1]
    with pytest.raises(RewardError):
        batcher.report(0, {good: 99.0, bad_id: bad_reward})
    assert batcher.pending == N - len(done)
    assert batcher.version == 0
    # Had the good entry been kept, reporting it again would be refused as a repeat.
    stats = batcher.report(0, {i: rewards[i] for i in ids if i not in done})
    assert_matches_reference(batcher, stats, twin, reference_update(twin, batch, rewards))


def test_report_without_an_open_batch_is_refused() -> None:
    batcher = make_batcher()
    with pytest.raises(RewardError, match="not in the open batch"):
        batcher.report(0, {0: 0.5})
    batch = batcher.sample_batch()
    batcher.report(0, rewards_of(batch))
    with pytest.raises(RewardError):
        batcher.report(1, {ids_of(batch)[0]: 0.5})


# --- sample ids and batches ----------------------------------------------------------------------


def test_sample_ids_keep_increasing_across_batches() -> None:
    batcher = make_batcher()
    seen: list[int] = []
    for _ in range(3):
        batch = batcher.sample_batch()
        seen += ids_of(batch)
        batcher.report(batch.version, rewards_of(batch))
    dropped = batcher.sample_batch(2)  # left open, then replaced
    seen += ids_of(dropped)
    seen += ids_of(batcher.sample_batch())
    assert seen == list(range(3 * N + 2 + N))


def test_unrewarded_samples_take_no_sample_ids() -> None:
    batcher = make_batcher()
    batcher.sample(3)
    batcher.greedy()
    assert ids_of(batcher.sample_batch()) == list(range(N))


def test_new_batch_drops_the_open_one() -> None:
    batcher, twin = make_batcher(), make_trainer()
    dropped = batcher.sample_batch()
    old = rewards_of(dropped)
    old_ids = ids_of(dropped)
    batcher.report(0, {i: old[i] for i in old_ids[:2]})
    assert twin.sample(N) == archs_of(dropped)  # the twin's generator follows the batcher's

    batch = batcher.sample_batch()
    assert batcher.pending == N
    with pytest.raises(RewardError, match="not in the open batch"):
        batcher.report(0, {old_ids[2]: old[old_ids[2]]})
    rewards = rewards_of(batch)
    stats = batcher.report(0, rewards)
    assert_matches_reference(batcher, stats, twin, reference_update(twin, batch, rewards))


def test_batch_size_can_be_given_per_batch() -> None:
    batcher, twin = make_batcher(), make_trainer()
    batch = batcher.sample_batch(2)
    assert ids_of(batch) == [0, 1]
    rewards = rewards_of(batch)
    assert batcher.report(0, {1: rewards[1]}) is None
    stats = batcher.report(0, {0: rewards[0]})
    assert_matches_reference(batcher, stats, twin, reference_update(twin, batch, rewards))


# --- state ---------------------------------------------------------------------------------------


def through_a_file(state: Mapping[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_state_round_trip_continues_identically() -> None:
    batcher = make_batcher()
    for _ in range(2):
        batch = batcher.sample_batch()
        batcher.report(batch.version, rewards_of(batch))
    state = through_a_file(batcher.state_dict())
    restored = make_batcher()
    restored.load_state_dict(state)
    assert restored.version == batcher.version == 2
    assert_same_state(restored.state_dict(), batcher.state_dict())

    for _ in range(2):
        a, b = batcher.sample_batch(), restored.sample_batch()
        assert a == b  # same version, ids and architectures
        rewards = rewards_of(a)
        ids = ids_of(a)
        stats_a = batcher.report(a.version, rewards)
        stats_b = report_in_parts(restored, b.version, rewards, [ids[2:], ids[:2]])[-1]
        assert stats_a == stats_b
        assert_same_state(batcher.state_dict(), restored.state_dict())


def test_state_dict_is_a_snapshot() -> None:
    batcher = make_batcher()
    batcher.sample_batch()
    state = batcher.state_dict()
    before = through_a_file(state)
    batch = batcher.sample_batch()
    batcher.report(0, rewards_of(batch))
    assert_same_state(state, before)


def test_state_taken_with_an_open_batch_resumes_after_it_without_it() -> None:
    batcher = make_batcher()
    open_batch = batcher.sample_batch()
    batcher.report(0, {0: 0.5})
    restored = make_batcher()
    restored.load_state_dict(batcher.state_dict())
    assert restored.pending == 0
    with pytest.raises(RewardError, match="not in the open batch"):
        restored.report(0, {1: 0.5})
    # The next ids and draws follow the open batch, as on the original.
    batcher_next, restored_next = batcher.sample_batch(), restored.sample_batch()
    assert ids_of(restored_next)[0] == ids_of(open_batch)[-1] + 1
    assert restored_next == batcher_next


def test_loading_state_drops_the_open_batch() -> None:
    source = make_batcher()
    batcher = make_batcher()
    batch = batcher.sample_batch()
    batcher.report(0, {0: 0.5})
    batcher.load_state_dict(source.state_dict())
    assert batcher.pending == 0
    with pytest.raises(RewardError, match="not in the open batch"):
        batcher.report(0, {i: 0.5 for i in ids_of(batch)[1:]})
    assert ids_of(batcher.sample_batch()) == list(range(N))
