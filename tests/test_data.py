"""Data package: splits, specs, transforms and PASCAL VOC on the real 4-image fixture."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from errors import DatasetError
from supernet.data import (
    VOC_CLASSES,
    DigitsSpec,
    FolderSpec,
    SegTransform,
    VocSpec,
    load_dataset,
    parse_dataset_spec,
    split_ids,
    split_sizes,
)

FIXTURE = Path(__file__).parent / "fixtures" / "voc2012-sample"
VOC2012 = FIXTURE / "VOCdevkit" / "VOC2012"
# From SOURCE.txt: the classes of each mask (255 appears in all four as well).
FIXTURE_CLASSES = {
    "2007_004189": {0, 12},
    "2007_006449": {0, 2},
    "2008_002536": {0, 12, 17},
    "2010_005582": {0, 5, 15},
}
# (height, width) of each fixture image.
FIXTURE_SIZES = {
    "2007_004189": (333, 500),
    "2007_006449": (375, 500),
    "2008_002536": (319, 500),
    "2010_005582": (500, 333),
}


def esc(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


def voc(root: Path = FIXTURE, **fields) -> VocSpec:
    return VocSpec(kind="voc", root=root, **{"size": 64, **fields})


def all_items(data) -> dict[str, tuple]:
    """``id -> (split, index)`` over the three splits."""
    return {
        sample_id: (split, i)
        for split in (data.train, data.val, data.test)
        for i, sample_id in enumerate(split.ids)
    }


@pytest.fixture
def voc_copy(tmp_path: Path) -> Path:
    """A writable copy of the VOC fixture; returns its VOC2012 folder."""
    shutil.copytree(FIXTURE, tmp_path / "voc")
    return tmp_path / "voc" / "VOCdevkit" / "VOC2012"


# --- splits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "ratios", "expected"),
    [
        (2913, (7, 2, 1), (2039, 583, 291)),
        (4, (7, 2, 1), (3, 1, 0)),
        (1797, (7, 2, 1), (1258, 359, 180)),
        (10, (7, 2, 1), (7, 2, 1)),
        (0, (7, 2, 1), (0, 0, 0)),
        (4, (2, 1), (3, 1)),
        (1449, (2, 1), (966, 483)),
    ],
)
def test_split_sizes_largest_remainder(total, ratios, expected):
    assert split_sizes(total, ratios) == expected


def test_split_sizes_rejects_bad_ratios():
    with pytest.raises(DatasetError, match="ratios"):
        split_sizes(10, (0, 0))
    with pytest.raises(DatasetError, match="negative"):
        split_sizes(-1)


def test_split_ids_deterministic_disjoint_and_complete():
    ids = [f"id{i:04d}" for i in range(2913)]
    train, val, test = split_ids(ids, seed=3)
    assert (len(train), len(val), len(test)) == (2039, 583, 291)
    assert split_ids(ids, seed=3) == (train, val, test)
    assert split_ids(ids, seed=4) != (train, val, test)
    assert set(train).isdisjoint(val) and set(train).isdisjoint(test) and set(val).isdisjoint(test)
    assert sorted(train + val + test) == ids
    # Each part keeps the input order.
    assert train == sorted(train) and val == sorted(val) and test == sorted(test)


# --- specs ----------------------------------------------------------------------------------


def test_parse_dataset_spec_kinds():
    assert parse_dataset_spec({"kind": "digits"}) == DigitsSpec()
    spec = parse_dataset_spec({"kind": "voc", "root": "/data/voc", "split": "official"})
    assert isinstance(spec, VocSpec) and spec.root == Path("/data/voc")
    assert spec.split == "official" and spec.size == 256 and spec.augment
    spec = parse_dataset_spec({"kind": "folder", "root": "x", "size": 32, "flip": False})
    assert isinstance(spec, FolderSpec) and spec.size == 32 and not spec.flip


def test_parse_dataset_spec_rejects_unknown_field():
    with pytest.raises(DatasetError, match=r"unknown field 'imagez'.*images"):
        parse_dataset_spec({"kind": "digits", "imagez": 10})
    # Digits have no flip: a mirrored digit is another shape.
    with pytest.raises(DatasetError, match="unknown field 'flip'"):
        parse_dataset_spec({"kind": "digits", "flip": True})


def test_parse_dataset_spec_rejects_unknown_or_missing_kind():
    with pytest.raises(DatasetError, match=r"kind 'mnist'.*digits, voc, folder"):
        parse_dataset_spec({"kind": "mnist"})
    with pytest.raises(DatasetError, match=r"no 'kind'.*digits, voc, folder"):
        parse_dataset_spec({"images": 10})
    with pytest.raises(DatasetError, match="mapping"):
        parse_dataset_spec(["digits"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "digits", "images": 0}, "images"),
        ({"kind": "digits", "min_digits": 3, "max_digits": 2}, "min_digits"),
        ({"kind": "digits", "digit_size": [14, 60]}, "digit_size"),
        ({"kind": "voc"}, "root: required field is missing"),
        ({"kind": "voc", "root": "x", "split": "trainval"}, "split"),
        ({"kind": "folder", "root": "x", "scale": [2.0, 1.0]}, "scale"),
        ({"kind": "folder", "root": "x", "size": 4}, "size"),
    ],
)
def test_parse_dataset_spec_rejects_bad_values(data, message):
    with pytest.raises(DatasetError, match=message):
        parse_dataset_spec(data)


def test_specs_are_frozen():
    spec = DigitsSpec()
    with pytest.raises(ValueError, match="frozen"):
        spec.images = 5  # type: ignore[misc]


def test_load_dataset_accepts_a_mapping():
    data = load_dataset({"kind": "voc", "root": str(FIXTURE), "size": 32})
    assert data.num_classes == 21
    with pytest.raises(DatasetError, match="unknown field 'sise'"):
        load_dataset({"kind": "voc", "root": str(FIXTURE), "sise": 32})
    with pytest.raises(DatasetError, match="not a data set spec: str"):
        load_dataset("digits")  # type: ignore[arg-type]


def test_split_by_name():
    data = load_dataset(voc())
    assert data.split("train") is data.train and data.split("test") is data.test
    with pytest.raises(DatasetError, match="unknown split 'valid'"):
        data.split("valid")


# --- transforms -----------------------------------------------------------------------------


def _sample(height: int = 30, width: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (height, width), dtype=np.uint8)
    return image, label


def test_letterbox_scales_longer_side_and_pads_with_ignore():
    image, label = _sample(30, 60)
    transform = SegTransform(size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    x, y = transform(image, label)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.int64
    # 30x60 -> 16x32: rows 16.. are padding, mean colour (0 after normalisation) and ignored.
    assert (y[16:] == 255).all() and (x[:, 16:] == 0).all()
    assert (y[:16] != 255).all()
    assert set(y[:16].unique().tolist()) <= set(np.unique(label).tolist())


def test_letterbox_keeps_a_square_image_of_the_right_size():
    image, label = _sample(32, 32)
    x, y = SegTransform(size=32, mean=(0.5,) * 3, std=(0.25,) * 3)(image, label)
    assert torch.equal(y, torch.from_numpy(label).long())
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected)


def test_augment_flip_mirrors_image_and_labels_together():
    image, label = _sample(32, 32)
    plain = SegTransform(size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    augment = SegTransform(
        size=32, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, scale=(1.0, 1.0), flip=True
    )
    x0, y0 = plain(image, label)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        x, y = augment(image, label)
        flipped = torch.equal(y, y0.flip(-1))
        assert flipped or torch.equal(y, y0)
        assert torch.allclose(x, x0.flip(-1) if flipped else x0)
        seen.add(flipped)
    assert seen == {True, False}


def test_augment_crop_is_reproducible_given_torch_seed():
    image, label = _sample(40, 50)
    transform = SegTransform(
        size=24, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, scale=(1.5, 2.0), flip=True
    )
    torch.manual_seed(1)
    a = transform(image, label)
    torch.manual_seed(1)
    b = transform(image, label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 24, 24) and a[1].shape == (24, 24)
    # Scaled up at least 1.5x from a 24-pixel letterbox: the crop is all image, no padding.
    assert (a[1] != 255).all()


# --- VOC ------------------------------------------------------------------------------------


def test_voc_fixture_masks_hold_the_documented_classes():
    data = load_dataset(voc())
    items = all_items(data)
    assert sorted(items) == sorted(FIXTURE_CLASSES)
    for sample_id, (split, i) in items.items():
        raw = split.label_map(i)
        assert raw.dtype == np.uint8 and raw.shape == FIXTURE_SIZES[sample_id]
        assert set(np.unique(raw).tolist()) == FIXTURE_CLASSES[sample_id] | {255}


def test_voc_paper_split_of_four_ids_is_3_1_0():
    data = load_dataset(voc())
    assert (len(data.train), len(data.val), len(data.test)) == (3, 1, 0)
    assert data.num_classes == 21 and data.class_names == VOC_CLASSES
    assert data.class_names[12] == "dog" and data.class_names[15] == "person"
    assert data.in_channels == 3 and data.ignore_index == 255
    assert len(data.mean) == len(data.std) == 3


def test_voc_official_split_uses_train_list_and_cuts_val():
    data = load_dataset(voc(split="official"))
    assert data.train.ids == []  # the fixture's train.txt is empty
    assert (len(data.val), len(data.test)) == (3, 1)
    assert sorted(data.val.ids + data.test.ids) == sorted(FIXTURE_CLASSES)


def test_voc_accepts_both_root_forms():
    from_parent = load_dataset(voc(FIXTURE))
    from_voc2012 = load_dataset(voc(VOC2012))
    from_devkit = load_dataset(voc(FIXTURE / "VOCdevkit"))
    assert from_parent.train.ids == from_voc2012.train.ids == from_devkit.train.ids
    assert torch.equal(from_parent.val[0][0], from_voc2012.val[0][0])


def test_voc_items_shapes_and_batching():
    data = load_dataset(voc(size=48))
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=3)))
    images, labels = batch
    assert images.shape == (3, 3, 48, 48) and images.dtype == torch.float32
    assert labels.shape == (3, 48, 48) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= set(range(21)) | {255}


def test_voc_eval_letterbox_is_deterministic_and_pads_with_ignore():
    data = load_dataset(voc())
    (split, i) = all_items(data)["2010_005582"]  # 333 wide, 500 high
    torch.manual_seed(0)
    x1, y1 = split[i]
    torch.manual_seed(1)
    x2, y2 = split[i]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # 333x500 -> 43x64 (w x h): columns 43.. are padding.
    assert (y1[:, 43:] == 255).all() and (x1[:, :, 43:] == 0).all()
    assert set(y1[:, :43].unique().tolist()) <= {0, 5, 15, 255}


def test_voc_augmentation_only_on_train():
    data = load_dataset(voc(split="official"))  # val 3 / test 1; train is empty here
    paper = load_dataset(voc())
    assert paper.train.transform.augment
    assert not data.val.transform.augment and not data.test.transform.augment
    outputs = []
    for seed in range(4):
        torch.manual_seed(seed)
        outputs.append(paper.train[0][1])
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])
    torch.manual_seed(0)
    assert torch.equal(paper.train[0][1], outputs[0])
    assert not load_dataset(voc(augment=False)).train.transform.augment


def test_voc_void_as_class_maps_255_to_21():
    data = load_dataset(voc(void_as_class=True, augment=False))
    assert data.num_classes == 22 and data.class_names[-1] == "void"
    for sample_id, (split, i) in all_items(data).items():
        raw = split.label_map(i)
        assert set(np.unique(raw).tolist()) == FIXTURE_CLASSES[sample_id] | {21}
    (split, i) = all_items(data)["2007_004189"]  # 500 wide, 333 high -> 64x43
    _, y = split[i]
    assert (y[:43] != 255).all() and (y[43:] == 255).all()
    assert 21 in y.unique().tolist()


def test_voc_class_histogram_counts_raw_pixels_without_ignore():
    for void_as_class in (False, True):
        data = load_dataset(voc(void_as_class=void_as_class))
        hist = data.train.class_histogram()
        assert hist.shape == (data.num_classes,) and hist.dtype == np.int64
        expected = np.zeros(data.num_classes, dtype=np.int64)
        for i in range(len(data.train)):
            raw = data.train.label_map(i)
            expected += np.bincount(raw[raw != 255], minlength=data.num_classes)
        assert np.array_equal(hist, expected)
        pixels = sum(data.train.label_map(i).size for i in range(len(data.train)))
        assert (hist.sum() == pixels) == void_as_class
    assert load_dataset(voc()).test.class_histogram().sum() == 0  # empty split


def test_voc_missing_root_or_layout(tmp_path: Path):
    with pytest.raises(DatasetError, match=rf"{esc(tmp_path / 'nope')}.*does not exist"):
        load_dataset(voc(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=rf"{esc(tmp_path)} is not a PASCAL VOC 2012 folder"):
        load_dataset(voc(tmp_path))


def test_voc_missing_list_file(voc_copy: Path):
    (voc_copy / "ImageSets" / "Segmentation" / "trainval.txt").unlink()
    with pytest.raises(DatasetError, match=r"trainval\.txt is missing"):
        load_dataset(voc(voc_copy))
    # The official split does not need trainval.txt.
    load_dataset(voc(voc_copy, split="official"))


def test_voc_missing_png_is_reported_at_load(voc_copy: Path):
    png = voc_copy / "SegmentationClass" / "2008_002536.png"
    png.unlink()
    with pytest.raises(DatasetError, match=rf"'2008_002536'.*mask file {esc(png)} is missing"):
        load_dataset(voc(voc_copy))


def test_voc_missing_jpeg_is_reported_at_load(voc_copy: Path):
    jpg = voc_copy / "JPEGImages" / "2007_004189.jpg"
    jpg.unlink()
    with pytest.raises(DatasetError, match=rf"image file {esc(jpg)} is missing"):
        load_dataset(voc(voc_copy))


def test_voc_mask_of_wrong_size_is_reported_when_read(voc_copy: Path):
    png = voc_copy / "SegmentationClass" / "2007_006449.png"
    with Image.open(png) as mask:
        mask.resize((250, 187), Image.Resampling.NEAREST).save(png)
    data = load_dataset(voc(voc_copy))
    split, i = all_items(data)["2007_006449"]
    message = rf"mask {esc(png)} is 250x187 but its image .* is 500x375"
    with pytest.raises(DatasetError, match=message):
        split[i]
    with pytest.raises(DatasetError, match=esc(png)):
        split.label_map(i)


def test_voc_label_out_of_range_is_reported_when_read(voc_copy: Path):
    png = voc_copy / "SegmentationClass" / "2010_005582.png"
    with Image.open(png) as mask:
        values = np.array(mask)
        palette = mask.getpalette()
    values[:10, :10] = 30
    broken = Image.fromarray(values, mode="P")
    broken.putpalette(palette)
    broken.save(png)
    data = load_dataset(voc(voc_copy))
    split, i = all_items(data)["2010_005582"]
    with pytest.raises(DatasetError, match=rf"mask {esc(png)} holds label values \[30\]"):
        split[i]


def test_voc_colour_mask_is_reported(voc_copy: Path):
    png = voc_copy / "SegmentationClass" / "2007_004189.png"
    with Image.open(png) as mask:
        mask.convert("RGB").save(png)
    data = load_dataset(voc(voc_copy))
    split, i = all_items(data)["2007_004189"]
    with pytest.raises(DatasetError, match=rf"mask {esc(png)} has image mode 'RGB'"):
        split.label_map(i)


def test_split_index_out_of_range_is_index_error():
    data = load_dataset(voc())
    with pytest.raises(IndexError):
        data.val[1]
    assert np.array_equal(data.train.label_map(-1), data.train.label_map(2))


def test_splits_survive_pickling():
    # DataLoader workers under "spawn" and Ray actors receive splits pickled.
    data = load_dataset(voc(augment=False))
    clone = pickle.loads(pickle.dumps(data))
    assert clone.train.ids == data.train.ids
    assert torch.equal(clone.train[1][0], data.train[1][0])
