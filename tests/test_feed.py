"""The search's data feed: ready splits equal to today's items, batched augmentation equal to
SegTransform where its draws are fixed, batches that depend on their key alone, and the decode
cache's reuse and invalidation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from errors import DatasetError
from supernet.data import load_dataset
from supernet.data.cache import cache_key, decode_split
from supernet.data.feed import AugmentedSplit, DataFeed, Prefetcher, ReadySplit
from supernet.data.specs import DigitsSpec, VocSpec

FIXTURE = Path(__file__).parent / "fixtures" / "voc2012-sample"
CPU = torch.device("cpu")


def voc(root: Path = FIXTURE, **fields: object) -> VocSpec:
    return VocSpec(kind="voc", root=root, **{"size": 64, "split": "paper", "seed": 0, **fields})


@pytest.fixture
def voc_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "voc"))


def stacked(split) -> tuple[torch.Tensor, torch.Tensor]:
    items = [split[i] for i in range(len(split))]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


@pytest.mark.parametrize("kind", ["voc", "digits"])
def test_a_ready_split_is_its_items_bit_for_bit(kind: str, tmp_path: Path) -> None:
    spec = voc() if kind == "voc" else DigitsSpec(kind="digits", images=30, size=24)
    data = load_dataset(spec)
    images, labels = stacked(data.val)
    direct = ReadySplit.from_split(data.val, CPU)
    cached = ReadySplit.from_decoded(
        decode_split(data.val, data.val.transform.size, cache_dir=tmp_path, progress=False),
        data.val,
        CPU,
    )
    for ready in (direct, cached):
        assert torch.equal(ready.images, images) and torch.equal(ready.labels, labels)
    ids = [len(data.val) - 1, 0]
    x, y = cached.batch(ids)
    assert torch.equal(x, images[ids]) and torch.equal(y, labels[ids])


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding: the feed normalises as ``x * gain + shift``, SegTransform
    as ``(x / 255 - mean) / std``."""
    return torch.allclose(a, b, rtol=0, atol=1e-5)


def test_batched_augmentation_with_fixed_draws_is_the_letterbox_exactly() -> None:
    """With the rescale fixed at 1 and no flip there is nothing random left: the batch is
    SegTransform's evaluation output, pixel for pixel (bilinear sampling at pixel centres),
    the labels exactly."""
    data = load_dataset(voc(scale=(1.0, 1.0), flip=False))
    feed = DataFeed(data, CPU, progress=False)
    ids = list(range(len(data.train)))
    x, y = feed.train_batch(ids, (0, 0, 0, 0))
    data.train.transform.augment = False
    images, labels = stacked(data.train)
    assert close(x, images) and torch.equal(y, labels)


def test_a_flip_mirrors_the_image_and_its_labels_together() -> None:
    data = load_dataset(voc(scale=(1.0, 1.0), flip=True))
    feed = DataFeed(data, CPU, progress=False)
    ids = list(range(len(data.train)))
    x, y = feed.train_batch(ids, (0, 0, 0, 0))
    data.train.transform.augment = False
    images, labels = stacked(data.train)  # the fixture's images are landscape: a full frame
    for k in range(len(ids)):
        plain = close(x[k], images[k]) and torch.equal(y[k], labels[k])
        mirrored = close(x[k], images[k].flip(-1)) and torch.equal(y[k], labels[k].flip(-1))
        assert plain != mirrored  # one or the other, whole
    keys = [(0, 0, step, 0) for step in range(20)]
    flips = {torch.equal(feed.train_batch([0], k)[1][0], labels[0].flip(-1)) for k in keys}
    assert flips == {True, False}  # both happen


def test_an_augmented_batch_depends_on_its_key_alone() -> None:
    data = load_dataset(voc())
    feed = DataFeed(data, CPU, progress=False)
    ids = list(range(len(data.train)))
    first = feed.train_batch(ids, (0, 1, 2, 0))
    feed.train_batch(ids, (5, 5, 5, 5))  # whatever came between
    again = feed.train_batch(ids, (0, 1, 2, 0))
    other = feed.train_batch(ids, (0, 1, 3, 0))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    x, y = first
    assert x.shape == (len(ids), 3, 64, 64) and y.shape == (len(ids), 64, 64)
    assert set(y.unique().tolist()) <= {*range(21), 255}


def test_a_downscaled_image_is_padded_with_zeros_and_the_ignore_label() -> None:
    # The fixture's training images are 500x375 or 500x333: at 64 and half scale, 32 wide and
    # 24 or 21 high, in the top-left corner (nothing to crop); the rest is padding.
    data = load_dataset(voc(scale=(0.5, 0.5), flip=False))
    x, y = DataFeed(data, CPU, progress=False).train_batch([0, 1, 2], (0, 0, 0, 0))
    for k in range(3):
        h, w = data.train.label_map(k).shape
        nh, nw = round(h * 64 / max(h, w) * 0.5), round(w * 64 / max(h, w) * 0.5)
        outside = torch.ones(64, 64, dtype=torch.bool)
        outside[:nh, :nw] = False
        assert torch.all(y[k][outside] == 255) and torch.all(x[k][:, outside] == 0)
        assert (y[k][:nh, :nw] != 255).float().mean() > 0.5  # the image: labelled, mostly


def test_prefetched_batches_are_the_batches_asked_for() -> None:
    data = load_dataset(voc())
    plain = DataFeed(data, CPU, progress=False)
    ahead = DataFeed(data, CPU, progress=False, prefetch=True)
    try:
        steps = [([0, 1], (0, 0, s, 0)) for s in range(4)]
        for k, (ids, key) in enumerate(steps):
            then = steps[k + 1] if k + 1 < len(steps) else None
            got = ahead.train_batch(ids, key, then=then)
            assert torch.equal(got[0], plain.train_batch(ids, key)[0])
        # A guess that missed: the batch asked for is built, not the one guessed.
        ahead.train_batch([0], (9, 9, 9, 0), then=([1], (9, 9, 10, 0)))
        got = ahead.train_batch([2], (1, 2, 3, 0))
        assert torch.equal(got[0], plain.train_batch([2], (1, 2, 3, 0))[0])
    finally:
        ahead.close()


def test_the_prefetcher_without_a_thread_builds_on_demand() -> None:
    calls: list[int] = []
    fetch = Prefetcher(enabled=False)
    fetch.ahead(("a",), lambda: calls.append(1) or (torch.zeros(1), torch.zeros(1)))
    assert calls == []
    fetch.take(("a",), lambda: calls.append(2) or (torch.zeros(1), torch.zeros(1)))
    assert calls == [2]


def test_the_decode_cache_is_built_once_and_reused(voc_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = load_dataset(voc(voc_copy))
    first = decode_split(data.val, 64, cache_dir=cache, progress=False)
    [entry] = [p for p in cache.iterdir() if not p.name.startswith(".")]

    def no_decoding(index: int):
        raise AssertionError("decoded again")

    again = load_dataset(voc(voc_copy))
    again.val.source.sample = no_decoding  # type: ignore[method-assign]
    reused = decode_split(again.val, 64, cache_dir=cache, progress=False)
    assert (reused.images == first.images).all() and (reused.sizes == first.sizes).all()
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # no scratch left


def test_the_decode_cache_is_invalidated_by_a_file_or_the_spec(
    voc_copy: Path, tmp_path: Path
) -> None:
    data = load_dataset(voc(voc_copy))
    key = cache_key(data.val, 64, "zero")
    assert key is not None
    assert cache_key(data.val, 64, "edge") != key
    assert cache_key(data.val, 65, "zero") != key
    assert cache_key(load_dataset(voc(voc_copy, void_as_class=True)).val, 64, "zero") != key
    # The split's seed names its samples: a key per set of samples, whatever made it.
    other = load_dataset(voc(voc_copy, seed=1)).train
    same_ids = other.ids == data.train.ids
    assert (cache_key(other, 64, "zero") == cache_key(data.train, 64, "zero")) == same_ids
    # A changed file: same name, new contents (and modification time).
    cache = tmp_path / "cache"
    decode_split(data.val, 64, cache_dir=cache, progress=False)
    other_side = decode_split(data.val, 32, cache_dir=cache, progress=False)
    side_32 = cache_key(data.val, 32, "zero")
    image = data.val.source.images[0]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = load_dataset(voc(voc_copy)).val
    new_key = cache_key(changed, 64, "zero")
    assert new_key != key
    decode_split(changed, 64, cache_dir=cache, progress=False)
    # The stale decode is gone; the other side's entry, of the same files, is another family.
    assert sorted(p.name for p in cache.iterdir()) == sorted([new_key, side_32])
    assert other_side.side == 32


def test_canvases_are_decoded_in_memory_without_a_cache_entry(tmp_path: Path) -> None:
    data = load_dataset(DigitsSpec(kind="digits", images=30, size=24, augment=True))
    feed = DataFeed(data, CPU, cache_dir=tmp_path / "cache", progress=False)
    assert isinstance(feed.train, AugmentedSplit) and isinstance(feed.val, ReadySplit)
    assert not (tmp_path / "cache").exists()
    x, y = feed.train_batch([0, 1, 2], (0, 0, 0, 0))
    assert x.shape == (3, data.in_channels, 24, 24) and y.shape == (3, 24, 24)


def test_an_empty_split_is_a_data_set_error() -> None:
    data = load_dataset(voc())
    assert len(data.test) == 0  # four fixture images: 3 / 1 / 0
    with pytest.raises(DatasetError, match="test split is empty"):
        ReadySplit.from_split(data.test, CPU)
    with pytest.raises(DatasetError, match="test split is empty"):
        decode_split(data.test, 64, progress=False)
