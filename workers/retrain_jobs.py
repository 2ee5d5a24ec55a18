"""What to retrain: the settings of a retraining, and its jobs (an architecture on a data set,
and the rows waiting for its result), taken from a search's derive phase or drawn uniformly,
merged where two ask for the same training."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from errors import ConfigError
from searchspec.spec import SearchSpec, SpaceSpec
from storage.retrains import RetrainSource
from storage.searches import SearchStore
from supernet.training import TrainConfig

RANDOM_TRIES = 1000  # draws per wanted random architecture before giving up

T = TypeVar("T")


class RetrainSettings(BaseModel):
    """How the architectures are retrained.

    Args:
        epochs: epochs per trial (the length of each cosine schedule).
        top_k: the best distinct architectures of each search's derive phase to retrain.
        pareto: architectures spread along each search's size front (its samples that no
            other beats on both reward and parameters, ``GET /front``) to retrain as well, so
            the retrained networks trace reward against size; 0: none.
        random: uniformly random architectures retrained with the same budget, as baselines.
        batch_size, optimizer, lr, seed: the training (``supernet.training.TrainConfig``).
        grace_epochs: ASHA trains every trial at least this long; None: ``epochs``, so ASHA
            stops none (equal budgets, as comparisons between architectures need).
        reduction_factor: ASHA keeps the best 1 / reduction_factor at each rung.
        cpus_per_trial, gpus_per_trial: Ray resources of each trial.
        max_failures: retries of a crashed trial, each from its last checkpoint.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(10, ge=1, le=10_000)
    top_k: int = Field(3, ge=1, le=100)
    random: int = Field(0, ge=0, le=100)
    pareto: int = Field(0, ge=0, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float | None = Field(None, gt=0, le=10)
    seed: int = Field(0, ge=0, lt=2**31)
    grace_epochs: int | None = Field(None, ge=1, le=10_000)
    reduction_factor: int = Field(3, ge=2, le=100)
    cpus_per_trial: float = Field(1, gt=0, le=256)
    gpus_per_trial: float = Field(0, ge=0, le=16)
    max_failures: int = Field(2, ge=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> RetrainSettings:
        if self.grace_epochs is not None and self.grace_epochs > self.epochs:
            raise ValueError(f"grace_epochs ({self.grace_epochs}) exceeds epochs ({self.epochs})")
        return self

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            seed=self.seed,
            device="auto",
        )


class Target(BaseModel):
    """A row that a trained architecture fills in: which search, and why it is trained."""

    model_config = ConfigDict(frozen=True)

    search_id: str
    source: RetrainSource
    rank: int
    shared_score: float | None


class RetrainJob(BaseModel):
    """One architecture to train on one data set, and the rows waiting for its result."""

    model_config = ConfigDict(frozen=True)

    arch: list[int]
    dataset: dict[str, Any]
    space: dict[str, Any]  # a SpaceSpec: classes and channels come from the data set
    metric: str
    targets: list[Target]

    @property
    def key(self) -> str:
        """Names the training itself: data set, space, architecture (not who asked)."""
        blob = json.dumps([self.dataset, self.space, self.arch], sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def search_jobs(
    store: SearchStore, search_id: str, settings: RetrainSettings
) -> tuple[SearchSpec, list[RetrainJob]]:
    """The ``top_k`` best distinct architectures of the search's derive phase (rank 0 is its
    result) and ``settings.random`` random ones, as jobs.

    Raises:
        ConfigError: the search has not succeeded (no derive phase to take them from).
    """
    record = store.get(search_id)
    if record.status != "succeeded":
        raise ConfigError(
            f"search {search_id} is {record.status}: only a search that succeeded can be "
            "retrained (its derive phase ranks the architectures)"
        )
    spec = SearchSpec.model_validate(record.spec)
    ranked: dict[tuple[int, ...], float] = {}
    derive = store.samples(search_id, phase="derive")
    for row in sorted(derive, key=lambda r: (-r.reward, r.index)):
        ranked.setdefault(tuple(row.arch), row.reward)
    best = list(ranked.items())[: settings.top_k]
    jobs = [
        _job(
            spec,
            list(arch),
            Target(search_id=search_id, source="enas", rank=rank, shared_score=score),
        )
        for rank, (arch, score) in enumerate(best)
    ]
    archs = random_archs(spec.space, settings.random, seed=settings.seed, exclude=set(ranked))
    jobs += [
        _job(spec, arch, Target(search_id=search_id, source="random", rank=rank, shared_score=None))
        for rank, arch in enumerate(archs)
    ]
    if settings.pareto:
        front = spread(store.size_front(search_id).points, settings.pareto)
        jobs += [
            _job(
                spec,
                point.arch,
                Target(search_id=search_id, source="pareto", rank=rank, shared_score=point.reward),
            )
            for rank, point in enumerate(front)
        ]
    return spec, jobs


def spread(points: Sequence[T], count: int) -> list[T]:
    """``count`` of ``points`` evenly spaced along them, the first and the last included (all
    of them when there are no more than ``count``)."""
    if len(points) <= count:
        return list(points)
    if count == 1:
        return [points[-1]]
    step = (len(points) - 1) / (count - 1)
    return [points[round(k * step)] for k in range(count)]


def _job(spec: SearchSpec, arch: list[int], target: Target) -> RetrainJob:
    return RetrainJob(
        arch=arch,
        dataset=spec.dataset.model_dump(mode="json"),
        space=spec.space.model_dump(mode="json"),
        metric=spec.reward,
        targets=[target],
    )


def random_archs(
    space: SpaceSpec, count: int, *, seed: int, exclude: set[tuple[int, ...]] = frozenset()
) -> list[list[int]]:
    """``count`` distinct architectures drawn uniformly from ``space``, none in ``exclude``.

    Raises:
        ConfigError: the space has fewer than ``count`` architectures outside ``exclude``.
    """
    rng = random.Random(seed)
    chosen: list[list[int]] = []
    seen = set(exclude)
    for _ in range(count * RANDOM_TRIES):
        if len(chosen) == count:
            break
        arch = tuple(rng.randrange(len(space.cells)) for _ in range(space.layers))
        if arch not in seen:
            seen.add(arch)
            chosen.append(list(arch))
    if len(chosen) < count:
        raise ConfigError(
            f"found only {len(chosen)} of {count} random architectures unlike the searched ones "
            f"in {RANDOM_TRIES * count} draws: the space is too small; ask for fewer"
        )
    return chosen


def merge_jobs(jobs: Sequence[RetrainJob]) -> list[RetrainJob]:
    """One job per distinct training, holding the targets of every job that asked for it."""
    merged: dict[str, RetrainJob] = {}
    for job in jobs:
        if job.key in merged:
            first = merged[job.key]
            merged[job.key] = first.model_copy(update={"targets": [*first.targets, *job.targets]})
        else:
            merged[job.key] = job
    return list(merged.values())
