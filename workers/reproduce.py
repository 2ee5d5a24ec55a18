"""The paper's Table 1: one search per reward function, retrained, compared.

The searches run as a Ray Tune grid over ``reward`` (``search_trial``). Each trial is the
ordinary search driver (``workers.entry.run_search``), whose replica and controller actors Tune
places inside the trial's placement group: the trial itself holds no CPU, one bundle per
replica holds what the spec asks for. A trial that crashes is retried by ``FailureConfig`` and
resumes its search from its last checkpoint (the trial's checkpoint holds the search id).

Then every search's best architectures and a set of random baselines, drawn once and shared by
all searches (same data set, same budget), are retrained in one Tune run
(``workers.retrain``), and the report is written.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from ray import tune

from errors import SearchFaultError
from searchspec.spec import RewardName, SearchSpec
from storage.engine import data_dir
from storage.searches import SearchStore
from workers.entry import open_store, run_search
from workers.retrain import quiet_tune, retrain, save_records, tune_storage
from workers.retrain_jobs import (
    RetrainJob,
    RetrainSettings,
    Target,
    merge_jobs,
    random_archs,
    search_jobs,
)
from workers.retrain_trial import quiet_trial
from workers.runtime import ensure_ray

REWARDS: tuple[RewardName, ...] = ("accuracy", "miou", "miou_plus")
SEARCH_FILE = "search.json"
ASHA_METRIC = "miou"  # one yardstick for every trial of the shared retraining run


class SearchesDone(BaseModel):
    model_config = ConfigDict(frozen=True)

    search_ids: list[str]  # in the order of the rewards asked for
    seconds: float


def search_trial(config: dict[str, Any]) -> None:
    """A Tune trial: one search for ``config["spec"]``; resumes it after a retry."""
    quiet_trial()
    spec = SearchSpec.model_validate(config["spec"])
    store = open_store(config["db_url"])
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = json.loads((Path(folder) / SEARCH_FILE).read_text())["search_id"]
        if store.get(resume).status == "succeeded":
            tune.report({"search_id": resume, "fraction": 1.0, "done": True})
            return
    seen_epochs: set[int] = set()

    def created(search_id: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / SEARCH_FILE).write_text(json.dumps({"search_id": search_id}))
            metrics = {"search_id": search_id, "fraction": 0.0, "done": False}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def progress(p: Any) -> None:
        if p.phase == "controller" and p.epoch not in seen_epochs:
            seen_epochs.add(p.epoch)
            tune.report({"search_id": "", "fraction": p.epoch / p.epochs, "done": False})

    try:
        outcome = run_search(
            None if resume else spec,
            resume=resume,
            store=store,
            checkpoint_dir=Path(config["checkpoint_dir"]),
            on_created=None if resume else created,
            on_progress=progress,
        )
    finally:
        store.close()
    tune.report({"search_id": outcome.search_id, "fraction": 1.0, "done": True})


def run_searches(
    base: SearchSpec,
    rewards: Sequence[RewardName],
    *,
    db_url: str,
    max_failures: int = 1,
    on_progress: Callable[[float], None] | None = None,
) -> SearchesDone:
    """One search of ``base`` per reward, as a Tune grid. Returns the search ids in order.

    Raises:
        SearchFaultError: a search failed even after its retries.
    """
    quiet_tune()
    ensure_ray()
    res = base.resources
    bundle = {"CPU": res.cpus_per_replica, "GPU": res.gpus_per_replica}
    bundle = {k: v for k, v in bundle.items() if v}
    # An empty head bundle: the trial (the driver) holds nothing; its actors use the rest.
    resources = tune.PlacementGroupFactory([{}] + [bundle] * res.replicas)
    specs = [
        base.model_copy(update={"reward": r, "name": f"{base.name or 'search'}-{r}"})
        for r in rewards
    ]
    tuner = tune.Tuner(
        tune.with_resources(search_trial, resources),
        param_space={
            "spec": tune.grid_search([s.model_dump(mode="json") for s in specs]),
            "db_url": db_url,
            "checkpoint_dir": str((data_dir() / "checkpoints").resolve()),
        },
        tune_config=tune.TuneConfig(
            trial_dirname_creator=lambda trial: f"search-{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=tune_storage(),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[_Fractions(len(specs), on_progress)] if on_progress else [],
            log_to_file=False,
            verbose=0,
        ),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    by_reward: dict[str, str] = {}
    for result in grid:
        reward = result.config["spec"]["reward"]
        if result.error is not None or not (result.metrics or {}).get("done"):
            raise SearchFaultError(
                f"the {reward} search failed: {str(result.error).strip().splitlines()[-1]}"
            )
        by_reward[reward] = result.metrics["search_id"]
    return SearchesDone(
        search_ids=[by_reward[r] for r in rewards], seconds=time.perf_counter() - started
    )


def reproduction_jobs(
    store: SearchStore, search_ids: Sequence[str], settings: RetrainSettings
) -> list[RetrainJob]:
    """Each search's ``top_k`` best, and ``settings.random`` random architectures shared by all
    searches (drawn once, unlike any of their best), merged so each training runs once."""
    if not search_ids:
        raise ValueError("no search to retrain")
    jobs: list[RetrainJob] = []
    for search_id in search_ids:
        spec, found = search_jobs(store, search_id, settings.model_copy(update={"random": 0}))
        jobs += [j.model_copy(update={"metric": ASHA_METRIC}) for j in found]
    searched = {tuple(j.arch) for j in jobs}
    for rank, arch in enumerate(
        random_archs(spec.space, settings.random, seed=settings.seed, exclude=searched)
    ):
        targets = [
            Target(search_id=s, source="random", rank=rank, shared_score=None) for s in search_ids
        ]
        jobs.append(
            RetrainJob(
                arch=arch,
                dataset=spec.dataset.model_dump(mode="json"),
                space=spec.space.model_dump(mode="json"),
                metric=ASHA_METRIC,
                targets=targets,
            )
        )
    return merge_jobs(jobs)


def retrain_searches(
    store: SearchStore,
    search_ids: Sequence[str],
    settings: RetrainSettings,
    *,
    on_epoch: Callable[[int, int], None] | None = None,
) -> None:
    """Retrain the searches' architectures and the shared baselines; rows to the database."""
    jobs = reproduction_jobs(store, search_ids, settings)
    records = retrain(
        jobs,
        settings,
        on_epoch=on_epoch,
        name=f"reproduce-retrain-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    save_records(store, jobs, records)


class _Fractions(tune.Callback):
    """The mean fraction done of the searches, for a progress bar."""

    def __init__(self, searches: int, on_progress: Callable[[float], None]) -> None:
        self.searches, self.on_progress = searches, on_progress
        self._fraction: dict[str, float] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self._fraction[trial.trial_id] = float(result.get("fraction", 0.0))
        self.on_progress(sum(self._fraction.values()) / self.searches)
