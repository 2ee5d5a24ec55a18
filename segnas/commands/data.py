"""``segnas data inspect``: split sizes, class histogram and a preview grid of a data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segnas.commands.options import (
    DEFAULT_DATASET,
    add_dataset_arguments,
    add_json_argument,
    dataset_spec_from_args,
    print_json,
    print_table,
)

if TYPE_CHECKING:  # the data package imports torch: only where a verb runs
    from supernet.data import SegmentationData

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inspect = actions.add_parser("inspect", help="split sizes, class histogram, preview")
    add_dataset_arguments(inspect)
    inspect.add_argument(
        "--config",
        type=Path,
        help="describe the data set of this search config (instead of --dataset and its options)",
    )
    add_json_argument(inspect)
    inspect.add_argument("--preview", type=Path, help="write a PNG grid of images and masks")
    inspect.add_argument(
        "--preview-count", type=int, default=8, help="images in the preview (default 8)"
    )


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC bit-shift colour map: colour k for class k (255 is the void colour)."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for k in range(num_colors):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[k] = (r, g, b)
    return palette


TILE_INCHES = 1.8
"""Each image of the preview is drawn this large (nearest-neighbour), whatever its pixels."""


def write_preview(data: SegmentationData, path: Path, count: int) -> list[str]:
    """Save ``count`` eval-mode items as rows of image | labels | overlay, titled, each tile
    drawn large, with a legend of the classes the shown masks hold (VOC's colours; the
    ignore label as "ignored"). Returns the legend's entries, "id name", in id order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from errors import DatasetError

    split = data.val if len(data.val) else data.train
    count = min(count, len(split))
    if count == 0:
        raise DatasetError("the data set has no images to preview")
    mean = np.asarray(data.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(data.std, dtype=np.float32)[:, None, None]
    palette = voc_palette()
    fig, axes = plt.subplots(
        count, 3, figsize=(3 * TILE_INCHES + 2.2, count * TILE_INCHES + 0.4), squeeze=False
    )
    shown: set[int] = set()
    for i in range(count):
        image, mask = split[i]
        rgb = (image.numpy() * std + mean).clip(0, 1).transpose(1, 2, 0)
        if rgb.shape[2] == 1:
            rgb = np.repeat(rgb, 3, axis=2)
        labels = mask.numpy().clip(0, 255)
        shown.update(int(k) for k in np.unique(labels))
        coloured = palette[labels] / 255.0
        for ax, tile in zip(axes[i], (rgb, coloured, 0.5 * rgb + 0.5 * coloured), strict=True):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("image", "labels", "overlay"), strict=True):
        ax.set_title(title, fontsize=10)

    def name(k: int) -> str:
        if k == data.ignore_index:
            return f"{k} ignored"
        return f"{k} {data.class_names[k]}" if k < len(data.class_names) else f"{k} ?"

    legend = [name(k) for k in sorted(shown)]
    handles = [
        Patch(facecolor=palette[k] / 255.0, edgecolor="#555", label=label)
        for k, label in zip(sorted(shown), legend, strict=True)
    ]
    fig.legend(handles=handles, loc="center right", fontsize=9, title="classes", frameon=False)
    fig.subplots_adjust(
        left=0.02, right=1 - 2.2 / (3 * TILE_INCHES + 2.2), wspace=0.05, hspace=0.08
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return legend


def _dataset_spec(args: argparse.Namespace, parse: Any) -> Any:
    """The data set of ``--config`` (the same one a search of that config reads), or the one
    the data set options describe."""
    from errors import ConfigError
    from searchspec.spec import load_search_spec

    if args.config is None:
        return parse(dataset_spec_from_args(args))
    given = [
        flag
        for flag, value in (
            ("--dataset", args.dataset != DEFAULT_DATASET),
            ("--root", args.root),
            ("--size", args.size),
            ("--data-seed", args.data_seed),
            ("-D", args.data_option),
        )
        if value
    ]
    if given:
        raise ConfigError(f"--config names the data set: drop {', '.join(given)}")
    return load_search_spec(args.config).dataset


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from errors import ConfigError
    from supernet.data import load_dataset, parse_dataset_spec
    from supernet.data.base import SPLIT_NAMES

    if args.preview and args.preview.suffix.lower() not in PREVIEW_SUFFIXES:
        raise ConfigError(f"--preview must name a {'/'.join(PREVIEW_SUFFIXES)} file")
    if args.preview_count < 1:
        raise ConfigError(f"--preview-count must be at least 1, got {args.preview_count}")
    spec = _dataset_spec(args, parse_dataset_spec)
    data = load_dataset(spec)
    histogram = {}
    for name in tqdm(SPLIT_NAMES, desc="reading masks", unit="split", disable=None, leave=False):
        histogram[name] = data.split(name).class_histogram()
    overall = sum(histogram.values())
    present = [int(k) for k in np.flatnonzero(overall)]
    sizes = {name: len(data.split(name)) for name in SPLIT_NAMES}
    train_pixels = max(int(histogram["train"].sum()), 1)
    pixel_share = {
        str(k): round(int(histogram["train"][k]) / train_pixels, 6) for k in range(data.num_classes)
    }
    legend = write_preview(data, args.preview, args.preview_count) if args.preview else []

    if args.json:
        print_json(
            {
                "dataset": spec.model_dump(mode="json"),
                "splits": sizes,
                "num_classes": data.num_classes,
                "class_names": list(data.class_names),
                "classes": present,
                "pixel_share": pixel_share,
                "histogram": {name: h.tolist() for name, h in histogram.items()},
                "preview": str(args.preview) if args.preview else None,
                "preview_legend": legend,
            }
        )
        return 0
    print(f"data set  {spec.kind}  ({data.num_classes} classes)")
    print_table([[name, sizes[name]] for name in SPLIT_NAMES], ["split", "images"])
    print()
    rows = []
    for k in range(data.num_classes):
        share = overall[k] / max(int(overall.sum()), 1)
        rows.append(
            [k, data.class_names[k], *(int(histogram[s][k]) for s in SPLIT_NAMES), f"{share:.1%}"]
        )
    print_table(rows, ["id", "class", "train px", "val px", "test px", "share"])
    if args.preview:
        shown = min(args.preview_count, len(data.val) or len(data.train))
        print(f"\npreview of {shown} images: {args.preview} (classes shown: {', '.join(legend)})")
    return 0
