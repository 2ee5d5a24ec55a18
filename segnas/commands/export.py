"""``segnas export``: a retrained network of a search as a folder that runs without segnas
(TorchScript, ``state_dict``, architecture, model card; see ``supernet.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segnas.commands.options import add_db_argument, add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search", required=True, metavar="ID", help="a retrained search")
    parser.add_argument(
        "--arch",
        help='which retrained architecture, e.g. "0 5 5 2" (default: the search\'s best)',
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    add_db_argument(parser)
    add_json_argument(parser)


def choose(retrains: list[Any], search_id: str, arch: list[int] | None) -> Any:
    """The retrain to export: ``arch``'s (ENAS before random), else the best ENAS one.

    Raises:
        ConfigError: no such retrained architecture, or it has no weights (it failed).
    """
    from errors import ConfigError
    from supernet.space import format_arch

    hint = f"run: segnas retrain --search {search_id}"
    if not retrains:
        raise ConfigError(f"search {search_id} has no retrained architecture; {hint}")
    candidates = [r for r in retrains if arch is None or r.arch == arch]
    if arch is None:
        candidates = [r for r in candidates if r.source == "enas"] or candidates
    if not candidates:
        known = ", ".join(f'"{format_arch(r.arch)}"' for r in retrains)
        raise ConfigError(f"search {search_id} has no retrain of {format_arch(arch)}: {known}")
    chosen = candidates[0]
    if chosen.weights_path is None or not Path(chosen.weights_path).is_file():
        raise ConfigError(
            f"the retrain of {format_arch(chosen.arch)} has no weights "
            f"({chosen.error or 'file missing'}); {hint}"
        )
    return chosen


def _parse(text: str) -> list[int]:
    from errors import ConfigError

    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f'--arch {text!r}: give cell indices, e.g. "0 5 5 2"') from None


def run(args: argparse.Namespace) -> int:
    import torch

    from storage.retrains import RetrainStore
    from supernet.export import export_network
    from supernet.metrics import METRIC_NAMES
    from supernet.network import build_child
    from supernet.space import SearchSpace, format_arch
    from workers.entry import open_store

    store = open_store(args.db)
    try:
        retrains = RetrainStore(store).list(args.search)
    finally:
        store.close()
    chosen = choose(retrains, args.search, None if args.arch is None else _parse(args.arch))
    space = SearchSpace.model_validate(chosen.config["space"])
    model = build_child(space, chosen.arch)
    model.load_state_dict(torch.load(chosen.weights_path, weights_only=True, map_location="cpu"))
    data = chosen.config["data"]
    card = export_network(
        model,
        space=space,
        classes=data["classes"],
        input_size=data["input_size"],
        mean=data["mean"],
        std=data["std"],
        ignore_index=data["ignore_index"],
        metrics={m: getattr(chosen, m) for m in METRIC_NAMES},
        source={
            "search_id": args.search,
            "retrain_id": chosen.id,
            "from": chosen.source,
            "rank": chosen.rank,
            "epochs": chosen.epochs,
            "status": chosen.status,
        },
        out_dir=args.out,
    )
    if args.json:
        print_json({"out": str(args.out.resolve()), "card": card.model_dump(mode="json")})
        return 0
    print(f"exported {format_arch(card.arch)} ({card.params:,} parameters) to {args.out}")
    for role, name in card.files.items():
        print(f"  {name:<22} {role}")
    print(
        f"test mIoU {card.metrics['miou']:.4f}, input {card.in_channels}x{card.input_size}"
        f"x{card.input_size} (sides in multiples of {card.size_multiple})"
    )
    return 0
