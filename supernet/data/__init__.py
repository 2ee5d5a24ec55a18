"""Segmentation data sets: specs, loading, splits and transforms.

Three kinds, chosen by a spec's ``kind``:

- ``digits`` (default, embedded): real handwritten digits on textured canvases, generated in
  memory from scikit-learn's bundled scans; nothing to download.
- ``voc``: PASCAL VOC 2012 segmentation from a VOCdevkit folder (the paper's data).
- ``folder``: a user's own images, index-PNG masks and ``classes.txt``.

``load_dataset(spec)`` returns a ``SegmentationData`` whose ``train``/``val``/``test`` splits are
torch ``Dataset``s of ``(float32 [3, S, S] normalised image, int64 [S, S] labels)``, 255 =
ignored. Pure PyTorch, numpy and Pillow.
"""

from supernet.data.base import SegmentationData, SegmentationSplit
from supernet.data.digits import DIGIT_CLASSES
from supernet.data.load import load_dataset
from supernet.data.specs import (
    DatasetSpec,
    DigitsSpec,
    FolderSpec,
    VocSpec,
    parse_dataset_spec,
)
from supernet.data.splits import split_ids, split_sizes
from supernet.data.transforms import SegTransform
from supernet.data.voc import VOC_CLASSES

__all__ = [
    "DIGIT_CLASSES",
    "VOC_CLASSES",
    "DatasetSpec",
    "DigitsSpec",
    "FolderSpec",
    "SegTransform",
    "SegmentationData",
    "SegmentationSplit",
    "VocSpec",
    "load_dataset",
    "parse_dataset_spec",
    "split_ids",
    "split_sizes",
]
