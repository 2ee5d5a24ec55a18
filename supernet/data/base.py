"""The loaded data set: its splits as torch ``Dataset``s and the facts every consumer needs.

A split pairs a *source* (which reads raw samples: an ``HxWx3`` uint8 image and an ``HxW``
uint8 label map, already validated and with void mapped) with a ``SegTransform`` that turns them
into fixed-size tensors. Sources for files on disk read lazily; the digits source holds its
canvases in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from errors import DatasetError
from supernet.data.transforms import SegTransform

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")


class SampleSource(Protocol):
    """Reads the raw samples of one split."""

    ids: list[str]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``HxWx3`` uint8 image and ``HxW`` uint8 label map of sample ``index``."""
        ...

    def label(self, index: int) -> np.ndarray:
        """The ``HxW`` uint8 label map of sample ``index`` (without reading the image)."""
        ...


class SegmentationSplit(Dataset[tuple[Tensor, Tensor]]):
    """One split (train, val or test) of a segmentation data set.

    Items are ``(image, labels)``: ``float32 [C, size, size]`` normalised and
    ``int64 [size, size]``, the same size for every item so the default collate batches them.

    Args:
        name: ``train``, ``val`` or ``test`` (for messages).
        source: reads raw samples.
        transform: turns a raw sample into tensors.
        num_classes: number of classes; label ids are ``0..num_classes-1``.
        ignore_index: label that counts in neither loss nor metrics.
    """

    def __init__(
        self,
        name: str,
        source: SampleSource,
        transform: SegTransform,
        *,
        num_classes: int,
        ignore_index: int = 255,
    ) -> None:
        self.name = name
        self.source = source
        self.transform = transform
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._histogram: np.ndarray | None = None

    @property
    def ids(self) -> list[str]:
        """Sample identifiers, in item order."""
        return self.source.ids

    def __len__(self) -> int:
        return len(self.source.ids)

    def _index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            # IndexError (not DatasetError): it ends iteration by the sequence protocol.
            raise IndexError(f"{self.name} split has {n} items, index {index} is out of range")
        return index % n

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.source.sample(self._index(index))
        return self.transform(image, label)

    def label_map(self, index: int) -> np.ndarray:
        """The raw ``HxW`` uint8 label map of item ``index``: void mapped, not resized or
        augmented."""
        return self.source.label(self._index(index))

    def class_histogram(self) -> np.ndarray:
        """Pixel count per class id (length ``num_classes``, int64) over the raw label maps,
        ignore label excluded. Computed once, then cached."""
        if self._histogram is None:
            counts = np.zeros(256, dtype=np.int64)
            for i in range(len(self)):
                counts += np.bincount(self.source.label(i).ravel(), minlength=256)
            counts[self.ignore_index] = 0
            self._histogram = counts[: self.num_classes].copy()
        return self._histogram.copy()


@dataclass(frozen=True)
class SegmentationData:
    """A loaded data set: three splits and what a model, a metric or an export card needs.

    Attributes:
        train: training split (the only one augmented).
        val: validation split (ENAS rewards are computed on it).
        test: test split (final reporting).
        num_classes: number of classes, ids ``0..num_classes-1``.
        class_names: one name per class id.
        in_channels: image channels.
        mean: per-channel mean subtracted from the 0..1 images.
        std: per-channel standard deviation the images are divided by.
        ignore_index: label that counts in neither loss nor metrics.
    """

    train: SegmentationSplit
    val: SegmentationSplit
    test: SegmentationSplit
    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int = 255

    def split(self, name: str) -> SegmentationSplit:
        """The split called ``name``: ``train``, ``val`` or ``test``.

        Raises:
            DatasetError: any other name.
        """
        if name not in SPLIT_NAMES:
            raise DatasetError(f"unknown split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


def assemble(
    sources: Mapping[str, SampleSource],
    *,
    class_names: tuple[str, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    augment: bool,
    scale: tuple[float, float],
    flip: bool,
) -> SegmentationData:
    """Pair each split's source with its transform; only the train split is augmented.

    Args:
        sources: one source per split name (``train``, ``val``, ``test``).
        class_names: one name per class id.
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
        size: side of the square tensors produced.
        augment: random rescale, crop (and flip) on the train split.
        scale: (min, max) rescale factor of the augmentation.
        flip: random horizontal flip in the augmentation.
    """
    splits = {
        name: SegmentationSplit(
            name,
            source,
            SegTransform(
                size=size,
                mean=mean,
                std=std,
                augment=augment and name == "train",
                scale=scale,
                flip=flip,
            ),
            num_classes=len(class_names),
        )
        for name, source in sources.items()
    }
    return SegmentationData(
        **splits,
        num_classes=len(class_names),
        class_names=class_names,
        in_channels=3,
        mean=mean,
        std=std,
    )
