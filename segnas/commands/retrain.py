"""``segnas retrain``: the best architectures of a search trained from scratch (Ray Tune) and
tested; the rows go to the database (``GET /searches/{id}/retrains``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from segnas.commands.options import add_db_argument, add_json_argument, print_json, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search", required=True, metavar="ID", help="a search that succeeded")
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="best derived architectures (3)"
    )
    parser.add_argument(
        "--pareto",
        type=int,
        default=0,
        metavar="K",
        help="also retrain K architectures spread along the search's size front (0)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per architecture (10)")
    add_training_arguments(parser)
    add_db_argument(parser)
    add_json_argument(parser)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that ``segnas reproduce`` shares: baselines, training, scheduler, resources."""
    group = parser.add_argument_group("retraining")
    group.add_argument(
        "--random",
        type=int,
        default=0,
        metavar="K",
        help="also retrain K uniformly random architectures as baselines (0)",
    )
    group.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    group.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="(adam)")
    group.add_argument("--lr", type=float, help="learning rate (adam 3e-3, sgd 0.05)")
    group.add_argument("--seed", type=int, default=0, help="seed of training and baselines (0)")
    group.add_argument(
        "--grace-epochs",
        type=int,
        metavar="E",
        help="ASHA trains each trial at least E epochs before it may stop it (default: all "
        "epochs, so every architecture gets the same budget)",
    )
    group.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (1)")
    group.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial (0)")
    group.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial (2)")


def settings_from_args(args: argparse.Namespace, **fixed: Any) -> Any:
    from workers.retrain_jobs import RetrainSettings

    return RetrainSettings(
        epochs=args.epochs,
        random=args.random,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        seed=args.seed,
        grace_epochs=args.grace_epochs,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures,
        **fixed,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, top_k=args.top_k, pareto=args.pareto)

    from storage.retrains import RetrainStore
    from workers.entry import open_store
    from workers.retrain import retrain, save_records
    from workers.retrain_jobs import merge_jobs, search_jobs

    store = open_store(args.db)
    try:
        _, jobs = search_jobs(store, args.search, settings)
        jobs = merge_jobs(jobs)
        with EpochBar("retrain") as bar:
            records = retrain(jobs, settings, on_epoch=bar.update)
        save_records(store, jobs, records)
        stored = RetrainStore(store).list(args.search)
    finally:
        store.close()
    if args.json:
        print_json({"search_id": args.search, "retrains": [retrain_json(r) for r in stored]})
        return 0
    print_retrains(stored)
    return 0 if all(r.status != "failed" for r in stored) else 1


def retrain_json(record: Any) -> dict[str, Any]:
    """What ``--json`` prints per retrained architecture."""
    from supernet.metrics import METRIC_NAMES

    return {
        "arch": record.arch,
        "source": record.source,
        "rank": record.rank,
        "status": record.status,
        "epochs": record.epochs,
        "params": record.params,
        **{name: getattr(record, name) for name in METRIC_NAMES},
        "shared_score": record.shared_score,
        "error": record.error,
    }


def print_retrains(records: list[Any]) -> None:
    from supernet.metrics import METRIC_NAMES
    from supernet.space import format_arch

    rows = [
        [
            f"{r.source} {r.rank}",
            format_arch(r.arch),
            r.status,
            "-" if r.params is None else f"{r.params:,}",
            "-" if r.shared_score is None else f"{r.shared_score:.4f}",
            *("-" if getattr(r, m) is None else f"{getattr(r, m):.4f}" for m in METRIC_NAMES),
        ]
        for r in records
    ]
    header = ["from", "architecture", "status", "params", "shared", *METRIC_NAMES]
    print_table(rows, header)
    for r in records:
        if r.error:
            print(f"{r.source} {r.rank} ({format_arch(r.arch)}) failed: {r.error}")
    print("test split metrics; shared: the score under the search's shared weights (val)")


class EpochBar:
    """A progress bar over the epochs of every trial."""

    def __init__(self, desc: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=desc, unit="epoch", disable=None, file=sys.stderr)

    def update(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def __enter__(self) -> EpochBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()
