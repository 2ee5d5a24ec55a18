"""Data set specifications: what a search or a training run reads, as validated pydantic models.

A spec is a small mapping in a config file or an API request, told apart by ``kind``::

    {"kind": "shapes", "images": 1500}
    {"kind": "digits", "images": 2000}
    {"kind": "voc", "root": "/data/VOCdevkit", "split": "paper"}
    {"kind": "folder", "root": "/data/my-set", "size": 128}

Specs only check values; paths are checked when the data set is loaded (``load_dataset``), so a
spec can be validated on a machine that does not hold the data. Unknown fields are errors: a
typo must never silently become a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from errors import DatasetError, validation_problems
from supernet.fielddocs import described


def _ordered(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    if pair[0] > pair[1]:
        raise ValueError(f"must be (min, max) with min <= max, got {pair}")
    return pair


_Factor = Annotated[float, Field(gt=0.0, le=8.0)]
Scale = Annotated[tuple[_Factor, _Factor], AfterValidator(_ordered)]
"""(min, max) factor of the random training rescale, applied on top of the letterbox scale."""
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
MAX_ROOT_CHARS = 4096


def _plain_path(path: Path) -> Path:
    text = str(path)
    if len(text) > MAX_ROOT_CHARS:
        raise ValueError(f"must be a path of at most {MAX_ROOT_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("must not contain control characters (a NUL byte, a newline, ...)")
    return path


DataRoot = Annotated[Path, AfterValidator(_plain_path)]
"""A data set's folder: a path without control characters (``os`` refuses a NUL byte)."""


class _Spec(BaseModel):
    # Frozen: a loaded data set never disagrees with its spec. Forbid: a typo is an error.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        described(cls)  # the docstring's Args describe the fields (in the OpenAPI document)


class DigitsSpec(_Spec):
    """The embedded data set: real handwritten digits placed on textured canvases.

    Nothing is downloaded: the digits are scikit-learn's 1,797 bundled 8x8 scans. Classes are
    ``background`` and ``0``..``9`` (11). See ``supernet.data.digits``.

    Args:
        images: canvases over the three splits together (cut 7:2:1).
        size: side of the square canvases (and of the tensors produced).
        min_digits: fewest digits tried per canvas.
        max_digits: most digits per canvas (fewer when they do not fit without overlap).
        digit_size: (min, max) pixel height of a placed digit.
        augment: random rescale and crop on the training split (never a flip: a mirrored digit
            is another shape).
        scale: (min, max) random rescale factor when ``augment`` is on.
        seed: seed of the scan split, the canvases and their contents.
        labels: ``digits`` labels each digit's ink with its class (11 classes with the
            background); ``foreground`` labels all digit ink as one class ``digit`` (2 classes):
            telling strokes of digits from the scribbles around them, an easier task that a
            small CPU budget can learn.
    """

    kind: Literal["digits"] = "digits"
    images: int = Field(2000, ge=1, le=100_000)
    size: int = Field(48, ge=16, le=512)
    min_digits: int = Field(1, ge=0, le=16)
    max_digits: int = Field(3, ge=1, le=16)
    digit_size: Annotated[
        tuple[Annotated[int, Field(ge=8)], Annotated[int, Field(ge=8)]], AfterValidator(_ordered)
    ] = (14, 22)
    augment: bool = False
    scale: Scale = (0.5, 2.0)
    seed: Seed = 0
    labels: Literal["digits", "foreground"] = "digits"

    @model_validator(mode="after")
    def _check_digits(self) -> DigitsSpec:
        if self.min_digits > self.max_digits:
            raise ValueError(
                f"min_digits ({self.min_digits}) must not exceed max_digits ({self.max_digits})"
            )
        if self.digit_size[1] > self.size:
            raise ValueError(
                f"digit_size {self.digit_size} does not fit on canvases of size {self.size}"
            )
        return self


class ShapesSpec(_Spec):
    """The embedded search task: large shapes of four classes on textured canvases.

    Nothing is downloaded. Classes are ``background``, ``disc``, ``square``, ``triangle`` and
    ``diamond`` (and ``boundary`` with ``boundary: class``). See ``supernet.data.shapes``.

    Args:
        images: canvases over the three splits together (cut 7:2:1).
        size: side of the square canvases (and of the tensors produced).
        min_objects: fewest shapes tried per canvas.
        max_objects: most shapes per canvas (fewer when they do not fit without overlap).
        object_size: (min, max) side in pixels of a shape's square box.
        boundary: ``none`` labels every pixel; ``void`` ignores each shape's one-pixel outline
            (VOC's 255 border); ``class`` labels it as a class ``boundary`` of its own (the
            paper's 22-class setting).
        augment: random rescale, crop and flip on the training split.
        scale: (min, max) random rescale factor when ``augment`` is on.
        seed: seed of the canvases and their contents.
    """

    kind: Literal["shapes"] = "shapes"
    images: int = Field(1500, ge=1, le=100_000)
    size: int = Field(32, ge=16, le=512)
    min_objects: int = Field(2, ge=0, le=16)
    max_objects: int = Field(3, ge=1, le=16)
    object_size: Annotated[
        tuple[Annotated[int, Field(ge=4)], Annotated[int, Field(ge=4)]], AfterValidator(_ordered)
    ] = (14, 24)
    boundary: Literal["none", "void", "class"] = "none"
    augment: bool = False
    scale: Scale = (0.5, 2.0)
    seed: Seed = 0

    @model_validator(mode="after")
    def _check_shapes(self) -> ShapesSpec:
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects ({self.min_objects}) must not exceed max_objects ({self.max_objects})"
            )
        if self.object_size[1] > self.size:
            raise ValueError(
                f"object_size {self.object_size} does not fit on canvases of size {self.size}"
            )
        return self


class VocSpec(_Spec):
    """PASCAL VOC 2012 segmentation (see ``supernet.data.voc``).

    Args:
        root: the folder holding ``VOCdevkit/``, or the ``VOC2012`` folder itself.
        split: ``paper`` cuts the 2,913 trainval images 7:2:1 into train/val/test (seeded);
            ``official`` uses ``train.txt`` for train and cuts ``val.txt`` 2:1 into val/test
            (VOC's test masks are not public).
        void_as_class: count the 255 boundary label as a 22nd class ``void`` (the paper's
            setting) instead of ignoring it.
        size: side of the square tensors produced.
        augment: random rescale, crop and flip on the training split.
        scale: (min, max) random rescale factor when ``augment`` is on.
        flip: random horizontal flip when ``augment`` is on.
        seed: seed of the split.
    """

    kind: Literal["voc"]
    root: DataRoot
    split: Literal["paper", "official"] = "paper"
    void_as_class: bool = False
    size: int = Field(256, ge=16, le=2048)
    augment: bool = True
    scale: Scale = (0.5, 2.0)
    flip: bool = True
    seed: Seed = 0


class FolderSpec(_Spec):
    """A user's own data set in a folder (see ``supernet.data.folder``).

    Args:
        root: folder with ``images/``, ``masks/`` and ``classes.txt``.
        size: side of the square tensors produced.
        augment: random rescale, crop and flip on the training split.
        scale: (min, max) random rescale factor when ``augment`` is on.
        flip: random horizontal flip when ``augment`` is on.
        seed: seed of the 7:2:1 split.
    """

    kind: Literal["folder"]
    root: DataRoot
    size: int = Field(256, ge=16, le=2048)
    augment: bool = True
    scale: Scale = (0.5, 2.0)
    flip: bool = True
    seed: Seed = 0


AnyDatasetSpec = ShapesSpec | DigitsSpec | VocSpec | FolderSpec
DatasetSpec = Annotated[AnyDatasetSpec, Field(discriminator="kind")]
"""Any data set spec, told apart by its ``kind`` field."""

_KINDS: dict[str, type[_Spec]] = {
    "shapes": ShapesSpec,
    "digits": DigitsSpec,
    "voc": VocSpec,
    "folder": FolderSpec,
}
DATASET_KINDS: tuple[str, ...] = tuple(_KINDS)
_ADAPTER: TypeAdapter[AnyDatasetSpec] = TypeAdapter(DatasetSpec)


def parse_dataset_spec(data: Mapping[str, Any]) -> AnyDatasetSpec:
    """Validate a mapping (from a config file or a request) into a data set spec.

    Raises:
        DatasetError: not a mapping, no or unknown ``kind``, unknown fields, or bad values; the
            message names every offending field and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise DatasetError(f"a data set spec must be a mapping, got {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise DatasetError(
            f"data set spec has kind {kind!r}; set 'kind' to one of {', '.join(_KINDS)}"
            if "kind" in data
            else f"data set spec has no 'kind'; set it to one of {', '.join(_KINDS)}"
        )
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise DatasetError(_describe(str(kind), exc)) from None


def _describe(kind: str, exc: ValidationError) -> str:
    """The problems in one line, e.g. ``invalid 'digits' data set spec: images: Input should be
    greater than or equal to 1 (got 0)``."""
    known = ", ".join(_KINDS[kind].model_fields)
    problems = validation_problems(
        exc, drop=(kind,), unknown_hint=f" (fields of kind {kind!r}: {known})"
    )
    return f"invalid {kind!r} data set spec: {problems}"
