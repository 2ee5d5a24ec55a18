"""A user's own segmentation data set in a plain folder.

Layout::

    root/classes.txt            one class name per line; line k names class id k (blank lines
                                skipped)
    root/images/<stem>.png|jpg|jpeg|bmp
    root/masks/<stem>.png       index PNG (mode P or L), pixel values = class ids, 255 ignored

The sorted stems are cut 7:2:1 into train/val/test by ``split_ids`` with the spec's seed.
Images are normalised with the ImageNet mean and standard deviation.
"""

from __future__ import annotations

from pathlib import Path

from supernet.data.base import SPLIT_NAMES, SegmentationData, assemble
from supernet.data.files import FileSource
from supernet.data.specs import FolderSpec
from supernet.data.splits import split_ids
from supernet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from supernet.errors import DatasetError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
IGNORE = 255


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from ``classes.txt`` (line k = class id k, blank lines skipped).

    Raises:
        DatasetError: the file is missing, names fewer than 2 or more than 255 classes, or
            names a class twice.
    """
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing; write one class name per line (line k names class id k,"
            " starting with the background)"
        )
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not 2 <= len(names) <= IGNORE:
        raise DatasetError(
            f"{path} names {len(names)} classes; a segmentation data set needs 2 to {IGNORE}"
            f" ({IGNORE} is the ignore label)"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path} names classes more than once: {duplicates}")
    return names


def find_images(images: Path) -> dict[str, Path]:
    """Image path per stem under ``images``.

    Raises:
        DatasetError: the folder is missing, holds no image, or holds two images of one stem.
    """
    if not images.is_dir():
        raise DatasetError(f"image folder {images} is missing; put the images there")
    found: dict[str, Path] = {}
    for path in sorted(images.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise DatasetError(
                f"{found[path.stem]} and {path} share the stem {path.stem!r}; keep one of them"
            )
        found[path.stem] = path
    if not found:
        raise DatasetError(
            f"no images in {images}; expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    return found


def load_folder(spec: FolderSpec) -> SegmentationData:
    """Load a folder data set as described by ``spec``.

    Raises:
        DatasetError: root, ``classes.txt`` or images missing, or an image without its mask.
            A mask of the wrong size or with a label ``>=`` the number of classes (other than
            255) raises when that sample is read.
    """
    root = spec.root
    if not root.is_dir():
        raise DatasetError(f"data set folder {root} does not exist or is not a folder")
    names = read_class_names(root / "classes.txt")
    images = find_images(root / "images")
    stems = sorted(images)
    sources = {}
    for name, ids in zip(SPLIT_NAMES, split_ids(stems, spec.seed), strict=True):
        source = FileSource(
            ids,
            [images[s] for s in ids],
            [root / "masks" / f"{s}.png" for s in ids],
            num_labels=len(names),
            void=IGNORE,
            what=f"folder {root}",
        )
        sources[name] = source
    return assemble(
        sources,
        class_names=names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        size=spec.size,
        augment=spec.augment,
        scale=spec.scale,
        flip=spec.flip,
    )
