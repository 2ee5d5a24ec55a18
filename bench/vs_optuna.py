"""What a user would pick instead of ENAS: Optuna's TPE over the same space, at the same cost.

ENAS's side comes from a finished ``segnas evaluate`` (its database and id): for each seed, the
``enas_<reward>`` search's time, the retraining of its pick, and the pick's retrained test
metric (mean over the training seeds). Optuna's side runs here: TPE with one categorical per
layer (the cell), each trial a child trained from scratch (the evaluation's retraining budget:
epochs, batch size), reporting its validation score every epoch to a median pruner, then
tested. Optuna gets the wall-clock of one ENAS search plus its retraining (``--budget`` to
choose another), one core, as each ENAS search had.

    pip install -e ".[bench]"
    python bench/vs_optuna.py --db sqlite:///.segnas/segnas.db --evaluation ID [--budget S]

Compute is counted in core-seconds (wall time x cores used). Last line: one JSON object with
both methods' best retrained test metric, their compute, and the compute each needed to
first reach the other's best (None: never, within what it was given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch

from searchspec.spec import SearchSpec
from storage.evaluations import EvaluationStore
from supernet.data import load_dataset
from supernet.training import ChildTrainer, TrainConfig
from workers.entry import open_store


def enas_side(db: str, evaluation_id: str) -> dict[str, Any]:
    """ENAS's result and cost, per seed and on average, from a finished evaluation."""
    store = open_store(db)
    try:
        record = EvaluationStore(store).get(evaluation_id)
        if record is None or record.summary is None:
            raise SystemExit(f"no finished evaluation {evaluation_id!r} in {db}")
        summary, settings = record.summary, record.settings
        metric = summary["metric"]
        method = f"enas_{metric}"
        trainings = EvaluationStore(store).trainings(evaluation_id)
        seeds = []
        for slot, search_id in summary["searches"].items():
            seed, name = slot.split("/")
            if name != method:
                continue
            epochs = store.epochs(search_id)
            spec = SearchSpec.model_validate(store.get(search_id).spec)
            cores = spec.resources.replicas * spec.resources.cpus_per_replica
            search_seconds = sum(e.seconds for e in epochs)
            arch = summary["methods"][method]["archs"][int(seed)]
            rows = [t for t in trainings if t.arch == arch and t.miou is not None]
            seeds.append(
                {
                    "seed": int(seed),
                    "arch": arch,
                    "test": statistics.fmean(getattr(t, metric) for t in rows),
                    "search_core_seconds": search_seconds * cores,
                    "retrain_core_seconds": sum(t.seconds or 0.0 for t in rows)
                    * settings["cpus_per_trial"],
                    "wall_seconds": search_seconds + sum(t.seconds or 0.0 for t in rows),
                }
            )
        base = SearchSpec.model_validate(record.spec)
    finally:
        store.close()
    return {
        "metric": metric,
        "spec": base,
        "settings": settings,
        "seeds": seeds,
        "best_test": statistics.fmean(s["test"] for s in seeds),
        "core_seconds": statistics.fmean(
            s["search_core_seconds"] + s["retrain_core_seconds"] for s in seeds
        ),
        "wall_seconds": statistics.fmean(s["wall_seconds"] for s in seeds),
    }


def optuna_side(
    spec: SearchSpec, settings: dict[str, Any], metric: str, budget: float, seed: int
) -> dict[str, Any]:
    """TPE + median pruning for ``budget`` seconds on one core."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    data = load_dataset(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    config = TrainConfig(
        epochs=settings["retrain_epochs"], batch_size=settings["batch_size"], seed=seed
    )
    started = time.perf_counter()
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        arch = [
            trial.suggest_categorical(f"layer{i}", list(range(len(space.cells))))
            for i in range(space.layers)
        ]
        trainer = ChildTrainer(space, arch, data, config)
        for epoch in range(config.epochs):
            stats = trainer.train_epoch()
            trial.report(getattr(stats.val, metric), epoch)
            if trial.should_prune():
                trials.append({"arch": arch, "test": None, "pruned_at": epoch + 1,
                               "core_seconds": time.perf_counter() - started})  # fmt: skip
                raise optuna.TrialPruned()
        test = getattr(trainer.result().test, metric)
        trials.append({"arch": arch, "test": test, "core_seconds": time.perf_counter() - started})
        return getattr(stats.val, metric)

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    study.optimize(objective, timeout=budget)
    finished = [t for t in trials if t["test"] is not None]
    if not finished:
        raise SystemExit(f"no Optuna trial finished within {budget:.0f} s: raise --budget")
    # Optuna's own pick: the best validation score; its test metric is what a user gets.
    best = study.best_trial
    pick = next(
        t for t in finished if t["arch"] == [best.params[f"layer{i}"] for i in range(space.layers)]
    )
    return {
        "trials": len(trials),
        "pruned": len(trials) - len(finished),
        "pick": pick,
        "best_test_of_any_trial": max(t["test"] for t in finished),
        "core_seconds": time.perf_counter() - started,
        "history": finished,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="database of the evaluation")
    parser.add_argument("--evaluation", required=True, metavar="ID", help="a finished one")
    parser.add_argument("--budget", type=float, help="Optuna's seconds (default: ENAS's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of TPE and the trainings")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGNAS_ALLOW_UNAUTHENTICATED_RAY", "1")  # a bench machine

    enas = enas_side(args.db, args.evaluation)
    budget = args.budget or enas["wall_seconds"]
    optuna_result = optuna_side(enas["spec"], enas["settings"], enas["metric"], budget, args.seed)
    optuna_best = optuna_result["pick"]["test"]
    reach = next(
        (t["core_seconds"] for t in optuna_result["history"] if t["test"] >= enas["best_test"]),
        None,
    )
    print(
        f"ENAS ({enas['metric']} reward, {len(enas['seeds'])} seeds): retrained test "
        f"{enas['metric']} {enas['best_test']:.4f}, {enas['core_seconds']:.0f} core-s each"
    )
    print(
        f"Optuna TPE ({optuna_result['trials']} trials, {optuna_result['pruned']} pruned, "
        f"{budget:.0f} s): its pick {optuna_best:.4f} "
        f"(best of any trial {optuna_result['best_test_of_any_trial']:.4f}), "
        f"{optuna_result['core_seconds']:.0f} core-s"
    )
    print(
        json.dumps(
            {
                "bench": "vs_optuna",
                "metric": enas["metric"],
                "budget_seconds": round(budget, 1),
                "enas": {
                    "best_test": round(enas["best_test"], 4),
                    "per_seed": [round(s["test"], 4) for s in enas["seeds"]],
                    "core_seconds": round(enas["core_seconds"], 1),
                    "core_seconds_to_reach_optuna": round(enas["core_seconds"], 1)
                    if enas["best_test"] >= optuna_best
                    else None,
                },
                "optuna": {
                    "best_test": round(optuna_best, 4),
                    "best_test_of_any_trial": round(optuna_result["best_test_of_any_trial"], 4),
                    "trials": optuna_result["trials"],
                    "pruned": optuna_result["pruned"],
                    "core_seconds": round(optuna_result["core_seconds"], 1),
                    "core_seconds_to_reach_enas": None if reach is None else round(reach, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
