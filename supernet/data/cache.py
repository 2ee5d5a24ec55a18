"""Each split decoded once: letterboxed uint8 images and label maps, kept in memory-mapped files.

Decoding a VOC sample (JPEG, palette PNG, resize) costs milliseconds; a search reads every
training image once per epoch and scores thousands of validation minibatches. ``decode_split``
decodes a split once, at one side: every image scaled so that its longer side is ``side``
(bilinear; the labels nearest), placed top-left in a ``side x side`` frame, with its valid
height and width beside it. Files on disk (the VOC and folder data sets) are cached under
``cache_dir/<key>/`` as ``.npy`` files that every replica, search and retraining memory-maps;
the key is a digest of everything that changes the arrays (the split's samples, each file's
size and modification time, the side, the padding), so changing a file or the spec makes a
new entry and never reads a stale one. In-memory canvases (shapes, digits) are decoded into
memory: they have no files to key a cache by.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from errors import DatasetError
from supernet.data.base import SegmentationSplit
from supernet.data.transforms import resize_pair, scaled_size

CACHE_VERSION = 1
"""Part of every key: a change to how arrays are made makes new entries."""
Padding = Literal["zero", "edge"]
"""What fills a frame around a smaller image: zeros (the image and ``ignore_index`` labels), or
the image's last row and column repeated (so that bilinear sampling at the image's edge blends
no padding in; the labels are ``ignore_index`` either way)."""


@dataclass(frozen=True)
class Decoded:
    """A split decoded at one side.

    Attributes:
        images: ``uint8 [N, side, side, C]``, each image top-left in its frame.
        labels: ``uint8 [N, side, side]`` class ids, ``ignore_index`` outside the image.
        sizes: ``int64 [N, 2]``: each image's height and width in its frame.
        original: ``int64 [N, 2]``: each image's height and width before it was scaled (what
            SegTransform's rescale rounds from).
    """

    images: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    original: np.ndarray

    @property
    def side(self) -> int:
        return int(self.images.shape[1])


def file_identity(split: SegmentationSplit) -> list | None:
    """What names the split's samples on disk (each file with its size and modification
    time, and how its labels are mapped), or None for samples that have no files."""
    source = split.source
    paths = getattr(source, "images", None), getattr(source, "masks", None)
    if not all(isinstance(p, list) for p in paths):
        return None
    stats = []
    for path in (*paths[0], *paths[1]):
        st = Path(path).stat()
        stats.append([str(path), st.st_size, st.st_mtime_ns])
    labels = [getattr(source, k, None) for k in ("num_labels", "void", "void_to")]
    return [source.ids, labels, stats]


def _digest(value: object) -> str:
    return hashlib.blake2b(json.dumps(value).encode(), digest_size=16).hexdigest()


def cache_key(split: SegmentationSplit, side: int, padding: Padding) -> str | None:
    """The cache entry of ``split`` at ``side``; None where it cannot be cached on disk."""
    identity = file_identity(split)
    if identity is None:
        return None
    return _digest([CACHE_VERSION, side, padding, split.ignore_index, identity])


def cache_family(split: SegmentationSplit, side: int, padding: Padding) -> str:
    """What the entries of one split at one side share whatever its files' contents: the
    paths. A new entry of a family makes the others stale (their files changed since)."""
    source = split.source
    paths = [str(p) for p in (*getattr(source, "images", []), *getattr(source, "masks", []))]
    return _digest([side, padding, paths])


def decode_split(
    split: SegmentationSplit,
    side: int,
    *,
    padding: Padding = "zero",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Decoded:
    """``split`` decoded at ``side`` (from ``cache_dir`` when it holds it; built there, with a
    progress bar, when it does not).

    Raises:
        DatasetError: a sample cannot be read (as reading it directly would).
    """
    key = cache_key(split, side, padding) if cache_dir is not None else None
    if key is None:
        return _decode(split, side, padding, folder=None, progress=progress)
    entry = Path(cache_dir) / key
    if not _whole(entry):
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Built in a folder of its own, then renamed: a reader sees a whole entry or none, and
        # two replicas building at once both end with the same one.
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
        family = cache_family(split, side, padding)
        try:
            _decode(split, side, padding, folder=scratch, progress=progress)
            (scratch / FAMILY_FILE).write_text(family)
            try:
                os.replace(scratch, entry)
            except OSError:  # another process renamed its copy first
                if not _whole(entry):
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _prune(entry, family)
    return Decoded(
        # Copy-on-write maps: torch takes them without a copy, and nothing writes the files.
        images=np.load(entry / "images.npy", mmap_mode="c"),
        labels=np.load(entry / "labels.npy", mmap_mode="c"),
        sizes=np.load(entry / "sizes.npy"),
        original=np.load(entry / "original.npy"),
    )


FILES: tuple[str, ...] = ("images.npy", "labels.npy", "original.npy", "sizes.npy")
"""An entry's files; ``sizes.npy`` is written last."""


FAMILY_FILE = "family.txt"
"""In each entry: its ``cache_family``."""


def _whole(entry: Path) -> bool:
    return all((entry / name).is_file() for name in FILES)


def _prune(entry: Path, family: str) -> None:
    """Remove the entries of ``entry``'s family but ``entry``: decodes of files that have
    changed since. (A process still reading one keeps its pages: the files go when it
    unmaps them.)"""
    for other in entry.parent.iterdir():
        marker = other / FAMILY_FILE
        if other != entry and marker.is_file() and marker.read_text() == family:
            shutil.rmtree(other, ignore_errors=True)


def _decode(
    split: SegmentationSplit, side: int, padding: Padding, *, folder: Path | None, progress: bool
) -> Decoded:
    n = len(split)
    if n == 0:
        raise DatasetError(f"the {split.name} split is empty: there is nothing to decode")
    first, _ = split.source.sample(0)
    channels = first.shape[2]
    shape = (n, side, side)
    if folder is None:
        images = np.zeros((*shape, channels), dtype=np.uint8)
        labels = np.full(shape, split.ignore_index, dtype=np.uint8)
    else:
        images = np.lib.format.open_memmap(
            folder / "images.npy", mode="w+", dtype=np.uint8, shape=(*shape, channels)
        )
        labels = np.lib.format.open_memmap(
            folder / "labels.npy", mode="w+", dtype=np.uint8, shape=shape
        )
        labels[:] = split.ignore_index
    sizes = np.zeros((n, 2), dtype=np.int64)
    original = np.zeros((n, 2), dtype=np.int64)
    items = range(n)
    if progress and folder is not None:
        from tqdm import tqdm

        items = tqdm(items, desc=f"decoding {split.name}", unit="image", file=sys.stderr)
    for i in items:
        image, label = split.source.sample(i)
        h, w = label.shape
        nh, nw = scaled_size(h, w, side / max(h, w))  # SegTransform's letterbox, at `side`
        image, label = resize_pair(image, label, nh, nw)
        images[i, :nh, :nw] = image
        labels[i, :nh, :nw] = label
        if padding == "edge":
            images[i, nh:, :nw] = image[-1:, :]
            images[i, :, nw:] = images[i, :, nw - 1 : nw]
        sizes[i], original[i] = (nh, nw), (h, w)
    if folder is not None:
        images.flush()
        labels.flush()
        np.save(folder / "original.npy", original)
        np.save(folder / "sizes.npy", sizes)  # last: its presence says the entry is whole
    return Decoded(images=images, labels=labels, sizes=sizes, original=original)
