"""``load_dataset``: from a spec (or a plain mapping) to a loaded ``SegmentationData``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from errors import DatasetError
from supernet.data.base import SegmentationData
from supernet.data.digits import load_digits_dataset
from supernet.data.folder import load_folder
from supernet.data.shapes import load_shapes_dataset
from supernet.data.specs import (
    AnyDatasetSpec,
    DigitsSpec,
    FolderSpec,
    ShapesSpec,
    VocSpec,
    parse_dataset_spec,
)
from supernet.data.voc import load_voc


def load_dataset(spec: AnyDatasetSpec | Mapping[str, Any]) -> SegmentationData:
    """Load the data set a spec describes.

    Args:
        spec: a ``ShapesSpec``, ``DigitsSpec``, ``VocSpec`` or ``FolderSpec``, or a mapping that
            ``parse_dataset_spec`` accepts.

    Raises:
        DatasetError: the spec is invalid or the data on disk is missing or malformed.
    """
    if isinstance(spec, Mapping):
        spec = parse_dataset_spec(spec)
    if isinstance(spec, ShapesSpec):
        return load_shapes_dataset(spec)
    if isinstance(spec, DigitsSpec):
        return load_digits_dataset(spec)
    if isinstance(spec, VocSpec):
        return load_voc(spec)
    if isinstance(spec, FolderSpec):
        return load_folder(spec)
    raise DatasetError(f"not a data set spec: {type(spec).__name__}")
