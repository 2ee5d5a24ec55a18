"""``segnas cells``: the registry of candidate cells a space may name."""

from __future__ import annotations

import argparse

from segnas.commands.options import add_json_argument, print_json, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channels", type=int, default=36, help="channels to count parameters at (default 36)"
    )
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from errors import ConfigError
    from supernet.cells import Cell
    from supernet.profile import count_params
    from supernet.space import CELL_NAMES, CELL_REGISTRY

    if not 1 <= args.channels <= 1024:
        raise ConfigError(f"--channels must be between 1 and 1024, got {args.channels}")
    cells = [
        {
            "name": name,
            "description": f"conv 1x1 + BN + ReLU, then {what}",
            "default_index": CELL_NAMES.index(name) if name in CELL_NAMES else None,
            "params": count_params(Cell(name, args.channels)),
        }
        for name, what in CELL_REGISTRY.items()
    ]
    if args.json:
        print_json({"cells": cells, "default": list(CELL_NAMES), "channels": args.channels})
        return 0
    rows = [
        [
            "" if c["default_index"] is None else c["default_index"],
            c["name"],
            f"{c['params']:,}",
            c["description"],
        ]
        for c in cells
    ]
    print_table(rows, ["default index", "cell", f"params at {args.channels} ch", "what it is"])
    print(
        "\nA space's `cells:` names any of them in any order (an architecture's indices refer "
        "to that list); without it, the paper's six in their default order."
    )
    return 0
