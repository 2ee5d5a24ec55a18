"""The controller phase's scoring minibatches: one per controller step, shared by the whole
batch (common random numbers), full, and the same on every rerun."""

from __future__ import annotations

from pathlib import Path

from searchspec.spec import load_search_spec
from workers.replica import SupernetReplica, scoring_minibatch

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def test_a_minibatch_is_full_seeded_and_changes_with_its_key() -> None:
    first = scoring_minibatch(60, 16, seed=3, key=0)
    assert first == scoring_minibatch(60, 16, seed=3, key=0)
    assert len(first) == len(set(first)) == 16 and all(0 <= i < 60 for i in first)
    assert first != scoring_minibatch(60, 16, seed=3, key=1)
    assert first != scoring_minibatch(60, 16, seed=4, key=0)
    assert scoring_minibatch(5, 16, seed=3, key=0) == [0, 1, 2, 3, 4]  # no tail, no repeats


def test_every_architecture_of_a_batch_sees_the_same_images() -> None:
    spec = load_search_spec(TINY).model_dump(mode="json")
    replica = SupernetReplica(spec, rank=0, world_size=1, threads=1)
    arch = [2, 0, 5]
    # The same architecture twice in one batch gets the same score: the same images.
    a, _, c = replica.score_minibatch([arch, [4, 4, 4], arch], key=7, batch_size=8)
    assert a == c
    again = replica.score_minibatch([arch], key=7, batch_size=8)[0]
    assert again == a
