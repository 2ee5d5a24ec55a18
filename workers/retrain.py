"""Retraining with Ray Tune: architectures of finished searches trained from scratch, tested.

Each architecture is one Tune trial (``retrain_trial``): a fresh child network trained by
``supernet.training.ChildTrainer`` an epoch at a time, reporting its validation score and a
checkpoint after every epoch. An ASHA scheduler may stop the weaker trials at its rungs;
``FailureConfig`` retries a trial that crashed from its last checkpoint. Once every trial
has ended, one Ray task per trial (with the trial's resources) evaluates its last checkpoint
on the test split and keeps its weights, and the rows go to the ``retrains`` table.

The same architecture asked for by several searches of one data set (a random baseline of a
reproduction, or two searches that found the same network) is trained once; each search gets
its row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import ray
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from errors import ConfigError
from searchspec.spec import SearchSpec, SpaceSpec
from storage.engine import data_dir
from storage.retrains import RetrainRecord, RetrainSource, RetrainStore
from storage.searches import SearchStore
from supernet.data import load_dataset
from supernet.metrics import METRIC_NAMES
from supernet.space import SearchSpace
from supernet.training import ChildTrainer, TrainConfig
from workers.runtime import ensure_ray

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
RANDOM_TRIES = 1000
TUNE_STORAGE_ENV = "SEGNAS_TUNE_STORAGE"  # draws per wanted random architecture before giving up


class RetrainSettings(BaseModel):
    """How the architectures are retrained.

    Args:
        epochs: epochs per trial (the length of each cosine schedule).
        top_k: the best distinct architectures of each search's derive phase to retrain.
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


# Choosing what to retrain


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
    return spec, jobs


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


# The trial


def retrain_trial(config: dict[str, Any]) -> None:
    """A Tune trial: train ``config["job"]``'s architecture, report and checkpoint per epoch."""
    quiet_trial()
    job = RetrainJob.model_validate(config["job"])
    train = TrainConfig.model_validate(config["train"])
    torch.set_num_threads(max(1, int(config["cpus"])))
    torch.manual_seed(train.seed)
    trainer, _ = _trainer(job, train)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry after a crash goes on from the last epoch
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=True))
    while trainer.epoch < train.epochs:
        stats = trainer.train_epoch()
        metrics = {
            "epoch": trainer.epoch,
            "score": getattr(stats.val, job.metric),
            "train_loss": stats.train_loss,
            **{f"val_{name}": getattr(stats.val, name) for name in METRIC_NAMES},
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def quiet_trial() -> None:
    """Inside a trial: no log line per checkpoint reported."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def _trainer(job: RetrainJob, train: TrainConfig) -> tuple[ChildTrainer, SearchSpace]:
    data = load_dataset(job.dataset)
    space = SpaceSpec.model_validate(job.space).build(
        num_classes=data.num_classes, in_channels=data.in_channels
    )
    return ChildTrainer(space, job.arch, data, train), space


def test_checkpoint(
    job: dict[str, Any], train: dict[str, Any], checkpoint: tune.Checkpoint
) -> dict[str, Any]:
    """A trial's last checkpoint on the test split. Runs as a Ray task on any node, so the
    weights travel back in the answer (a few MB) rather than in that node's files."""
    retrain = RetrainJob.model_validate(job)
    config = TrainConfig.model_validate(train)
    trainer, space = _trainer(retrain, config)
    with checkpoint.as_directory() as folder:
        trainer.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=True))
    result = trainer.result()
    weights = io.BytesIO()
    torch.save(trainer.model.state_dict(), weights)
    data = trainer.data
    return {
        "params": result.params,
        "epochs": trainer.epoch,
        "test": {name: getattr(result.test, name) for name in METRIC_NAMES},
        "val": result.val.model_dump(mode="json"),
        "space": space.model_dump(mode="json"),
        "weights": weights.getvalue(),
        "data": {
            "classes": list(data.class_names),
            "mean": list(data.mean),
            "std": list(data.std),
            "ignore_index": data.ignore_index,
            "input_size": int(retrain.dataset.get("size") or data.val[0][0].shape[-1]),
        },
    }


# Running the trials


def retrain(
    jobs: Sequence[RetrainJob],
    settings: RetrainSettings,
    *,
    on_epoch: Callable[[int, int], None] | None = None,
    name: str | None = None,
    callbacks: Sequence[tune.Callback] = (),
) -> list[RetrainRecord]:
    """Train every job as a Tune trial, test each, and return one record per target of each
    job, in the order of ``jobs`` and their targets.

    Args:
        jobs: what to train (merge equal trainings first with ``merge_jobs``).
        settings: budget, scheduler and resources.
        on_epoch: called with (epochs done, epochs in all) as trials report (progress).
        name: the Tune experiment's name (default: ``retrain-<time>-<pid>``).
        callbacks: more Tune callbacks (monitoring; the tests' fault injection).
    """
    quiet_tune()
    ensure_ray()
    _check_resources(settings)
    run = name or f"retrain-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    train = settings.train_config().model_dump(mode="json")
    tuner = tune.Tuner(
        tune.with_resources(
            retrain_trial, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
        ),
        param_space={
            "job": tune.grid_search([j.model_dump(mode="json") for j in jobs]),
            "train": train,
            "cpus": settings.cpus_per_trial,
        },
        tune_config=tune.TuneConfig(
            trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}",
            metric="score",
            mode="max",
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=settings.epochs,
                grace_period=settings.grace_epochs or settings.epochs,
                reduction_factor=settings.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(
            name=run,
            storage_path=tune_storage(),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            log_to_file=False,
            callbacks=[
                *([_EpochCounter(len(jobs), settings.epochs, on_epoch)] if on_epoch else []),
                *callbacks,
            ],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    by_key = {RetrainJob.model_validate(r.config["job"]).key: r for r in grid}
    tested = _test_all(jobs, by_key, train, settings, run)
    records: list[RetrainRecord] = []
    for job, outcome in zip(jobs, tested, strict=True):
        result = by_key[job.key]
        for target in job.targets:
            records.append(_record(job, target, result, outcome, train, settings, run))
    return records


def quiet_tune() -> None:
    """Tune's own chatter (its experiment tables, snapshot warnings) is not what a user of
    segnas reads: the progress bars and the rows are. Before the first Tuner is made."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _check_resources(settings: RetrainSettings) -> None:
    from workers.runtime import ray_is_remote

    if ray_is_remote():
        return
    have = ray.cluster_resources()
    for name, need in (("CPU", settings.cpus_per_trial), ("GPU", settings.gpus_per_trial)):
        if need > have.get(name, 0):
            raise ConfigError(
                f"a trial asks for {need:g} {name}s, this machine has {have.get(name, 0):g}: "
                f"lower --{name.lower()}s-per-trial"
            )


def _test_all(
    jobs: Sequence[RetrainJob],
    by_key: dict[str, Any],
    train: dict[str, Any],
    settings: RetrainSettings,
    run: str,
) -> list[dict[str, Any] | BaseException]:
    task = ray.remote(test_checkpoint).options(
        num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial, max_retries=1
    )
    refs = [
        None
        if by_key[job.key].checkpoint is None
        else task.remote(job.model_dump(mode="json"), train, by_key[job.key].checkpoint)
        for job in jobs
    ]
    outcomes: list[dict[str, Any] | BaseException] = []
    for ref, job in zip(refs, jobs, strict=True):
        if ref is None:
            error = by_key[job.key].error
            outcomes.append(error or RuntimeError("the trial ended without a checkpoint"))
            continue
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as e:
            outcomes.append(e)
            continue
        _write_atomic(weights_path(job, run), outcome.pop("weights"))
        outcomes.append(outcome)
    return outcomes


def weights_path(job: RetrainJob, run: str) -> Path:
    """Where run ``run`` keeps the trained weights of ``job``: a new file per run, so a later
    retraining (other epochs, say) never changes the weights an earlier row points to."""
    return data_dir().resolve() / "retrains" / run / job.key / "model.pt"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)


def tune_storage() -> str:
    """Where Tune keeps trials and checkpoints: ``SEGNAS_TUNE_STORAGE`` (on a cluster of several
    nodes, a shared folder or a cloud URI such as ``s3://bucket/segnas``), else
    ``DATA_DIR/tune``."""
    configured = os.environ.get(TUNE_STORAGE_ENV)
    if configured:
        return configured
    local = (data_dir() / "tune").resolve()
    local.mkdir(parents=True, exist_ok=True)
    return str(local)


def _record(
    job: RetrainJob,
    target: Target,
    result: Any,
    outcome: dict[str, Any] | BaseException,
    train: dict[str, Any],
    settings: RetrainSettings,
    run: str,
) -> RetrainRecord:
    common = {
        "source": target.source,
        "rank": target.rank,
        "arch": job.arch,
        "shared_score": target.shared_score,
        # The trial's own training time (across its retries), not the whole run's.
        "seconds": (result.metrics or {}).get("time_total_s"),
    }
    if isinstance(outcome, BaseException):
        return RetrainRecord(
            **common,
            status="failed",
            epochs=int((result.metrics or {}).get("epoch", 0)),
            params=None,
            **dict.fromkeys(METRIC_NAMES),
            val=None,
            config={"train": train, "settings": settings.model_dump(mode="json")},
            weights_path=None,
            error=_one_line(outcome),
        )
    finished = outcome["epochs"] >= settings.epochs
    test = outcome["test"]
    return RetrainRecord(
        **common,
        status="succeeded" if finished else "stopped",
        epochs=outcome["epochs"],
        params=outcome["params"],
        **{name: _finite(test[name]) for name in METRIC_NAMES},
        val=outcome["val"],
        config={
            "train": train,
            "settings": settings.model_dump(mode="json"),
            "space": outcome["space"],
            "dataset": job.dataset,
            "data": outcome["data"],
            "tune_trial": str(result.path),
        },
        weights_path=str(weights_path(job, run)),
        error=None,
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:500]


class _EpochCounter(tune.Callback):
    """Counts reported epochs across trials for a progress bar; a trial that ended early (ASHA
    stopped it, or it failed) counts the epochs it will never train as done."""

    def __init__(self, trials: int, epochs: int, on_epoch: Callable[[int, int], None]) -> None:
        self.total, self.epochs, self.done, self.on_epoch = trials * epochs, epochs, 0, on_epoch
        self._seen: dict[str, int] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self._advance(trial.trial_id, int(result.get("epoch", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._advance(trial.trial_id, self.epochs)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._advance(trial.trial_id, self.epochs)

    def _advance(self, trial_id: str, epochs: int) -> None:
        before = self._seen.get(trial_id, 0)
        if epochs > before:
            self._seen[trial_id] = epochs
            self.done += epochs - before
            self.on_epoch(min(self.done, self.total), self.total)


def save_records(
    store: SearchStore, jobs: Sequence[RetrainJob], records: Sequence[RetrainRecord]
) -> None:
    """Write each record to its search's rows (one transaction per search)."""
    by_search: dict[str, list[RetrainRecord]] = {}
    targets = [t for job in jobs for t in job.targets]
    for target, record in zip(targets, records, strict=True):
        by_search.setdefault(target.search_id, []).append(record)
    retrains = RetrainStore(store)
    for search_id, rows in by_search.items():
        retrains.save(search_id, rows)
