"""The search driver end to end on a local Ray: rows, reproducibility, resume, replica loss."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray

from searchspec.cost import data_facts
from searchspec.spec import SearchSpec, load_search_spec
from storage.migrate import upgrade
from storage.searches import SearchStore
from supernet.network import build_child
from supernet.profile import count_flops, count_params
from supernet.space import CELL_NAMES, CELL_REGISTRY
from workers.driver import SearchCancelledError, SearchDriver, SearchOutcome, SearchProgress
from workers.entry import run_search

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SearchStore]:
    url = f"sqlite:///{tmp_path / 'segnas.db'}"
    upgrade(url)
    store = SearchStore(url)
    yield store
    store.close()


def tiny(**overrides: object) -> SearchSpec:
    return load_search_spec(TINY, overrides)


def rows(store: SearchStore, search_id: str) -> list[tuple]:
    """Every sample as comparable tuples: slot, architecture, reward, metrics, version."""
    return [
        (s.phase, s.epoch, s.step, s.index, tuple(s.arch), s.reward, s.miou, s.policy_version)
        for s in store.samples(search_id)
    ]


def run(store: SearchStore, tmp_path: Path, spec: SearchSpec, **kwargs: Any) -> SearchOutcome:
    return run_search(spec, store=store, checkpoint_dir=tmp_path / "ckpt", **kwargs)


def stop_at(epoch: int, phase: str, step: int) -> tuple[Callable, Callable]:
    """An on_progress / should_stop pair that asks to stop once the loop has passed a point."""
    reached = []

    def on_progress(p: SearchProgress) -> None:
        if (p.epoch, p.phase, p.step) == (epoch, phase, step):
            reached.append(True)

    return on_progress, lambda: bool(reached)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted tiny search per replica count, to compare the others with."""
    out = {}
    for replicas in (1, 2):
        tmp = tmp_path_factory.mktemp(f"reference{replicas}")
        url = f"sqlite:///{tmp / 'segnas.db'}"
        upgrade(url)
        store = SearchStore(url)
        # The 2-replica search also keeps its newest checkpoint after success (retention), and
        # augments its training batches (supernet.data.feed), so that the replica-loss test
        # holds the augmented batches to exactness too.
        more = {
            "checkpoints.keep": 1, "checkpoints.keep_after_success": True, "dataset.augment": True
        }  # fmt: skip
        spec = tiny(
            **{"resources.replicas": replicas, "epochs": 3, **(more if replicas == 2 else {})}
        )
        outcome = run(store, tmp, spec)
        out[replicas] = {
            "spec": spec,
            "outcome": outcome,
            "search": store.get(outcome.search_id),
            "rows": rows(store, outcome.search_id),
            "sizes": {(tuple(s.arch), s.params, s.flops) for s in store.samples(outcome.search_id)},
            "epochs": store.epochs(outcome.search_id),
            "result": store.result(outcome.search_id),
            "checkpoints": store.checkpoints(outcome.search_id),
            "files": sorted(p.name for p in (tmp / "ckpt").rglob("*") if p.is_file()),
        }
        store.close()
    return out


def test_a_search_records_every_sample_epoch_checkpoint_and_its_result(reference: dict) -> None:
    ref = reference[1]
    spec, outcome = ref["spec"], ref["outcome"]
    per_epoch = spec.controller_phase.steps * spec.controller.batch_size
    derived = spec.derive.samples + int(spec.derive.greedy)
    assert outcome.status == "succeeded"
    assert outcome.samples == len(ref["rows"]) == spec.epochs * per_epoch + derived
    slots = [r[:4] for r in ref["rows"]]
    assert len(set(slots)) == len(slots)
    assert [e.epoch for e in ref["epochs"]] == list(range(spec.epochs))
    # Policy versions: one update per controller step, so step s of epoch e samples version
    # e * steps + s.
    for phase, epoch, step, _, _, _, _, version in ref["rows"]:
        if phase == "controller":
            assert version == epoch * spec.controller_phase.steps + step
    derive = [r for r in ref["rows"] if r[0] == "derive"]
    best = max(derive, key=lambda r: r[5])
    assert ref["result"].arch == list(best[4]) == outcome.best_arch
    assert ref["result"].reward == best[5] == outcome.best_reward
    # and the search row ends with the result as its best, not a one-minibatch reward
    assert ref["search"].best_arch == outcome.best_arch
    assert ref["search"].best_reward == outcome.best_reward
    assert ref["search"].progress["phase"] == "derive"
    # Every row carries its architecture's size as a stand-alone network (its parameters, and
    # its FLOPs at the data set's size); the result too.
    data = data_facts(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    side = (spec.dataset.size, spec.dataset.size)
    for arch, params, flops in ref["sizes"]:
        child = build_child(space, arch)
        assert params == count_params(child), arch
        assert flops == count_flops(child, side, space.in_channels), arch
    assert ref["result"].params == count_params(build_child(space, ref["result"].arch))


def test_a_search_keeps_its_newest_checkpoints_and_none_after_success(reference: dict) -> None:
    assert reference[1]["checkpoints"] == [] and reference[1]["files"] == []
    [kept] = reference[2]["checkpoints"]  # keep: 1, keep_after_success: true
    assert kept.epoch == 2
    assert reference[2]["files"] == sorted(["controller.pt", Path(kept.path).name])


def test_same_spec_and_seed_give_the_same_architectures(
    reference: dict, store: SearchStore, tmp_path: Path
) -> None:
    again = run(store, tmp_path, reference[1]["spec"].model_copy(update={"epochs": 1}))
    first_epoch = [r for r in reference[1]["rows"] if r[0] == "controller" and r[1] == 0]
    repeat = [r for r in rows(store, again.search_id) if r[0] == "controller"]
    assert repeat == first_epoch


def test_another_seed_gives_other_architectures(
    reference: dict, store: SearchStore, tmp_path: Path
) -> None:
    other = run(store, tmp_path, tiny(epochs=1, seed=4))
    first_epoch = [r[4] for r in reference[1]["rows"] if r[0] == "controller" and r[1] == 0]
    assert [r[4] for r in rows(store, other.search_id) if r[0] == "controller"] != first_epoch


@pytest.mark.parametrize("cost", ["params", "flops"])
def test_a_size_aware_reward_weighs_each_sample_by_its_size(
    store: SearchStore, tmp_path: Path, cost: str
) -> None:
    spec = tiny(epochs=1, reward={"metric": "miou", "cost": cost, "target": 20_000, "weight": -0.5})
    assert spec.reward == "miou" and spec.reward_cost is not None
    outcome = run(store, tmp_path, spec)
    samples = store.samples(outcome.search_id)
    assert samples
    for s in samples:  # weight -0.5, a strong one: a size off the target shows in the reward
        size = s.params if cost == "params" else s.flops
        assert s.reward == pytest.approx(s.miou * (size / 20_000) ** -0.5), s.arch
    derive = [s for s in samples if s.phase == "derive"]
    best = max(derive, key=lambda s: s.reward)
    assert outcome.best_arch == best.arch and outcome.best_reward == best.reward
    assert outcome.metrics["miou"] == pytest.approx(best.miou)  # the metrics stay the metric's


def test_a_search_over_every_registered_cell_runs_and_keeps_its_list(
    store: SearchStore, tmp_path: Path
) -> None:
    cells = list(CELL_REGISTRY)
    outcome = run(store, tmp_path, tiny(epochs=1, **{"space.cells": cells}))
    assert outcome.status == "succeeded"
    assert store.get(outcome.search_id).spec["space"]["cells"] == cells  # what indices mean
    chosen = {c for s in store.samples(outcome.search_id) for c in s.arch}
    assert chosen <= set(range(len(cells))) and max(chosen) >= len(CELL_NAMES)


def test_resume_after_interruption_writes_exactly_the_uninterrupted_rows(
    reference: dict, store: SearchStore, tmp_path: Path
) -> None:
    spec = reference[1]["spec"]
    on_progress, should_stop = stop_at(epoch=1, phase="controller", step=2)
    created: list[str] = []
    with pytest.raises(SearchCancelledError):
        run(
            store,
            tmp_path,
            spec,
            on_created=created.append,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    search_id = created[0]
    assert store.get(search_id).status == "cancelled"
    partial = rows(store, search_id)
    assert any(r[1] == 1 for r in partial)  # it stopped inside epoch 1, after writing rows

    outcome = run_search(resume=search_id, store=store, checkpoint_dir=tmp_path / "ckpt")
    assert outcome.search_id == search_id
    assert store.get(search_id).status == "succeeded"
    assert rows(store, search_id) == reference[1]["rows"]
    assert [e.epoch for e in store.epochs(search_id)] == list(range(spec.epochs))


def test_resuming_a_finished_search_is_refused(reference: dict, tmp_path: Path) -> None:
    from errors import ConfigError

    # The reference store is closed; a finished search in a fresh store shows the same rule.
    url = f"sqlite:///{tmp_path / 'done.db'}"
    upgrade(url)
    store = SearchStore(url)
    outcome = run(store, tmp_path, tiny(epochs=1))
    with pytest.raises(ConfigError, match="already succeeded"):
        run_search(resume=outcome.search_id, store=store)
    store.close()


def test_a_killed_replica_is_replaced_and_the_rows_stay_exact(
    reference: dict, store: SearchStore, tmp_path: Path
) -> None:
    spec = reference[2]["spec"]
    search_id = store.create(spec.model_dump(mode="json")).id
    killed: list[bool] = []
    driver: SearchDriver

    def kill_one_replica(p: SearchProgress) -> None:
        if not killed and (p.epoch, p.phase, p.step) == (1, "controller", 1):
            killed.append(True)
            ray.kill(driver.replicas[1], no_restart=True)

    driver = SearchDriver(
        spec, store=store, checkpoint_dir=tmp_path / "ckpt", on_progress=kill_one_replica
    )
    outcome = driver.run(search_id)
    assert killed and outcome.recoveries == 1
    assert outcome.status == "succeeded"
    assert rows(store, search_id) == reference[2]["rows"]


def test_two_replicas_keep_identical_weights_and_norm_statistics(tmp_path: Path) -> None:
    from workers.actors import ReplicaActor

    spec = tiny(**{"resources.replicas": 2}).model_dump(mode="json")
    replicas = [
        ReplicaActor.options(num_cpus=1).remote(spec, rank=r, world_size=2, threads=1)
        for r in range(2)
    ]
    address, port = ray.get(replicas[0].address.remote())
    ray.get([r.join_group.remote(address, port) for r in replicas])
    before = ray.get([r.fingerprint.remote() for r in replicas])
    archs = [(0, 2, 4), (5, 1, 3), (2, 2, 2), (4, 5, 0)]
    losses = ray.get([r.train_steps.remote(0, 0, archs) for r in replicas])
    after = ray.get([r.fingerprint.remote() for r in replicas])
    for r in replicas:
        ray.kill(r)
    assert before[0] == before[1]  # same seed, same initial weights
    assert after[0] == after[1]  # the same steps on different shards, kept in sync
    assert after[0] != before[0]  # and they did train
    assert losses[0] == losses[1]  # every rank reports the group's mean loss


def test_shards_of_a_global_batch_are_disjoint_equal_and_cover_it() -> None:
    from workers.replica import shard_indices

    kwargs = {"seed": 3, "epoch": 2, "step": 5}
    shards = [shard_indices(100, 12, rank=r, world=3, **kwargs) for r in range(3)]
    whole = shard_indices(100, 12, rank=0, world=1, **kwargs)
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(i for shard in shards for i in shard) == sorted(whole)
    assert shard_indices(100, 12, rank=0, world=1, seed=3, epoch=3, step=5) != whole


def test_the_paper_config_runs_on_real_voc_images(store: SearchStore, tmp_path: Path) -> None:
    """configs/voc.yaml, shrunk to fit the 4-image VOC fixture: the VOC path end to end."""
    fixture = Path(__file__).parent / "fixtures" / "voc2012-sample"
    spec = load_search_spec(
        TINY.parent / "voc.yaml",
        {
            "dataset.root": str(fixture),
            "dataset.size": 32,
            "epochs": 1,
            "space.layers": 3,
            "space.channels": 4,
            "shared.batch_size": 2,
            "controller_phase.steps": 2,
            "controller_phase.batch_size": 1,
            "controller.batch_size": 2,
            "derive.samples": 2,
            "resources.replicas": 1,
            "resources.gpus_per_replica": 0,
            "resources.cpus_per_replica": 1,
        },
    )
    outcome = run(store, tmp_path, spec)
    assert outcome.status == "succeeded"
    assert outcome.samples == 2 * 2 + 3
    assert len(outcome.best_arch) == 3


def test_a_gpu_search_on_a_machine_without_gpus_is_refused_not_left_waiting(
    store: SearchStore, tmp_path: Path
) -> None:
    from errors import ConfigError

    gpus = ray.cluster_resources().get("GPU", 0)
    spec = tiny(**{"resources.gpus_per_replica": 1, "resources.replicas": int(gpus) + 1})
    created: list[str] = []
    with pytest.raises(ConfigError, match=r"resources\.gpus_per_replica=0"):
        run(store, tmp_path, spec, on_created=created.append)
    assert store.get(created[0]).status == "failed"


def test_a_controller_restarted_by_ray_is_recovered_and_the_rows_stay_exact(
    reference: dict, store: SearchStore, tmp_path: Path
) -> None:
    spec = reference[1]["spec"]
    search_id = store.create(spec.model_dump(mode="json")).id
    killed: list[bool] = []
    driver: SearchDriver

    def restart_the_controller(p: SearchProgress) -> None:
        # Mid controller phase: Ray restarts it from its state file, which lacks the batch
        # in flight and the draws since the last update.
        if not killed and (p.epoch, p.phase, p.step) == (1, "controller", 1):
            killed.append(True)
            ray.kill(driver.controller, no_restart=False)

    driver = SearchDriver(
        spec, store=store, checkpoint_dir=tmp_path / "ckpt", on_progress=restart_the_controller
    )
    outcome = driver.run(search_id)
    assert killed and outcome.recoveries == 1
    assert rows(store, search_id) == reference[1]["rows"]


def test_an_unreadable_last_checkpoint_falls_back_to_the_one_before(
    reference: dict, store: SearchStore, tmp_path: Path
) -> None:
    spec = reference[1]["spec"]
    on_progress, should_stop = stop_at(epoch=2, phase="controller", step=1)
    created: list[str] = []
    with pytest.raises(SearchCancelledError):
        run(
            store, tmp_path, spec, on_created=created.append, on_progress=on_progress,
            should_stop=should_stop,
        )  # fmt: skip
    search_id = created[0]
    last = store.last_checkpoint(search_id)
    assert last is not None and last.epoch == 1
    Path(last.path).write_bytes(b"torn")  # as if the disk lost the end of the write

    run_search(resume=search_id, store=store, checkpoint_dir=tmp_path / "ckpt")
    assert rows(store, search_id) == reference[1]["rows"]
