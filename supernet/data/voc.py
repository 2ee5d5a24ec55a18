"""PASCAL VOC 2012 segmentation, read from the official VOCdevkit layout.

Layout (``root`` is the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, or ``VOC2012/``)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png      palette PNG, pixel values = class ids, 255 = void
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

Splits:

- ``paper``: the 2,913 ``trainval`` ids cut 7:2:1 into train/val/test by ``split_ids`` with the
  spec's seed (2039/583/291), as in the paper.
- ``official``: train is ``train.txt`` (1,464); ``val.txt`` (1,449) is cut 2:1 into val/test
  by ``split_ids`` with the seed, because the masks of VOC's own test set are not public.

Labels: 21 classes (background and the 20 VOC objects). The 255 boundary/void label is ignored,
or with ``void_as_class`` becomes class 21 ``void`` (22 classes, the paper's count); then only
letterbox and crop padding is ignored.
"""

from __future__ import annotations

from pathlib import Path

from errors import DatasetError
from supernet.data.base import SPLIT_NAMES, SegmentationData, assemble
from supernet.data.files import FileSource
from supernet.data.layout import find_voc_root
from supernet.data.specs import VocSpec
from supernet.data.splits import split_ids
from supernet.data.transforms import IMAGENET_MEAN, IMAGENET_STD

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOID = 255


def read_id_list(path: Path) -> list[str]:
    """Sample ids of an ``ImageSets/Segmentation`` list file, one per line.

    Raises:
        DatasetError: the file is missing.
    """
    if not path.is_file():
        raise DatasetError(
            f"VOC list file {path} is missing; it ships with VOCtrainval_11-May-2012.tar"
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def voc_split_ids(voc: Path, split: str, seed: int) -> dict[str, list[str]]:
    """Ids of train/val/test for the ``paper`` or ``official`` split."""
    lists = voc / "ImageSets" / "Segmentation"
    if split == "paper":
        parts = split_ids(read_id_list(lists / "trainval.txt"), seed)
    else:
        train = read_id_list(lists / "train.txt")
        val, test = split_ids(read_id_list(lists / "val.txt"), seed, ratios=(2, 1))
        parts = (train, val, test)
    return dict(zip(SPLIT_NAMES, parts, strict=True))


def load_voc(spec: VocSpec) -> SegmentationData:
    """Load PASCAL VOC 2012 as described by ``spec``.

    Raises:
        DatasetError: not a VOC folder, a list file missing, or an id's JPEG or PNG missing.
            A mask of the wrong size or with label values other than 0..20 and 255 raises
            when that sample is read.
    """
    voc = find_voc_root(spec.root)
    names = (*VOC_CLASSES, "void") if spec.void_as_class else VOC_CLASSES
    sources = {}
    for name, ids in voc_split_ids(voc, spec.split, spec.seed).items():
        source = FileSource(
            ids,
            [voc / "JPEGImages" / f"{i}.jpg" for i in ids],
            [voc / "SegmentationClass" / f"{i}.png" for i in ids],
            num_labels=len(VOC_CLASSES),
            void=VOID,
            void_to=len(VOC_CLASSES) if spec.void_as_class else None,
            what="VOC",
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
