"""Batches that keep a device busy: splits made ready once, scored by index, augmented in batches.

``SegmentationSplit[i]`` decodes, resizes and normalises one image at a time in the caller's
thread: fine for a retraining's DataLoader workers, too slow for a search that scores a fresh
validation minibatch for every sample. A ``DataFeed`` does each piece of work once:

- a split without augmentation (validation, test, and training unless it augments) is a
  ``ReadySplit``: every item's tensors, transformed once and held on the device, so that a
  batch is an index, equal bit for bit to stacking ``split[i]``;
- an augmented training split is decoded once (``supernet.data.cache``, at the largest side
  the random rescale asks for) and augmented a whole batch at a time on the device
  (``AugmentedSplit``: random scale, crop and flip as one ``grid_sample``), with the random
  draws from a generator seeded by the batch's key: a batch depends on its key alone, so a
  resumed search draws the batches it would have drawn;
- a ``Prefetcher`` builds the next batch in a thread while the current step runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from errors import DatasetError
from supernet.data.base import SegmentationData, SegmentationSplit
from supernet.data.cache import Decoded, decode_split

Batch = tuple[Tensor, Tensor]
"""``float32 [B, C, S, S]`` normalised images and ``int64 [B, S, S]`` labels."""


def _index(values: Tensor, ids: Sequence[int]) -> Tensor:
    return values.index_select(0, torch.as_tensor(ids, dtype=torch.long, device=values.device))


class ReadySplit:
    """A split without augmentation, transformed once and held as tensors on ``device``.

    Args:
        images: ``float32 [N, C, S, S]``, normalised, zero outside each image.
        labels: ``int64 [N, S, S]``, ``ignore_index`` outside each image.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    @classmethod
    def from_split(cls, split: SegmentationSplit, device: torch.device) -> ReadySplit:
        """Every item of ``split`` through its own transform (decoding each once)."""
        if split.transform.augment:
            raise ValueError(f"the {split.name} split augments: its items are not fixed")
        if len(split) == 0:
            raise DatasetError(f"the {split.name} split is empty: there is nothing to batch")
        pairs = [split[i] for i in range(len(split))]
        images = torch.stack([p[0] for p in pairs]).to(device)
        labels = torch.stack([p[1] for p in pairs]).to(device)
        return cls(images, labels)

    @classmethod
    def from_decoded(
        cls, decoded: Decoded, split: SegmentationSplit, device: torch.device
    ) -> ReadySplit:
        """``split``'s items from its decode at the transform's side: the same tensors as
        ``from_split`` (the same resize, the same arithmetic), without decoding again."""
        t = split.transform
        if t.augment or decoded.side != t.size:
            raise ValueError(f"the {split.name} split's decode does not match its transform")
        raw = torch.from_numpy(decoded.images.copy()).permute(0, 3, 1, 2)
        images = (raw.float() / 255.0 - t.mean) / t.std
        inside = _inside(torch.from_numpy(decoded.sizes), t.size)
        images = torch.where(inside[:, None], images, 0.0)  # SegTransform's zeros outside
        labels = torch.from_numpy(decoded.labels.copy()).long()
        labels[~inside] = split.ignore_index
        return cls(images.to(device), labels.to(device))

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, ids: Sequence[int]) -> Batch:
        return _index(self.images, ids), _index(self.labels, ids)


def _inside(sizes: Tensor, side: int) -> Tensor:
    """``bool [N, side, side]``: where each image (``sizes``: height, width) lies in its frame."""
    rows = torch.arange(side, device=sizes.device)
    return (rows[None, :, None] < sizes[:, 0, None, None]) & (
        rows[None, None, :] < sizes[:, 1, None, None]
    )


def batch_seed(key: Sequence[int]) -> int:
    """A 63-bit seed from a batch's key (for example seed, epoch, step, rank)."""
    digest = hashlib.blake2b(repr(tuple(int(k) for k in key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class AugmentedSplit:
    """A training split augmented a batch at a time: SegTransform's random rescale, flip and
    crop, as one bilinear (labels: nearest) ``grid_sample`` of the whole batch.

    An item is the image letterboxed to ``size``, scaled by a factor drawn uniformly from
    ``scale``, mirrored with probability one half (with ``flip``), padded bottom and right to
    at least ``size`` and cropped at a uniformly drawn ``size x size`` window: the padding is
    zero in the image and ``ignore_index`` in the labels. The images are sampled (bilinear,
    without antialiasing) from a decode of the split, by default at ``size`` (``side_for``).

    Args:
        decoded: the split decoded at that side, with ``edge`` padding.
        split: the split (its transform's size, scale, flip and normalisation).
        device: where the batches are made (the decoded arrays move there when it is a GPU).
    """

    def __init__(self, decoded: Decoded, split: SegmentationSplit, device: torch.device) -> None:
        t = split.transform
        self.size, self.scale, self.flip = t.size, t.scale, t.flip
        self.ignore_index = split.ignore_index
        self.device = device
        self.gain = (1.0 / (255.0 * t.std)).to(device)
        self.shift = (-t.mean / t.std).to(device)
        # On a GPU the whole decode moves there once; on the CPU it stays memory-mapped.
        on_device = device.type != "cpu"
        self.images = torch.from_numpy(decoded.images.copy() if on_device else decoded.images)
        self.labels = torch.from_numpy(decoded.labels.copy() if on_device else decoded.labels)
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        self.sizes = torch.from_numpy(np.asarray(decoded.sizes))
        self.original = torch.from_numpy(np.asarray(decoded.original)).double()
        self.side = decoded.side

    @staticmethod
    def side_for(split: SegmentationSplit) -> int:
        """The default decode side: the tensors' own. A rescale above 1 then upsamples the
        letterboxed image, as pipelines that resize their data set once do; a decode at the
        largest rescale's side keeps those pixels at 4x the memory and several times the time
        a batch (``bench/data_pipeline.py --train-side``)."""
        return split.transform.size

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, ids: Sequence[int], key: Sequence[int]) -> Batch:
        """The augmented items ``ids``, with the random draws of batch ``key``."""
        n, size = len(ids), self.size
        if n == 0:
            raise ValueError("a batch needs at least one item")
        g = torch.Generator().manual_seed(batch_seed(key))
        low, high = self.scale
        factor = low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)
        flips = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        crop = torch.rand(n, 2, generator=g, dtype=torch.float64)
        index = torch.as_tensor(ids, dtype=torch.long)
        valid = self.sizes[index].double()  # each image's size in the decode
        # The image at the letterbox scale times the factor: `scaled` pixels, rounded from the
        # original size as SegTransform rounds; a window at `corner` is cropped from it (0
        # where it is smaller than the window).
        original = self.original[index]
        letterbox = size / original.max(dim=1).values
        scaled = torch.clamp(torch.round(original * (letterbox * factor)[:, None]), min=1)
        corner = torch.floor(crop * (torch.clamp(scaled - size, min=0) + 1))

        # Each output pixel's centre, in the scaled image, then in the decode's pixels.
        out = torch.arange(size, dtype=torch.float64) + 0.5
        y = corner[:, 0, None] + out  # [n, size]
        x = corner[:, 1, None] + out  # in the mirrored image, where there is a flip
        unflipped = torch.where(flips[:, None], scaled[:, 1, None] - x, x)
        src_y = y * (valid[:, 0, None] / scaled[:, 0, None])
        src_x = unflipped * (valid[:, 1, None] / scaled[:, 1, None])
        rows_in = (y < scaled[:, 0, None]).to(self.device)  # [n, size]: inside the image
        cols_in = (x < scaled[:, 1, None]).to(self.device)
        outside = ~(rows_in[:, :, None] & cols_in[:, None, :])  # [n, size, size]

        # The grid, built from its two separable axes (grid_sample's coordinates: -1 and 1 are
        # the decode's outer edges).
        grid = torch.empty(n, size, size, 2, device=self.device)
        grid[..., 0] = (src_x * (2 / self.side) - 1).float().to(self.device)[:, None, :]
        grid[..., 1] = (src_y * (2 / self.side) - 1).float().to(self.device)[:, :, None]
        index = index.to(self.device)

        # Converted where it lies (channels last) and sampled through a permuted view: a
        # contiguous NCHW copy first costs more than the sampling.
        raw = self.images.index_select(0, index).float().permute(0, 3, 1, 2)
        images = F.grid_sample(raw, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)  # fmt: skip
        # (x / 255 - mean) / std in two in-place passes, then the padding's zeros.
        images.mul_(self.gain).add_(self.shift).masked_fill_(outside[:, None], 0.0)

        # Nearest labels: the decode pixel under each output pixel's centre, gathered by row
        # and column (separable, like the grid) without a float copy of the label maps.
        last = self.side - 1
        iy = src_y.floor().clamp_(0, last).long().to(self.device)
        ix = src_x.floor().clamp_(0, last).long().to(self.device)
        flat = (iy[:, :, None] * self.side + ix[:, None, :]).view(n, -1)
        labels = self.labels.index_select(0, index).view(n, -1).gather(1, flat).view(n, size, size)
        labels = labels.long().masked_fill_(outside, self.ignore_index)
        return images, labels


class Prefetcher:
    """Builds the batch asked for next in a thread while the caller works on the current one.

    ``take(key, build)`` returns the batch of ``key``: the one ``ahead`` started for it, or one
    built now. A batch is a function of its key, so a guess that misses costs time, never a
    different batch.

    Args:
        enabled: False: ``ahead`` does nothing (on a CPU the thread would compete with the
            step for the same cores).
    """

    def __init__(self, enabled: bool = True) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1) if enabled else None
        self._pending: tuple[tuple, Future[Batch]] | None = None

    def ahead(self, key: tuple, build: Callable[[], Batch]) -> None:
        if self._pool is not None:
            self._pending = (key, self._pool.submit(build))

    def take(self, key: tuple, build: Callable[[], Batch]) -> Batch:
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == key:
            return pending[1].result()
        return build()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class DataFeed:
    """A data set's batches for a search replica: the training split (ready, or augmented a
    batch at a time) and the validation split, ready.

    Args:
        data: the loaded data set.
        device: where the batches are made and held.
        cache_dir: the decode cache (``supernet.data.cache``); None: decode into memory.
        prefetch: build the next training batch in a thread during the current step.
        progress: a progress bar while a split is decoded into the cache.
        train_side: the side an augmented training split is decoded at (None:
            ``AugmentedSplit.side_for``).
    """

    def __init__(
        self,
        data: SegmentationData,
        device: torch.device,
        *,
        cache_dir: Path | None = None,
        prefetch: bool = False,
        progress: bool = True,
        train_side: int | None = None,
    ) -> None:
        self.data, self.device = data, device
        self.val = self._ready(data.val, cache_dir, progress)
        train = data.train
        if train.transform.augment:
            side = train_side or AugmentedSplit.side_for(train)
            decoded = decode_split(
                train, side, padding="edge", cache_dir=cache_dir, progress=progress
            )
            self.train: ReadySplit | AugmentedSplit = AugmentedSplit(decoded, train, device)
        else:
            self.train = self._ready(train, cache_dir, progress)
        self._prefetch = Prefetcher(enabled=prefetch)

    def _ready(
        self, split: SegmentationSplit, cache_dir: Path | None, progress: bool
    ) -> ReadySplit:
        if cache_dir is None:
            return ReadySplit.from_split(split, self.device)
        decoded = decode_split(split, split.transform.size, cache_dir=cache_dir, progress=progress)
        return ReadySplit.from_decoded(decoded, split, self.device)

    def _train_batch(self, ids: Sequence[int], key: Sequence[int]) -> Batch:
        if isinstance(self.train, AugmentedSplit):
            return self.train.batch(ids, key)
        return self.train.batch(ids)

    def train_batch(
        self,
        ids: Sequence[int],
        key: Sequence[int],
        then: tuple[Sequence[int], Sequence[int]] | None = None,
    ) -> Batch:
        """Training items ``ids`` (augmented with the draws of ``key``); with ``then`` (the
        next batch's ids and key), that batch is started in the background."""
        batch = self._prefetch.take(tuple(key), lambda: self._train_batch(ids, key))
        if then is not None:
            next_ids, next_key = list(then[0]), tuple(then[1])
            self._prefetch.ahead(next_key, lambda: self._train_batch(next_ids, next_key))
        return batch

    def val_batch(self, ids: Sequence[int]) -> Batch:
        """Validation items ``ids``: an index into the ready split."""
        return self.val.batch(ids)

    def close(self) -> None:
        self._prefetch.close()
