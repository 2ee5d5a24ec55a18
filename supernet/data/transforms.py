"""Joint image + label-map transforms that turn a raw sample into fixed-size tensors.

Evaluation ("letterbox", deterministic): scale so the longer side equals ``size`` (bilinear for
the image, nearest for the labels, so no label is ever blended), then pad bottom and right to
``size x size``. Padding is the mean colour in the image (zero after normalisation) and the
ignore label in the labels, so it counts neither in the loss nor in the metrics, and a
prediction maps back to the original by cropping ``[:h, :w]``.

Training (``augment=True``): a random factor drawn uniformly from ``scale`` multiplies the
letterbox scale, an optional random horizontal flip, then padding to at least ``size`` and a
random ``size x size`` crop.

Random draws come from torch's default generator. ``DataLoader`` seeds it in every worker from
the main process's generator, so a run is reproducible given ``torch.manual_seed`` whatever the
number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(high: int) -> int:
    """A random integer in ``[0, high]``."""
    return int(torch.randint(high + 1, ())) if high > 0 else 0


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """``height x width`` scaled by ``factor``, rounded, at least one pixel each: the letterbox
    (``factor = size / max(height, width)``, the longer side exactly ``size``) and its rescale."""
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize_pair(
    image: np.ndarray, label: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an ``HxWx3`` uint8 image (bilinear) and its ``HxW`` label map (nearest)."""
    if image.shape[:2] == (height, width):
        return image, label
    img = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    lab = Image.fromarray(label).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(img), np.asarray(lab)


class SegTransform:
    """Letterbox (and, for training, augment) a sample into ``size x size`` tensors.

    Args:
        size: side of the square output.
        mean: per-channel mean of the 0..1 image, subtracted.
        std: per-channel standard deviation of the 0..1 image, divided by.
        augment: random rescale, flip and crop (training split only).
        scale: (min, max) of the random rescale factor.
        flip: random horizontal flip (with ``augment``).
        ignore_index: label written into padding.
    """

    def __init__(
        self,
        *,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        scale: tuple[float, float] = (0.5, 2.0),
        flip: bool = False,
        ignore_index: int = 255,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError("mean and std need one value per channel and std must be positive")
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.scale = scale
        self.flip = flip
        self.ignore_index = ignore_index

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[Tensor, Tensor]:
        """Transform one sample.

        Args:
            image: ``HxWxC`` uint8.
            label: ``HxW`` uint8 class ids (ignore label included).

        Returns:
            ``float32 [C, size, size]`` normalised image and ``int64 [size, size]`` labels.
        """
        h, w = label.shape
        factor = self.size / max(h, w)
        if self.augment:
            factor *= _uniform(*self.scale)
        # The longer side lands exactly on `size` in evaluation (round(max * size / max)).
        nh, nw = scaled_size(h, w, factor)
        image, label = resize_pair(image, label, nh, nw)
        if self.augment and self.flip and float(torch.rand(())) < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        # Crop window in the bottom/right padded frame; without augmentation the frame is
        # exactly size x size and the window is the whole of it.
        top = _randint(nh - self.size) if self.augment else 0
        left = _randint(nw - self.size) if self.augment else 0
        image = image[top : top + self.size, left : left + self.size]
        label = label[top : top + self.size, left : left + self.size]
        ch, cw = label.shape

        # The conversions copy, so read-only inputs (PIL buffers, cached canvases) are fine.
        crop = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
        x = torch.zeros(crop.shape[0], self.size, self.size, dtype=torch.float32)
        x[:, :ch, :cw] = (crop / 255.0 - self.mean) / self.std
        y = torch.full((self.size, self.size), self.ignore_index, dtype=torch.int64)
        y[:ch, :cw] = torch.from_numpy(label.astype(np.int64))
        return x, y
