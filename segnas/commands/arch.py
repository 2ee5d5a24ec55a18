"""``segnas arch describe``: what an architecture is made of and what it costs."""

from __future__ import annotations

import argparse

from segnas.commands.options import add_json_argument, print_json, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    describe = actions.add_parser("describe", help="per-layer table, parameters and FLOPs")
    describe.add_argument("arch", help='cell indices, e.g. "0 5 5 2 2 2 4 5 3 5 3 4"')
    describe.add_argument(
        "--layers", type=int, help="encoder layers (default: the architecture's length)"
    )
    describe.add_argument("--classes", type=int, default=21, help="output classes (default 21)")
    describe.add_argument("--channels", type=int, default=36, help="channels (default 36)")
    describe.add_argument(
        "--size", type=int, default=256, help="input side for the FLOP count (default 256)"
    )
    describe.add_argument(
        "--skip-merge", choices=("concat", "sum"), default="concat", help="how long skips merge"
    )
    describe.add_argument(
        "--cells",
        metavar="NAME,NAME,...",
        help="the space's cells, in index order (default: the paper's six; see segnas cells)",
    )
    add_json_argument(describe)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from errors import ConfigError, validation_problems
    from supernet.network import build_child
    from supernet.profile import count_flops, count_params
    from supernet.space import CELL_NAMES, SearchSpace, arch_tokens, format_arch

    cells = CELL_NAMES
    if args.cells is not None:
        cells = tuple(name.strip() for name in args.cells.split(",") if name.strip())
    layers = args.layers if args.layers is not None else len(arch_tokens(args.arch)) or 12
    try:
        space = SearchSpace(
            layers=layers,
            channels=args.channels,
            num_classes=args.classes,
            skip_merge=args.skip_merge,
            cells=cells,
        )
    except ValidationError as e:  # one line, as every user error
        raise ConfigError(f"invalid space: {validation_problems(e)}") from None
    if not space.min_input_size <= args.size <= 8192:
        raise ConfigError(
            f"--size must be between {space.min_input_size} (one pixel left after "
            f"{len(space.reductions)} halvings) and 8192, got {args.size}"
        )
    arch = space.parse(args.arch)
    child = build_child(space, arch)
    params = count_params(child)
    flops = count_flops(child, (args.size, args.size), space.in_channels)
    encoder, decoder = child.layer_cells()
    reductions = set(space.reductions)
    layers = [
        {
            "layer": i,
            "cell": cell,
            "name": space.cell_name(cell),
            "resolution": side,
            "encoder_params": count_params(encoder[i]),
            "decoder_params": count_params(decoder[space.layers - 1 - i]),
            "reduction_after": i in reductions,
        }
        for i, (cell, side) in enumerate(zip(arch, space.sides(args.size), strict=True))
    ]
    if args.json:
        print_json(
            {
                "arch": list(arch),
                "arch_str": format_arch(arch),
                "params": params,
                "flops": flops,
                "input_size": [args.size, args.size],
                "classes": args.classes,
                "channels": args.channels,
                "reductions": list(space.reductions),
                "layers": layers,
            }
        )
        return 0
    print(f"architecture  {format_arch(arch)}")
    rows = [
        [
            row["layer"],
            f"{row['cell']} {row['name']}",
            f"{row['resolution']}x{row['resolution']}",
            row["encoder_params"],
            row["decoder_params"],
            "pool /2" if row["reduction_after"] else "",
        ]
        for row in layers
    ]
    print_table(rows, ["layer", "cell", "input", "encoder params", "decoder params", "then"])
    print(f"parameters    {params:,}")
    print(f"FLOPs         {flops:,} at {args.size}x{args.size} (2 per multiply-add)")
    return 0
