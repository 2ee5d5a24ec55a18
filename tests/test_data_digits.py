"""The embedded digits data set: determinism, labels, placement and scan-disjoint splits."""

from __future__ import annotations

import itertools
import sys
import types

import numpy as np
import pytest
import torch

from supernet.data import DIGIT_CLASSES, DigitsSpec, digits, load_dataset
from supernet.data.digits import GAP, digit_scan_splits, load_scans

SMALL = DigitsSpec(images=60, seed=5)


@pytest.fixture(scope="module")
def small():
    return load_dataset(SMALL)


def canvases(split):
    return split.source.canvases


def test_classes_and_split_sizes(small):
    assert small.num_classes == 11 and small.class_names == DIGIT_CLASSES
    assert DIGIT_CLASSES == ("background", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    assert (len(small.train), len(small.val), len(small.test)) == (42, 12, 6)
    assert small.in_channels == 3 and small.ignore_index == 255
    assert small.train.ids[0] == "train-00000" and len(set(small.train.ids)) == 42


def test_same_spec_gives_byte_identical_data(small):
    again = load_dataset(DigitsSpec(images=60, seed=5))
    for name in ("train", "val", "test"):
        a, b = small.split(name), again.split(name)
        assert canvases(a).images.tobytes() == canvases(b).images.tobytes()
        assert canvases(a).masks.tobytes() == canvases(b).masks.tobytes()
        assert canvases(a).placements == canvases(b).placements
        for i in range(len(a)):
            assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])


def test_another_seed_gives_other_canvases(small):
    other = load_dataset(DigitsSpec(images=60, seed=6))
    assert not np.array_equal(canvases(small.train).images, canvases(other.train).images)


def test_items_are_normalised_canvases(small):
    x, y = small.val[3]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert y.shape == (48, 48) and y.dtype == torch.int64
    image, mask = canvases(small.val).images[3], canvases(small.val).masks[3]
    mean = torch.tensor(small.mean).view(3, 1, 1)
    std = torch.tensor(small.std).view(3, 1, 1)
    restored = (x * std + mean) * 255
    expected = torch.from_numpy(image.copy()).permute(2, 0, 1).float()
    assert torch.allclose(restored, expected, atol=1e-3)
    assert torch.equal(y, torch.from_numpy(mask.copy()).long())
    assert np.array_equal(small.val.label_map(3), mask)


def test_cache_is_read_only(small):
    with pytest.raises(ValueError, match="read-only"):
        small.train.label_map(0)[0, 0] = 3


def test_labels_match_placements_without_overlap(small):
    for split in (small.train, small.val, small.test):
        data = canvases(split)
        assert data.images.dtype == np.uint8 and data.masks.dtype == np.uint8
        assert data.masks.max() <= 10
        for mask, placed in zip(data.masks, data.placements, strict=True):
            assert SMALL.min_digits <= len(placed) <= SMALL.max_digits
            outside = np.ones(mask.shape, dtype=bool)
            for box in placed:
                assert SMALL.digit_size[0] <= box.size <= SMALL.digit_size[1]
                window = mask[box.top : box.top + box.size, box.left : box.left + box.size]
                assert set(np.unique(window).tolist()) == {0, box.digit + 1}
                outside[box.top : box.top + box.size, box.left : box.left + box.size] = False
            assert (mask[outside] == 0).all()
            for a, b in itertools.combinations(placed, 2):
                assert not a.overlaps(b, GAP)


def test_placement_records_the_real_scan_and_digit(small):
    _, targets = load_scans()
    for box in itertools.chain.from_iterable(canvases(small.train).placements):
        assert box.digit == targets[box.scan]


def test_splits_use_disjoint_scans():
    spec = DigitsSpec(images=300, seed=2)
    data = load_dataset(spec)
    allowed = digit_scan_splits(spec.seed)
    assert [len(allowed[s]) for s in ("train", "val", "test")] == [1258, 359, 180]
    used = {}
    for name in ("train", "val", "test"):
        placed = itertools.chain.from_iterable(canvases(data.split(name)).placements)
        used[name] = {box.scan for box in placed}
        assert used[name] <= set(allowed[name])
    assert used["train"].isdisjoint(used["val"])
    assert used["train"].isdisjoint(used["test"])
    assert used["val"].isdisjoint(used["test"])


def test_every_class_appears_in_a_default_sized_training_split():
    hist = load_dataset(DigitsSpec(images=200)).train.class_histogram()
    assert hist.shape == (11,) and (hist > 0).all()
    # Digits are a minority of the pixels, but not a vanishing one.
    assert 0.03 < hist[1:].sum() / hist.sum() < 0.3


def test_class_histogram_matches_masks(small):
    hist = small.train.class_histogram()
    assert np.array_equal(hist, np.bincount(canvases(small.train).masks.ravel(), minlength=11))


def test_no_augmentation_by_default_and_never_a_flip():
    data = load_dataset(DigitsSpec(images=20))
    assert not data.train.transform.augment
    torch.manual_seed(0)
    a = data.train[0]
    torch.manual_seed(1)
    b = data.train[0]
    assert torch.equal(a[0], b[0])
    augmented = load_dataset(DigitsSpec(images=20, augment=True))
    assert augmented.train.transform.augment and not augmented.train.transform.flip
    assert not augmented.val.transform.augment


def test_canvas_size_and_digit_count_follow_the_spec():
    spec = DigitsSpec(images=20, size=32, min_digits=2, max_digits=2, digit_size=(10, 12))
    data = load_dataset(spec)
    x, y = data.train[0]
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)
    # Two 10-12 pixel digits always fit on a 32 pixel canvas within the placement tries.
    assert all(len(p) == 2 for p in canvases(data.train).placements)


def test_zero_digits_allowed():
    data = load_dataset(DigitsSpec(images=10, min_digits=0, max_digits=1))
    assert all(len(p) <= 1 for p in canvases(data.train).placements)


# The first scan of sklearn.datasets.load_digits() (a 0) and the scans per digit, as that
# function returns them. Checked here without importing scikit-learn, which takes seconds.
FIRST_SCAN = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]
SCANS_PER_DIGIT = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_scans_are_scikit_learns_digits():
    scans, targets = load_scans()
    assert scans.shape == (1797, 8, 8) and scans.dtype == np.float32
    assert np.array_equal(scans[0] * 16, FIRST_SCAN) and targets[0] == 0
    assert np.bincount(targets).tolist() == SCANS_PER_DIGIT
    assert not scans.flags.writeable  # cached for the whole process


def test_scans_fall_back_to_load_digits(monkeypatch):
    scans, targets = load_scans()
    calls = []

    def load_digits():
        calls.append(1)
        return types.SimpleNamespace(data=scans.reshape(-1, 64) * 16, target=targets)

    # A stand-in for scikit-learn: the file is "not found", so load_digits() is called.
    fake = types.ModuleType("sklearn.datasets")
    fake.load_digits = load_digits  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    monkeypatch.setattr(digits, "_bundled_digits_file", lambda: None)
    again, again_targets = load_scans.__wrapped__()
    assert calls == [1]
    assert np.array_equal(again, scans) and np.array_equal(again_targets, targets)


def test_foreground_labels_merge_every_digit_into_one_class() -> None:
    spec = DigitsSpec(images=60, size=32, digit_size=(12, 20))
    digits_data = load_dataset(spec)
    merged = load_dataset(spec.model_copy(update={"labels": "foreground"}))
    assert merged.num_classes == 2 and merged.class_names == ("background", "digit")
    for i in range(len(merged.train)):
        image, mask = merged.train[i]
        original_image, original = digits_data.train[i]
        assert torch.equal(image, original_image)  # same canvases, only the labels change
        expected = torch.where((original > 0) & (original != 255), 1, original)
        assert torch.equal(mask, expected)
