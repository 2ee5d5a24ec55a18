"""The folder data set: a user's images, index-PNG masks and classes.txt, built in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from errors import DatasetError
from supernet.data import FolderSpec, load_dataset

CLASSES = "background\n\ncat\ndog\n"  # a blank line is skipped: 3 classes
SUFFIXES = (".png", ".jpg", ".bmp", ".jpeg", ".png")


def esc(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


def save_mask(mask: np.ndarray, path: Path, *, palette: bool = False) -> None:
    """Save class ids as an index PNG: mode ``L``, or mode ``P`` with a colour palette (a ``P``
    image without a palette may have its indices merged when saved)."""
    image = Image.fromarray(mask).convert("P") if palette else Image.fromarray(mask)
    if palette:
        image.putpalette([(37 * k) % 256 for k in range(768)])
    image.save(path)


def make_folder(root: Path, count: int = 10) -> dict[str, np.ndarray]:
    """Write ``count`` image/mask pairs of varied sizes and formats; returns mask per stem."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text(CLASSES)
    masks = {}
    for i in range(count):
        stem = f"sample{i:02d}"
        h, w = 20 + 3 * i, 40 - 2 * i
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{stem}{SUFFIXES[i % len(SUFFIXES)]}")
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        mask[0, :] = 255
        # Half the masks are palette PNGs, half greyscale: both hold class ids.
        save_mask(mask, root / "masks" / f"{stem}.png", palette=bool(i % 2))
        masks[stem] = mask
    return masks


def spec(root: Path, **fields) -> FolderSpec:
    return FolderSpec(kind="folder", root=root, **{"size": 32, **fields})


def test_folder_loads_a_7_2_1_split_of_sorted_stems(tmp_path: Path):
    masks = make_folder(tmp_path)
    data = load_dataset(spec(tmp_path))
    assert data.num_classes == 3 and data.class_names == ("background", "cat", "dog")
    assert (len(data.train), len(data.val), len(data.test)) == (7, 2, 1)
    ids = data.train.ids + data.val.ids + data.test.ids
    assert sorted(ids) == sorted(masks)
    for split in (data.train, data.val, data.test):
        for i, stem in enumerate(split.ids):
            assert np.array_equal(split.label_map(i), masks[stem])


def test_folder_items_and_histogram(tmp_path: Path):
    masks = make_folder(tmp_path)
    data = load_dataset(spec(tmp_path))
    batch = next(iter(torch.utils.data.DataLoader(data.val, batch_size=2)))
    assert batch[0].shape == (2, 3, 32, 32) and batch[1].shape == (2, 32, 32)
    assert set(batch[1].unique().tolist()) <= {0, 1, 2, 255}
    expected = sum(np.bincount(masks[s][masks[s] != 255], minlength=3) for s in data.train.ids)
    assert np.array_equal(data.train.class_histogram(), expected)


def test_folder_augments_train_only(tmp_path: Path):
    make_folder(tmp_path)
    data = load_dataset(spec(tmp_path))
    assert data.train.transform.augment and data.train.transform.flip
    assert not data.val.transform.augment and not data.test.transform.augment
    torch.manual_seed(0)
    a = data.val[0]
    torch.manual_seed(1)
    b = data.val[0]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_folder_train_items_reproducible_with_dataloader_workers(tmp_path: Path):
    make_folder(tmp_path)
    data = load_dataset(spec(tmp_path))

    def first_batch() -> torch.Tensor:
        torch.manual_seed(7)
        loader = torch.utils.data.DataLoader(data.train, batch_size=7, num_workers=2)
        return next(iter(loader))[1]

    assert torch.equal(first_batch(), first_batch())


def test_folder_root_missing(tmp_path: Path):
    with pytest.raises(DatasetError, match=rf"{esc(tmp_path / 'nope')} does not exist"):
        load_dataset(spec(tmp_path / "nope"))


def test_folder_missing_classes_txt(tmp_path: Path):
    make_folder(tmp_path)
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=rf"{esc(tmp_path / 'classes.txt')} is missing"):
        load_dataset(spec(tmp_path))


def test_folder_needs_two_distinct_classes(tmp_path: Path):
    make_folder(tmp_path)
    (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(DatasetError, match=r"classes\.txt names 1 classes"):
        load_dataset(spec(tmp_path))
    (tmp_path / "classes.txt").write_text("background\ncat\ncat\n")
    with pytest.raises(DatasetError, match=r"more than once: \['cat'\]"):
        load_dataset(spec(tmp_path))


def test_folder_without_images(tmp_path: Path):
    make_folder(tmp_path)
    for path in (tmp_path / "images").iterdir():
        path.unlink()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=rf"no images in {esc(tmp_path / 'images')}"):
        load_dataset(spec(tmp_path))


def test_folder_image_without_mask(tmp_path: Path):
    make_folder(tmp_path)
    mask = tmp_path / "masks" / "sample03.png"
    mask.unlink()
    with pytest.raises(DatasetError, match=rf"'sample03'.*mask file {esc(mask)} is missing"):
        load_dataset(spec(tmp_path))


def test_folder_two_images_with_one_stem(tmp_path: Path):
    make_folder(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "sample00.bmp")
    with pytest.raises(DatasetError, match="share the stem 'sample00'"):
        load_dataset(spec(tmp_path))


def _index_of(data, stem: str):
    for split in (data.train, data.val, data.test):
        if stem in split.ids:
            return split, split.ids.index(stem)
    raise AssertionError(stem)


def test_folder_mask_size_mismatch_when_read(tmp_path: Path):
    make_folder(tmp_path)
    mask = tmp_path / "masks" / "sample04.png"
    save_mask(np.zeros((5, 5), np.uint8), mask)
    split, i = _index_of(load_dataset(spec(tmp_path)), "sample04")
    with pytest.raises(DatasetError, match=rf"mask {esc(mask)} is 5x5 but its image .* is 32x32"):
        split[i]


def test_folder_label_out_of_range_when_read(tmp_path: Path):
    masks = make_folder(tmp_path)
    mask_path = tmp_path / "masks" / "sample05.png"
    broken = masks["sample05"].copy()
    broken[3, 3] = 3  # three classes: ids 0..2
    save_mask(broken, mask_path, palette=True)
    split, i = _index_of(load_dataset(spec(tmp_path)), "sample05")
    message = rf"mask {esc(mask_path)} holds label values \[3\]; valid values are 0\.\.2"
    with pytest.raises(DatasetError, match=message):
        split.label_map(i)
    with pytest.raises(DatasetError, match=esc(mask_path)):
        split.class_histogram()


def test_folder_colour_mask_when_read(tmp_path: Path):
    make_folder(tmp_path)
    mask = tmp_path / "masks" / "sample06.png"
    Image.new("RGB", (28, 38)).save(mask)
    split, i = _index_of(load_dataset(spec(tmp_path)), "sample06")
    with pytest.raises(DatasetError, match=rf"mask {esc(mask)} has image mode 'RGB'"):
        split[i]


def test_folder_unreadable_image_when_read(tmp_path: Path):
    make_folder(tmp_path)
    (image,) = (tmp_path / "images").glob("sample07.*")
    image.write_bytes(b"not an image")
    split, i = _index_of(load_dataset(spec(tmp_path)), "sample07")
    with pytest.raises(DatasetError, match=rf"cannot read image {esc(image)}"):
        split[i]
