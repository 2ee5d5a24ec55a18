"""``segnas reproduce``: the paper's Table 1 on one data set: a search per reward function (a
Ray Tune grid), each search's best architectures retrained with random baselines, a report."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

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
        "--top-k", type=int, default=3, metavar="K", help="best architectures per search (3)"
    )
    parser.add_argument("--epochs", type=int, default=15, help="retraining epochs (15)")
    add_training_arguments(parser)
    parser.set_defaults(random=3)
    parser.add_argument(
        "--out", type=Path, help="report folder (default: DATA_DIR/reports/reproduce-TIME)"
    )
    add_db_argument(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from segnas.spec import load_search_spec

    base = load_search_spec(
        args.config or DATASET_CONFIGS[args.dataset], parse_key_values(args.overrides)
    )
    settings = settings_from_args(args, top_k=args.top_k)

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
