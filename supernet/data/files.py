"""Reading image / index-mask pairs from disk, with errors that name the file and the fix.

Shared by the VOC and folder data sets. File existence is checked when the source is built
(at ``load_dataset`` time); sizes and label values when a sample is read, so loading stays fast
on thousands of files and every problem is still reported before it can corrupt a statistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from errors import DatasetError


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``HxWx3`` uint8 RGB (grey, palette and CMYK images converted)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}; replace the file") from None


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image, read from its header only."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}; replace the file") from None


def read_index_mask(path: Path) -> np.ndarray:
    """Read a single-channel index PNG (mode ``P`` or ``L``) as ``HxW`` uint8 class ids.

    A palette PNG is read as its indices, never converted to colours.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            mask = np.asarray(img) if mode in ("P", "L") else None
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}; replace the file") from None
    if mask is None:
        raise DatasetError(
            f"mask {path} has image mode {mode!r}; masks must be single-channel index PNGs"
            " (mode 'P' or 'L') whose pixel values are class ids, not colours"
        )
    return mask


class FileSource:
    """Image / mask pairs on disk for one split.

    Args:
        ids: sample identifiers.
        images: image path of each id.
        masks: mask path of each id.
        num_labels: valid label values are ``0..num_labels-1`` and ``void``.
        void: the "not annotated" value in the masks (255).
        void_to: if set, ``void`` is replaced by this class id (VOC's ``void_as_class``).
        what: how to describe the data set in messages, e.g. ``"VOC"``.

    Raises:
        DatasetError: an image or mask file is missing.
    """

    def __init__(
        self,
        ids: Sequence[str],
        images: Sequence[Path],
        masks: Sequence[Path],
        *,
        num_labels: int,
        void: int = 255,
        void_to: int | None = None,
        what: str,
    ) -> None:
        self.ids = list(ids)
        self.images = list(images)
        self.masks = list(masks)
        self.num_labels = num_labels
        self.void = void
        self.void_to = void_to
        self.what = what
        for sample_id, image, mask in zip(self.ids, self.images, self.masks, strict=True):
            for kind, path in (("image", image), ("mask", mask)):
                if not path.is_file():
                    raise DatasetError(
                        f"{what} sample {sample_id!r}: {kind} file {path} is missing; restore it"
                        " or remove the id from the list"
                    )

    def _check(self, index: int, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        path = self.masks[index]
        if mask.shape != size:
            raise DatasetError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image"
                f" {self.images[index]} is {size[1]}x{size[0]} (width x height);"
                " a mask must have its image's size"
            )
        counts = np.bincount(mask.ravel(), minlength=256)
        counts[: self.num_labels] = 0
        counts[self.void] = 0
        bad = np.flatnonzero(counts)
        if bad.size:
            raise DatasetError(
                f"mask {path} holds label values {bad.tolist()}; valid values are"
                f" 0..{self.num_labels - 1} and {self.void} (void) for this {self.what}"
                " data set; fix the mask"
            )
        if self.void_to is not None:
            mask = np.where(mask == self.void, np.uint8(self.void_to), mask)
        return mask

    def label(self, index: int) -> np.ndarray:
        mask = read_index_mask(self.masks[index])
        return self._check(index, mask, image_size(self.images[index]))

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(self.images[index])
        mask = read_index_mask(self.masks[index])
        return image, self._check(index, mask, image.shape[:2])
