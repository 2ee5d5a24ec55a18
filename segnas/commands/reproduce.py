"""``segnas reproduce``: the paper's Table 1 on one data set.

Without ``--seeds``: one search per reward function (a Ray Tune grid), each search's best
architectures retrained with random baselines, a report with the searches' figures.

With ``--seeds N``: the three rewards over N seeds each, with the controls beside them
(``random_ws``, ``largest``, ``param_matched``): the evaluation of ``segnas evaluate`` (the same
engine, settings and rows: after ``segnas evaluate`` with the same settings it only reads them),
printed as Table 1 with the paper's two observations checked.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from segnas.commands.options import (
    add_db_argument,
    add_json_argument,
    add_overrides_argument,
    parse_key_values,
)
from segnas.commands.retrain import EpochBar, add_training_arguments, settings_from_args

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DATASET_CONFIGS = {
    "shapes": CONFIGS / "shapes.yaml",
    "digits": CONFIGS / "digits-smoke.yaml",
    "voc": CONFIGS / "voc.yaml",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASET_CONFIGS),
        default="shapes",
        help="which config to search with: configs/shapes.yaml (the default search), "
        "configs/digits-smoke.yaml or configs/voc.yaml",
    )
    parser.add_argument("--config", type=Path, help="another search spec instead")
    add_overrides_argument(parser, what="a spec field of every search")
    parser.add_argument(
        "--top-k", type=int, metavar="K", help="best architectures per search (3; one seed only)"
    )
    parser.add_argument(
        "--epochs", type=int, help="retraining epochs (15; with --seeds, 10 as segnas evaluate)"
    )
    add_training_arguments(parser)
    parser.set_defaults(random=None)
    group = parser.add_argument_group("over seeds, with the controls (segnas evaluate's engine)")
    group.add_argument(
        "--seeds", type=int, help="N seeds per reward, with random_ws, largest and param_matched"
    )
    group.add_argument(
        "--uniform", type=int, default=30, help="uniform architectures retrained as truth (30)"
    )
    group.add_argument("--train-seeds", type=int, default=2, help="seeds per architecture (2)")
    group.add_argument(
        "--parallel", type=int, default=1, help="searches run at once (1); each needs its CPUs"
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: DATA_DIR/reports/reproduce-TIME)"
    )
    add_db_argument(parser)
    add_json_argument(parser)


SINGLE_SEED_ONLY: dict[str, object] = {
    "top_k": None,
    "random": None,
    "optimizer": "adam",
    "lr": None,
    "seed": 0,
    "grace_epochs": None,
    "gpus_per_trial": 0,
    "max_failures": 2,
}
"""Options (and their defaults) of the single-seed reproduction that an evaluation over seeds
does not take."""


def run(args: argparse.Namespace) -> int:
    from searchspec.spec import load_search_spec

    base = load_search_spec(
        args.config or DATASET_CONFIGS[args.dataset], parse_key_values(args.overrides)
    )
    if args.seeds is not None:
        return _over_seeds(args, base)
    args.epochs = 15 if args.epochs is None else args.epochs
    args.random = 3 if args.random is None else args.random
    settings = settings_from_args(args, top_k=3 if args.top_k is None else args.top_k)

    from segnas.commands.report import print_summary, write
    from storage.engine import data_dir, database_url
    from workers.entry import open_store
    from workers.reproduce import REWARDS, retrain_searches, run_searches

    store = open_store(args.db)
    out = args.out or data_dir() / "reports" / f"reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        with FractionBar("searches") as bar:
            done = run_searches(base, REWARDS, db_url=database_url(args.db), on_progress=bar.update)
        print(f"segnas: searches {', '.join(done.search_ids)} done", file=sys.stderr)
        with EpochBar("retrain") as bar:
            retrain_searches(store, done.search_ids, settings, on_epoch=bar.update)
        command = shlex.join(["segnas", *sys.argv[1:]]) if sys.argv[1:] else "segnas reproduce"
        report, files = write(store, done.search_ids, out, command=command, title=None)
    finally:
        store.close()
    print_summary(report, files, args.json)
    return 0


def evaluate_settings(args: argparse.Namespace) -> Any:
    """The evaluation that ``reproduce --seeds`` runs: ``segnas evaluate``'s settings (and so
    its id and rows) for the same values."""
    from errors import ConfigError
    from workers.evaluate import EvaluateSettings
    from workers.reproduce import REWARDS

    given = [f"--{n.replace('_', '-')}" for n in SINGLE_SEED_ONLY if _given(args, n)]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: only for the single-seed reproduction (without --seeds); "
            "over seeds the controls are random_ws, largest and param_matched, as in "
            "segnas evaluate"
        )
    return EvaluateSettings(
        seeds=args.seeds,
        rewards=REWARDS,
        uniform=args.uniform,
        train_seeds=args.train_seeds,
        retrain_epochs=10 if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        cpus_per_trial=args.cpus_per_trial,
        parallel=args.parallel,
    )


def _given(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name) != SINGLE_SEED_ONLY[name]


def _over_seeds(args: argparse.Namespace, base: Any) -> int:
    from segnas.commands.evaluate import run_and_report

    return run_and_report(
        base, evaluate_settings(args), db=args.db, checkpoint_dir=None, out=args.out,
        as_json=args.json,
    )  # fmt: skip


class FractionBar:
    """A progress bar in percent."""

    def __init__(self, desc: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=desc, total=100, unit="%", disable=None, file=sys.stderr)

    def update(self, fraction: float) -> None:
        self._bar.n = round(100 * fraction, 1)
        self._bar.refresh()

    def __enter__(self) -> FractionBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()
