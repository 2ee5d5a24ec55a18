"""How fast the search's data arrives: decoding, today's per-item pipeline, the DataFeed.

Generates a VOC-layout folder itself (``--images`` 500x375 JPEGs with palette PNGs of smooth
shapes on a textured background, cut 7:2:1 by the paper split), and measures on one core
(``torch.set_num_threads(1)``), in one run:

- ``decode``: reading a sample's JPEG and PNG (``FileSource.sample``);
- ``today``: an augmented training item through ``SegmentationSplit[i]`` (decode, rescale,
  flip, crop, normalise, one image at a time), and a scoring minibatch of 32 stacked from
  ``val[i]``;
- ``new``: ``supernet.data.feed.DataFeed``: the decode cache built (once; the time is shown
  apart) and reused, augmented training batches of 32, scoring minibatches of 32;

then the same for the user's folder data set (the same files in the folder layout) and the
digits canvases. The goals (issue "Paper scale" section 1): augmented training images at
least 20x today's per-core rate, a scoring minibatch of 32 in under 1 ms.

    python bench/data_pipeline.py                 # 2,913 images, as VOC 2012 trainval
    python bench/data_pipeline.py --images 400    # quicker

The last line is one JSON object: ``decode_images_per_s``, ``today_images_per_s``,
``new_images_per_s`` (augmented training images per second, per core), ``scoring_batch_ms``,
and the rest of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from supernet.data import load_dataset
from supernet.data.feed import DataFeed
from supernet.data.specs import DigitsSpec, FolderSpec, VocSpec
from supernet.data.voc import VOC_CLASSES

BATCH = 32


def palette() -> list[int]:
    colours = [0, 0, 0]
    for k in range(1, 256):
        colours += [(k * 67) % 256, (k * 131) % 256, (k * 29) % 256]
    return colours


def draw_sample(rng: np.random.Generator, width: int = 500, height: int = 375) -> tuple:
    """An RGB image and its label map: a few filled ellipses of random classes on a textured
    background, with a void (255) rim around each, as VOC's masks have."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(40, 200, size=3)
    image = base + 30 * np.sin(xx[..., None] / rng.uniform(8, 30) + rng.uniform(0, 6, 3))
    label = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(30, 120), rng.uniform(30, 160)
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        cls = int(rng.integers(1, len(VOC_CLASSES)))
        image[d < 1] = rng.integers(0, 255, size=3)
        label[(d >= 1) & (d < 1.08)] = 255
        label[d < 1] = cls
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, label


def make_voc(root: Path, images: int, seed: int = 0) -> Path:
    """A ``VOCdevkit/VOC2012`` folder of ``images`` generated samples, all in trainval."""
    voc = root / "VOCdevkit" / "VOC2012"
    for part in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / part).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"2000_{k:06d}" for k in range(images)]
    colours = palette()
    for k, sample_id in enumerate(ids):
        image, label = draw_sample(rng, *((500, 375) if k % 3 else (375, 500)))
        Image.fromarray(image).save(voc / "JPEGImages" / f"{sample_id}.jpg", quality=90)
        mask = Image.fromarray(label, mode="P")
        mask.putpalette(colours)
        mask.save(voc / "SegmentationClass" / f"{sample_id}.png")
    lists = voc / "ImageSets" / "Segmentation"
    for name, chosen in (("trainval", ids), ("train", ids[::2]), ("val", ids[1::2])):
        (lists / f"{name}.txt").write_text("\n".join(chosen) + "\n")
    return root


def make_folder(voc_root: Path, root: Path) -> Path:
    """The same samples in the folder data set's layout (links, not copies)."""
    voc = voc_root / "VOCdevkit" / "VOC2012"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for jpg in sorted((voc / "JPEGImages").iterdir()):
        (root / "images" / jpg.name).symlink_to(jpg)
        (root / "masks" / f"{jpg.stem}.png").symlink_to(
            voc / "SegmentationClass" / f"{jpg.stem}.png"
        )
    (root / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    return root


def rate(run: Callable[[], int], seconds: float = 3.0) -> float:
    """Items per second of ``run`` (which returns how many it made), over about ``seconds``."""
    run()  # warm
    made, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        made += run()
    return made / (time.perf_counter() - start)


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(
    spec: Any, cache: Path | None, *, seconds: float, train_side: int | None = None
) -> dict[str, Any]:
    data = load_dataset(spec)
    train, val = data.train, data.val
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {"train_images": len(train), "val_images": len(val)}
    files = hasattr(train.source, "images")
    if files:
        i = iter(range(10**9))
        out["decode_images_per_s"] = rate(
            lambda: (train.source.sample(next(i) % len(train)), 1)[1], seconds
        )
    j = iter(range(10**9))
    out["today_images_per_s"] = rate(lambda: (train[next(j) % len(train)], 1)[1], seconds)

    def today_scoring() -> None:
        ids = rng.choice(len(val), min(BATCH, len(val)), replace=False)
        torch.stack([val[int(k)][0] for k in ids])

    out["today_scoring_batch_ms"] = median_ms(today_scoring, 5)

    start = time.perf_counter()
    feed = DataFeed(
        data, torch.device("cpu"), cache_dir=cache, progress=False, train_side=train_side
    )
    out["feed_build_s"] = time.perf_counter() - start
    if cache is not None and files:
        start = time.perf_counter()
        DataFeed(load_dataset(spec), torch.device("cpu"), cache_dir=cache, progress=False)
        out["feed_reuse_s"] = time.perf_counter() - start
    # One pass over the split first, as a search's first epoch makes: it reads the cache's
    # pages in (timed apart); the rates below are the epochs after it.
    start = time.perf_counter()
    for first in range(0, len(train), BATCH):
        feed.train_batch(list(range(first, min(first + BATCH, len(train)))), (1, 0, first, 0))
    out["new_first_pass_images_per_s"] = len(train) / (time.perf_counter() - start)
    steps = iter(range(10**9))

    def new_batch() -> int:
        step = next(steps)
        ids = rng.choice(len(train), BATCH, replace=len(train) < BATCH).tolist()
        feed.train_batch(ids, (0, 0, step, 0))
        return BATCH

    out["new_images_per_s"] = rate(new_batch, seconds)
    out["scoring_batch_ms"] = median_ms(
        lambda: feed.val_batch(rng.choice(len(val), min(BATCH, len(val)), replace=False).tolist()),
        200,
    )
    out["speedup"] = out["new_images_per_s"] / out["today_images_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2913, help="generated samples (2913)")
    parser.add_argument("--size", type=int, default=256, help="tensor side (256, the paper's)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per rate measured (4)")
    parser.add_argument(
        "--train-side",
        type=int,
        help="also measure VOC with the training split decoded at this side (e.g. 512)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {"images": args.images, "size": args.size, "threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        make_voc(tmp_path / "voc", args.images)
        print(
            f"generated {args.images} samples in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
        folder = make_folder(tmp_path / "voc", tmp_path / "folder")
        specs = {
            "voc": VocSpec(kind="voc", root=tmp_path / "voc", size=args.size),
            "folder": FolderSpec(kind="folder", root=folder, size=args.size),
            "digits": DigitsSpec(kind="digits", images=1000, size=48, augment=True),
        }
        runs = [(name, spec, None) for name, spec in specs.items()]
        if args.train_side:
            runs.append((f"voc@{args.train_side}", specs["voc"], args.train_side))
        for name, spec, side in runs:
            results[name] = measure(spec, tmp_path / "cache", seconds=args.seconds, train_side=side)
            row = results[name]
            print(
                f"{name:7} decode {row.get('decode_images_per_s', float('nan')):8.0f}/s  "
                f"today {row['today_images_per_s']:7.0f}/s  new {row['new_images_per_s']:7.0f}/s "
                f"({row['speedup']:.1f}x)  scoring batch {row['today_scoring_batch_ms']:.1f} -> "
                f"{row['scoring_batch_ms']:.2f} ms  feed built in {row['feed_build_s']:.1f} s",
                file=sys.stderr,
            )
    voc = results["voc"]
    results.update(
        decode_images_per_s=voc["decode_images_per_s"],
        today_images_per_s=voc["today_images_per_s"],
        new_images_per_s=voc["new_images_per_s"],
        scoring_batch_ms=voc["scoring_batch_ms"],
        goals={
            "train_20x": voc["new_images_per_s"] >= 20 * voc["today_images_per_s"],
            "scoring_under_1ms": voc["scoring_batch_ms"] < 1.0,
        },
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
