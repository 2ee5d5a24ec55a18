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

from errors import DatasetError
from supernet.data.base import SPLIT_NAMES, SegmentationData, assemble
from supernet.data.files import FileSource
from supernet.data.layout import IGNORE, check_folder_layout
from supernet.data.specs import FolderSpec
from supernet.data.splits import split_ids
from supernet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")


def find_images(images: Path) -> dict[str, Path]:
    """Image path per stem under ``images`` (a folder: ``check_folder_layout``).

    Raises:
        DatasetError: the folder holds no image, or two images of one stem.
    """
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
    names = check_folder_layout(root)
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
