"""``segnas evaluate``: is the search better than chance? ENAS against its controls, retrained.

After Yu et al., "Evaluating the search phase of neural architecture search" (ICLR 2020). For
every seed of the evaluation:

- ``enas_<reward>``: an ENAS search with each reward (the spec's seed plus the evaluation seed);
- ``random_ws``: random search with weight sharing, the same search with
  ``controller.sampler: uniform`` (the same shared-weight budget trained on uniformly drawn
  architectures, then the best of ``derive.samples`` uniform draws on the validation split);
- ``largest``: the architecture with the most parameters in the space (the same every seed);
- ``param_matched_<reward>``: a uniformly drawn architecture within ``match_tolerance`` of the
  parameters of that reward's ENAS pick (``param_matched``: the spec's reward's);
- where the spec's reward weighs size (``reward_cost``): ``unconstrained``, the same search
  with the metric alone, and ``unconstrained_shrunk``, its pick with the channels that give it
  the parameters of the size-aware pick (MnasNet's question: is the search's small network
  better than a big one made small?).

Ground truth: ``uniform`` architectures drawn once, and every pick, retrained from scratch with
one budget (``workers.retrain``: a Ray Tune trial each) under ``train_seeds`` training seeds,
tested on the test split. The uniform architectures are also scored under the shared weights
of each seed's supernets (every reward's and the uniform one), for Kendall's tau; the
training seeds' agreement with each other over them (``ground_truth``) is the ceiling that
tau can be read against.

Everything lives in the database (``storage.evaluations``; the searches are ordinary searches,
with their pages). The evaluation's id is a digest of the spec and the settings: running the
same evaluation again finds its rows and goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from errors import SearchFaultError
from reports.evaluation import (
    ENAS_METHODS,
    MATCHED_METHODS,
    Network,
    paper_observations,
    retrained_means,
    seed_agreement,
    summarise,
)
from searchspec.spec import CheckpointSpec, RewardName, SearchSpec, apply_overrides
from storage.evaluations import EvaluationRecord, EvaluationStore, ScoreRecord, TrainingRecord
from storage.searches import SearchStore
from supernet.space import SearchSpace
from workers.driver import one_line_error
from workers.entry import run_search
from workers.retrain import retrain
from workers.retrain_jobs import RetrainJob, RetrainSettings, Target, random_archs
from workers.runtime import ensure_ray

log = logging.getLogger(__name__)

MATCH_TRIES = 100_000
"""Uniform draws tried for a parameter-matched architecture before giving up."""
TRAIN_CHUNK = 16
"""Trainings per Tune run: what an interruption can lose at most."""


class EvaluateSettings(BaseModel):
    """What ``segnas evaluate`` runs.

    Args:
        seeds: evaluation seeds (each: one search per reward, one random search, controls).
        rewards: the ENAS searches' rewards.
        uniform: uniformly drawn architectures retrained as ground truth.
        epochs: epochs of every search (None: the spec's).
        train_seeds: training seeds of every retrained architecture.
        retrain_epochs: epochs of every retraining.
        batch_size: retraining batch size.
        cpus_per_trial: CPUs of each retraining trial.
        match_tolerance: relative parameter distance of ``param_matched`` to the ENAS pick.
        arch_seed: seed of the uniform draw (the same architectures for every seed).
        parallel: searches run at once (each asks Ray for its spec's resources).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(3, ge=1, le=20)
    rewards: tuple[RewardName, ...] = ("accuracy", "miou", "miou_plus")
    uniform: int = Field(30, ge=0, le=1000)
    epochs: int | None = Field(None, ge=1, le=10_000)
    train_seeds: int = Field(2, ge=1, le=10)
    retrain_epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    cpus_per_trial: float = Field(1, gt=0, le=256)
    match_tolerance: float = Field(0.1, gt=0, le=1)
    arch_seed: int = Field(0, ge=0, lt=2**31)
    parallel: int = Field(1, ge=1, le=64)

    @field_validator("rewards")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("rewards must be a non-empty list of distinct reward names")
        return value


def evaluation_id(spec: SearchSpec, settings: EvaluateSettings) -> str:
    """The evaluation of ``spec`` under ``settings``: the same inputs, the same id (how many
    searches run at once changes no result, so it is not part of it)."""
    # A section added to the spec after an evaluation began does not change its identity
    # while it keeps its defaults: the same evaluation continues on newer code.
    later = {"checkpoints"} if spec.checkpoints == CheckpointSpec() else set()
    if spec.reward_cost is None:
        later.add("reward_cost")
    blob = json.dumps(
        [
            spec.model_dump(mode="json", exclude=later),
            settings.model_dump(mode="json", exclude={"parallel"}),
        ],
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def search_spec(base: SearchSpec, seed: int, method: str, tag: str) -> SearchSpec:
    """The spec of one of the evaluation's searches."""
    overrides: dict[str, Any] = {
        "seed": base.seed + seed,
        "controller.seed": base.controller.seed + seed,
        "name": f"evaluate {tag} seed {seed} {method}",
        "checkpoints.keep_after_success": True,  # its supernet is scored after it ends
    }
    if method == "random_ws":
        overrides["controller.sampler"] = "uniform"
    elif method == "unconstrained":  # the spec's metric, without its size
        overrides["reward_cost"] = None
    else:
        overrides["reward"] = next(r for r, m in ENAS_METHODS.items() if m == method)
    return SearchSpec.model_validate(apply_overrides(base.model_dump(mode="json"), overrides))


class Progress(BaseModel):
    """Where the evaluation stands, for a progress bar."""

    stage: str  # searches | retrain | scores | summary
    done: int
    total: int
    detail: str = ""


class Evaluation:
    """Runs (or continues) one evaluation.

    Args:
        base: the search spec every search starts from.
        settings: what to run.
        store: the database.
        checkpoint_dir: the searches' checkpoint folder.
        on_progress: called as stages advance.
    """

    def __init__(
        self,
        base: SearchSpec,
        settings: EvaluateSettings,
        *,
        store: SearchStore,
        checkpoint_dir: Path,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        if settings.epochs is not None:
            base = SearchSpec.model_validate(
                apply_overrides(base.model_dump(mode="json"), {"epochs": settings.epochs})
            )
        self.base, self.settings = base, settings
        self.store, self.evaluations = store, EvaluationStore(store)
        self.checkpoint_dir = checkpoint_dir
        self.on_progress = on_progress
        self.id = evaluation_id(base, settings)
        self.metric = base.reward
        self._lock = threading.Lock()

    def _progress(self, stage: str, done: int, total: int, detail: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(stage=stage, done=done, total=total, detail=detail))

    @property
    def methods(self) -> list[str]:
        """The searches of every seed."""
        methods = [ENAS_METHODS[r] for r in self.settings.rewards] + ["random_ws"]
        return methods + (["unconstrained"] if self.base.reward_cost is not None else [])

    @property
    def match_method(self) -> str:
        """The ENAS method whose pick ``param_matched`` matches: the spec's reward's."""
        wanted = ENAS_METHODS.get(self.metric)
        return wanted if wanted in self.methods else self.methods[0]

    def run(self) -> dict[str, Any]:
        """Run what is not done yet; the summary (also stored in the evaluation's row)."""
        record, created = self.evaluations.open(
            self.id,
            spec=self.base.model_dump(mode="json"),
            settings=self.settings.model_dump(mode="json"),
        )
        if not created:
            log.info("continuing evaluation %s", self.id)
            self.evaluations.mark_running(self.id)
        try:
            summary = self._run(record)
        except BaseException as e:
            self.evaluations.finish(self.id, "failed", error=one_line_error(e))
            raise
        self.evaluations.finish(self.id, "succeeded", summary=summary)
        return summary

    def _run(self, record: EvaluationRecord) -> dict[str, Any]:
        searches = self._searches(dict(record.searches))
        space = self._space()  # loads the data set: once, for both
        picks = self._picks(searches, space)
        widths = self._shrunk(picks, space)
        uniform = random_archs(self.base.space, self.settings.uniform, seed=self.settings.arch_seed)
        # The picks first: an evaluation interrupted in its retraining has its methods' figures.
        self._train(
            [
                (tuple(arch), widths.get(seed, {}).get(method))
                for seed, by in picks.items()
                for method, arch in by.items()
            ],
            [(tuple(arch), None) for arch in uniform],
        )
        rows = [r.model_dump() for r in self.evaluations.trainings(self.id)]
        shared = self._shared_scores(searches, uniform)
        self._progress("summary", 1, 1)
        cost = self.base.reward_cost
        summary = summarise(
            picks=picks,
            trained=retrained_means(rows),
            shared=shared,
            uniform=uniform,
            metric=self.metric,
            channels=widths,
            size_target=cost.target if cost is not None and cost.cost == "params" else None,
        )
        summary["ground_truth"] = seed_agreement(rows, uniform, self.metric)
        summary["paper"] = paper_observations(summary["methods"], self.base.space.cells)
        summary["evaluation_id"] = self.id
        summary["searches"] = {
            f"{seed}/{method}": sid for (seed, method), sid in sorted(searches.items())
        }
        summary["settings"] = self.settings.model_dump(mode="json")
        return summary

    # searches

    def _searches(self, known: dict[str, str]) -> dict[tuple[int, str], str]:
        slots = [(seed, m) for seed in range(self.settings.seeds) for m in self.methods]
        ids: dict[tuple[int, str], str] = {}
        todo = []
        for seed, method in slots:
            search_id = known.get(f"{seed}/{method}")
            if search_id is not None and self.store.get(search_id).status == "succeeded":
                ids[(seed, method)] = search_id
            else:
                todo.append((seed, method, search_id))
        self._progress("searches", len(ids), len(slots))
        if todo:
            ensure_ray()  # once, from this thread, before the searches' threads use it
        # Searches in parallel threads: each drives its own actors, and the database takes
        # writers from several threads.
        with ThreadPoolExecutor(max_workers=self.settings.parallel) as pool:
            running = {pool.submit(self._search, *slot): slot for slot in todo}
            try:
                for done in as_completed(running):
                    seed, method, _ = running[done]
                    ids[(seed, method)] = done.result()
                    self._progress("searches", len(ids), len(slots), f"{seed}/{method}")
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return ids

    def _search(self, seed: int, method: str, search_id: str | None) -> str:
        slot = f"{seed}/{method}"

        def created(new_id: str) -> None:
            # The row's search map is read, changed and written back: one thread at a time
            # (SQLite has no row locks to do it for us).
            with self._lock:
                self.evaluations.add_search(self.id, slot, new_id)

        outcome = run_search(
            None if search_id else search_spec(self.base, seed, method, self.id[:8]),
            resume=search_id,
            store=self.store,
            checkpoint_dir=self.checkpoint_dir,
            on_created=None if search_id else created,
        )
        if outcome.status != "succeeded":
            raise SearchFaultError(f"search {outcome.search_id} ({slot}) {outcome.status}")
        return outcome.search_id

    # the architectures each method gives

    def _picks(
        self, searches: dict[tuple[int, str], str], space: SearchSpace
    ) -> dict[int, dict[str, list[int]]]:
        largest = largest_arch(space)
        picks: dict[int, dict[str, list[int]]] = {}
        for (seed, method), search_id in searches.items():
            result = self.store.result(search_id)
            if result is None:
                raise SearchFaultError(f"search {search_id} succeeded without a result")
            picks.setdefault(seed, {})[method] = list(result.arch)
        for seed, by in picks.items():
            by["largest"] = largest
            for method in ENAS_METHODS.values():
                if method in by:  # every reward's pick gets a control of its own size
                    by[MATCHED_METHODS[method]] = param_matched(
                        space,
                        by[method],
                        tolerance=self.settings.match_tolerance,
                        seed=self.settings.arch_seed * 1_000 + seed,
                    )
            by["param_matched"] = by[MATCHED_METHODS[self.match_method]]
            if "unconstrained" in by:
                by["unconstrained_shrunk"] = by["unconstrained"]  # at other channels: _shrunk
        return picks

    def _shrunk(
        self, picks: dict[int, dict[str, list[int]]], space: SearchSpace
    ) -> dict[int, dict[str, int]]:
        """``{seed: {"unconstrained_shrunk": channels}}``: the channels at which each seed's
        unconstrained pick has the parameters of its size-aware pick (none where that is its
        space's own: then it is the unconstrained pick itself)."""
        widths: dict[int, dict[str, int]] = {}
        for seed, by in picks.items():
            if "unconstrained_shrunk" not in by:
                continue
            goal = whole_params(space, by[self.match_method])
            channels = shrunk_channels(space, by["unconstrained_shrunk"], goal)
            if channels != space.channels:
                widths[seed] = {"unconstrained_shrunk": channels}
        return widths

    def _space(self) -> SearchSpace:
        from supernet.data import load_dataset

        data = load_dataset(self.base.dataset)
        return self.base.space.build(num_classes=data.num_classes, in_channels=data.in_channels)

    # ground truth

    def _train(self, *groups: Sequence[Network]) -> None:
        """Train every network of ``groups`` with every training seed, group by group (each
        group's seeds before the next group), skipping what is stored."""
        done = {
            ((tuple(r.arch), r.channels), r.train_seed) for r in self.evaluations.trainings(self.id)
        }
        seen: set[Network] = set()
        plan: list[list[Network]] = []
        for group in groups:
            distinct = [a for a in dict.fromkeys(group) if a not in seen]
            seen.update(distinct)
            plan.append(distinct)
        total = len(seen) * self.settings.train_seeds
        finished = len(done & {(a, s) for a in seen for s in range(self.settings.train_seeds)})
        self._progress("retrain", finished, total)
        for distinct in plan:
            for seed in range(self.settings.train_seeds):
                mine = [arch for arch in distinct if (arch, seed) not in done]
                for first in range(0, len(mine), TRAIN_CHUNK):
                    chunk = mine[first : first + TRAIN_CHUNK]
                    self.evaluations.add_trainings(self.id, self._train_chunk(chunk, seed))
                    finished += len(chunk)
                    self._progress("retrain", finished, total, f"training seed {seed}")

    def _train_chunk(self, networks: Sequence[Network], seed: int) -> list[TrainingRecord]:
        s = self.settings
        settings = RetrainSettings(
            epochs=s.retrain_epochs,
            batch_size=s.batch_size,
            seed=seed,
            cpus_per_trial=s.cpus_per_trial,
        )
        # The rows go to the evaluation's tables, not a search's: the target only carries the
        # architecture through the run.
        space = self.base.space.model_dump(mode="json")
        jobs = [
            RetrainJob(
                arch=list(arch),
                dataset=self.base.dataset.model_dump(mode="json"),
                space=space if channels is None else {**space, "channels": channels},
                metric=self.metric,
                targets=[Target(search_id=self.id, source="random", rank=0, shared_score=None)],
            )
            for arch, channels in networks
        ]
        records = retrain(jobs, settings, name=f"evaluate-{self.id[:8]}-seed{seed}")
        # In the jobs' order (retrain answers each job in turn): each record's channels.
        return [
            TrainingRecord(
                arch=r.arch,
                channels=channels,
                train_seed=seed,
                status=r.status,
                params=r.params,
                accuracy=r.accuracy,
                mean_precision=r.mean_precision,
                mean_recall=r.mean_recall,
                miou=r.miou,
                miou_plus=r.miou_plus,
                error=r.error,
                seconds=r.seconds,
            )
            for r, (_, channels) in zip(records, networks, strict=True)
        ]

    # shared-weight rankings

    def _shared_scores(
        self, searches: dict[tuple[int, str], str], uniform: Sequence[Sequence[int]]
    ) -> dict[int, dict[str, dict[tuple[int, ...], float]]]:
        from workers.shared_scores import score_checkpoint

        # "enas" is the spec's reward's supernet; every other reward's is scored too.
        supernets = {"enas": self.match_method, "uniform": "random_ws"}
        supernets |= {m: m for m in self.methods if m not in supernets.values()}
        known = self.evaluations.scores(self.id)
        done = {(r.search_id, tuple(r.arch)) for r in known}
        jobs = [
            (seed, name, searches[(seed, method)])
            for seed in range(self.settings.seeds)
            for name, method in supernets.items()
        ]
        for k, (_, _, search_id) in enumerate(jobs):
            self._progress("scores", k, len(jobs))
            todo = [list(a) for a in uniform if (search_id, tuple(a)) not in done]
            if not todo:
                continue
            checkpoint = self.store.last_checkpoint(search_id)
            if checkpoint is None or not Path(checkpoint.path).is_file():
                raise SearchFaultError(
                    f"search {search_id} has no checkpoint file left to score its supernet"
                )
            metrics = score_checkpoint(checkpoint.path, todo)
            self.evaluations.add_scores(
                self.id,
                [
                    ScoreRecord(search_id=search_id, arch=a, metrics=m)
                    for a, m in zip(todo, metrics, strict=True)
                ],
            )
        self._progress("scores", len(jobs), len(jobs))
        by_search: dict[str, dict[tuple[int, ...], float]] = {}
        for r in self.evaluations.scores(self.id):
            by_search.setdefault(r.search_id, {})[tuple(r.arch)] = r.metrics[self.metric]
        return {
            seed: {
                name: by_search.get(searches[(seed, method)], {})
                for name, method in supernets.items()
            }
            for seed in range(self.settings.seeds)
        }


def cell_params(space: SearchSpace) -> list[int]:
    """Parameters of each cell of ``space`` at its channel count (a cell's count does not
    depend on where it sits: the channels are constant through the network)."""
    from supernet.cells import Cell
    from supernet.profile import count_params

    return [count_params(Cell(name, space.channels)) for name in space.cells]


def arch_params(
    space: SearchSpace, arch: Sequence[int], per_cell: Sequence[int] | None = None
) -> int:
    """Parameters of ``arch``'s searched cells (encoder and mirrored decoder): what differs
    between architectures of one space (the stem, merges and head are shared)."""
    per_cell = per_cell if per_cell is not None else cell_params(space)
    return 2 * sum(per_cell[c] for c in arch)


def whole_params(space: SearchSpace, arch: Sequence[int]) -> int:
    """Parameters of ``arch`` as a stand-alone network (what a size-aware reward weighs)."""
    from supernet.profile import ChildSizes

    return ChildSizes(space).params(arch)


def shrunk_channels(space: SearchSpace, arch: Sequence[int], params: int) -> int:
    """The channels, at most ``space``'s, at which ``arch`` as a stand-alone network comes
    closest to ``params`` parameters (the wider of two as close)."""
    sizes = {
        c: whole_params(space.model_copy(update={"channels": c}), arch)
        for c in range(1, space.channels + 1)
    }
    return min(sizes, key=lambda c: (abs(sizes[c] - params), -c))


def largest_arch(space: SearchSpace) -> list[int]:
    """The architecture with the most parameters: the largest cell in every layer."""
    per_cell = cell_params(space)
    biggest = max(range(len(per_cell)), key=lambda c: per_cell[c])
    return [biggest] * space.layers


def param_matched(
    space: SearchSpace, target: Sequence[int], *, tolerance: float, seed: int
) -> list[int]:
    """A uniformly drawn architecture (not ``target`` itself) whose searched cells have within
    ``tolerance`` of ``target``'s parameters.

    Where none is (``target`` near the space's largest or smallest, as an all-conv5x5 pick:
    no random architecture comes within 10 % of it), the closest architecture to it of the
    ``MATCH_TRIES`` draws and of ``target`` with one layer's cell changed, with a warning:
    the control is then as near in size as the space allows, and its parameters say how near.
    """
    per_cell = cell_params(space)
    goal = arch_params(space, target, per_cell)
    rng = random.Random(seed)
    closest: list[int] | None = None
    closest_gap = math.inf
    for _ in range(MATCH_TRIES):
        arch = [rng.randrange(len(space.cells)) for _ in range(space.layers)]
        if arch == list(target):
            continue
        gap = abs(arch_params(space, arch, per_cell) - goal)
        if gap <= tolerance * goal:
            return arch
        if gap < closest_gap:
            closest, closest_gap = arch, gap
    layers = list(range(space.layers))
    rng.shuffle(layers)  # which layer changes, when several are as close: the seed's draw
    neighbours = [
        [*target[:layer], cell, *target[layer + 1 :]]
        for layer in layers
        for cell in range(len(space.cells))
        if cell != target[layer]
    ]
    found = min(
        [*neighbours, *([closest] if closest else [])],
        key=lambda a: abs(arch_params(space, a, per_cell) - goal),
    )
    log.warning(
        "no architecture within %.0f%% of the parameters of %s in %d draws: the closest, %s, "
        "has %d against %d",
        100 * tolerance, list(target), MATCH_TRIES, found,
        arch_params(space, found, per_cell), goal,
    )  # fmt: skip
    return found
