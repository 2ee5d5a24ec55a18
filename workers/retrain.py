"""Retraining with Ray Tune: architectures of finished searches trained from scratch, tested.

What to train is ``workers.retrain_jobs``; each architecture is one Tune trial
(``workers.retrain_trial``): a fresh child network trained by
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

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from errors import ConfigError
from storage.engine import data_dir
from storage.retrains import RetrainRecord, RetrainStore
from storage.searches import SearchStore
from supernet.metrics import METRIC_NAMES
from workers.retrain_jobs import RetrainJob, RetrainSettings, Target
from workers.retrain_trial import retrain_trial, test_checkpoint
from workers.runtime import ensure_ray, ray_is_remote

TUNE_STORAGE_ENV = "SEGNAS_TUNE_STORAGE"  # where Tune keeps trials (``tune_storage``)


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
            # Every trial on a node reads its validation split from one decode there.
            "cache_dir": str(data_dir().resolve() / "cache"),
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
