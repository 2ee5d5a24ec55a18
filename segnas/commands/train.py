"""``segnas train``: train one architecture from scratch and report its test metrics."""

from __future__ import annotations

import argparse

from segnas.commands.options import (
    add_dataset_arguments,
    add_json_argument,
    print_json,
    print_table,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch", required=True, help='cell indices, e.g. "0 5 5 2 2 2 4 5 3 5 3 4"'
    )
    add_dataset_arguments(parser)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--optimizer", choices=("adam", "sgd"), default="adam", help="optimiser (default adam)"
    )
    parser.add_argument(
        "--lr", type=float, help="initial learning rate (default: 3e-3 for adam, 0.05 for sgd)"
    )
    parser.add_argument(
        "--layers", type=int, help="encoder layers (default: as many as --arch has cells)"
    )
    parser.add_argument("--channels", type=int, default=36, help="channels (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and order")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from segnas.commands.options import dataset_spec_from_args
    from supernet.data import load_dataset, parse_dataset_spec
    from supernet.space import SearchSpace, arch_tokens, format_arch
    from supernet.training import TrainConfig, TrainProgress, train_child

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    layers = args.layers if args.layers is not None else len(arch_tokens(args.arch))
    SearchSpace(layers=layers, channels=args.channels).parse(args.arch)  # before the data loads
    data = load_dataset(parse_dataset_spec(dataset_spec_from_args(args)))
    space = SearchSpace(
        layers=layers,
        channels=args.channels,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
    )
    arch = space.parse(args.arch)

    bar = tqdm(desc="training", unit="step", disable=None)

    def on_step(p: TrainProgress) -> None:
        if bar.total is None:
            bar.reset(total=p.epochs * p.steps)
        bar.set_postfix_str(f"epoch {p.epoch + 1}/{p.epochs} loss {p.loss:.3f}", refresh=False)
        bar.update()

    try:
        result = train_child(space, arch, data, config, on_step=on_step)
    finally:
        bar.close()

    test = result.test
    if args.json:
        print_json(
            {
                "arch": result.arch,
                "params": result.params,
                "accuracy": test.accuracy,
                "mean_precision": test.mean_precision,
                "mean_recall": test.mean_recall,
                "miou": test.miou,
                "miou_plus": test.miou_plus,
                "per_class_iou": test.per_class_iou,
                "val": result.val.model_dump(),
                "epochs": [e.model_dump() for e in result.history],
            }
        )
        return 0
    print(f"architecture  {format_arch(arch)}   parameters {result.params:,}")
    rows = [
        [name, f"{getattr(result.val, name):.4f}", f"{getattr(test, name):.4f}"]
        for name in ("accuracy", "mean_precision", "mean_recall", "miou", "miou_plus")
    ]
    print_table(rows, ["metric", "val", "test"])
    return 0
