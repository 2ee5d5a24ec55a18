"""What can be checked of a data set on disk without reading it: the folder layouts of the
``voc`` and ``folder`` kinds. No torch: the API checks a submitted spec with it, so that a root
that is not a data set is a 422 at submission rather than a failed search minutes later.
"""

from __future__ import annotations

from pathlib import Path

from errors import DatasetError
from supernet.data.specs import AnyDatasetSpec, FolderSpec, VocSpec

IGNORE = 255
"""The ignore label of masks, and one more than the most classes a folder data set may name."""

_PARTS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")


def find_voc_root(root: Path) -> Path:
    """The ``VOC2012`` folder for ``root`` (it, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``).

    Raises:
        DatasetError: none of them has the VOC layout.
    """
    if not root.is_dir():
        raise DatasetError(f"VOC root {root} does not exist or is not a folder")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if all((candidate / part).is_dir() for part in _PARTS):
            return candidate
    raise DatasetError(
        f"{root} is not a PASCAL VOC 2012 folder: expected {', '.join(_PARTS)} under it,"
        " under VOC2012/ or under VOCdevkit/VOC2012/; set root to the folder that holds"
        " VOCdevkit or to VOC2012 itself"
    )


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


def check_folder_layout(root: Path) -> tuple[str, ...]:
    """A folder data set's ``root``, ``classes.txt`` and ``images/``; its class names.

    Raises:
        DatasetError: one of them is missing, or ``classes.txt`` is not a class list.
    """
    if not root.is_dir():
        raise DatasetError(f"data set folder {root} does not exist or is not a folder")
    names = read_class_names(root / "classes.txt")
    if not (root / "images").is_dir():
        raise DatasetError(f"image folder {root / 'images'} is missing; put the images there")
    return names


def check_layout(spec: AnyDatasetSpec) -> None:
    """What the loader looks for first, checked now: the VOC layout under ``root``, or a
    folder data set's ``classes.txt`` and ``images/``. The embedded kinds have nothing to check.

    Raises:
        DatasetError: what is missing, in the loader's words.
    """
    if isinstance(spec, VocSpec):
        find_voc_root(Path(spec.root))
    elif isinstance(spec, FolderSpec):
        check_folder_layout(Path(spec.root))
