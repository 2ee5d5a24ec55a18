"""Retraining as Ray Tune trials on a local Ray: a trial killed mid-training is retried by
``FailureConfig`` from its last checkpoint and ends exactly where an uninterrupted one ends."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from ray import tune

from errors import ConfigError
from searchspec.spec import load_search_spec
from workers.retrain import retrain
from workers.retrain_jobs import RetrainJob, RetrainSettings, Target, random_archs

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module", autouse=True)
def data_folder(tmp_path_factory: pytest.TempPathFactory, local_ray: None) -> Iterator[None]:
    os.environ["SEGNAS_DATA_DIR"] = str(tmp_path_factory.mktemp("retrain-data"))
    yield
    os.environ.pop("SEGNAS_DATA_DIR", None)


def job() -> RetrainJob:
    spec = load_search_spec(TINY)
    return RetrainJob(
        arch=[2, 0, 5],
        dataset=spec.dataset.model_dump(mode="json"),
        space=spec.space.model_dump(mode="json"),
        metric="miou",
        targets=[Target(search_id="s" * 32, source="enas", rank=0, shared_score=0.5)],
    )


class KillAfterFirstEpoch(tune.Callback):
    """SIGKILLs the trial's process once, as its second epoch is reported. Tune commits that
    epoch's checkpoint only after the callbacks ran, so the retry resumes from the first."""

    def __init__(self) -> None:
        self.killed: list[int] = []
        self.epochs: list[int] = []  # as reported, across the trial's processes

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self.epochs.append(result["epoch"])
        if not self.killed and result.get("epoch") == 2:
            self.killed.append(result["pid"])
            os.kill(result["pid"], signal.SIGKILL)


def test_a_killed_trial_resumes_from_its_checkpoint_and_trains_the_same_network() -> None:
    settings = RetrainSettings(epochs=3, batch_size=16, max_failures=1)
    straight = retrain([job()], settings)[0]
    killer = KillAfterFirstEpoch()
    resumed = retrain([job()], settings, callbacks=[killer])[0]

    assert len(killer.killed) == 1  # the trial really died once, in epoch 2 of 3
    # The retry went on from the checkpoint of epoch 1 (from scratch: 1, 2, 1, 2, 3).
    assert killer.epochs == [1, 2, 2, 3]
    assert resumed.status == straight.status == "succeeded"
    assert resumed.epochs == straight.epochs == 3
    # Exact resume: weights, optimiser, schedule, data order and RNG all came back.
    for name in ("accuracy", "mean_precision", "mean_recall", "miou", "miou_plus", "val"):
        assert getattr(resumed, name) == getattr(straight, name), name
    assert resumed.weights_path != straight.weights_path  # each run keeps its own weights


def test_a_trial_that_keeps_failing_gets_a_failed_row() -> None:
    settings = RetrainSettings(epochs=2, batch_size=16, max_failures=0)
    broken = job().model_copy(update={"dataset": {**job().dataset, "images": 2}})
    record = retrain([broken], settings)[0]
    assert record.status == "failed"
    assert record.miou is None and record.weights_path is None
    assert "split is empty" in record.error


def test_random_architectures_are_distinct_new_and_refused_when_too_few_exist() -> None:
    space = load_search_spec(TINY).space
    exclude = {(2, 0, 5)}
    archs = random_archs(space, 5, seed=1, exclude=exclude)
    assert len({tuple(a) for a in archs}) == 5 and not {tuple(a) for a in archs} & exclude
    assert archs == random_archs(space, 5, seed=1, exclude=exclude)  # seeded
    tiny = space.model_copy(update={"layers": 1, "cells": ("conv3x3", "sep3x3")})
    with pytest.raises(ConfigError, match="found only 2 of 3"):
        random_archs(tiny, 3, seed=0)
