"""Segmentation data sets: specs, loading, splits and transforms.

Four kinds, chosen by a spec's ``kind``:

- ``shapes`` (default, embedded): large shapes of four classes on textured canvases, the task
  the default search runs; generated in memory, nothing to download.
- ``digits`` (embedded): real handwritten digits on textured canvases, generated in
  memory from scikit-learn's bundled scans; nothing to download.
- ``voc``: PASCAL VOC 2012 segmentation from a VOCdevkit folder (the paper's data).
- ``folder``: a user's own images, index-PNG masks and ``classes.txt``.

``load_dataset(spec)`` returns a ``SegmentationData`` whose ``train``/``val``/``test`` splits are
torch ``Dataset``s of ``(float32 [3, S, S] normalised image, int64 [S, S] labels)``, 255 =
ignored. Pure PyTorch, numpy and Pillow. Names are imported on first use, so the specs
(``supernet.data.specs``) stay importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DIGIT_CLASSES": "supernet.data.digits",
    "VOC_CLASSES": "supernet.data.voc",
    "DatasetSpec": "supernet.data.specs",
    "DigitsSpec": "supernet.data.specs",
    "SHAPE_NAMES": "supernet.data.shapes",
    "ShapesSpec": "supernet.data.specs",
    "FolderSpec": "supernet.data.specs",
    "VocSpec": "supernet.data.specs",
    "parse_dataset_spec": "supernet.data.specs",
    "SegTransform": "supernet.data.transforms",
    "SegmentationData": "supernet.data.base",
    "SegmentationSplit": "supernet.data.base",
    "load_dataset": "supernet.data.load",
    "split_ids": "supernet.data.splits",
    "split_sizes": "supernet.data.splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'supernet.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
