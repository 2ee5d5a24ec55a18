"""Segmentation metrics from a confusion matrix, and the three reward functions of the paper.

The confusion matrix is accumulated over every pixel of a split (never averaged per image);
pixels with the ignore label are left out. ``matrix[t, p]`` counts pixels of true class ``t``
predicted as ``p``.

Every mean is over the classes *present*: in the truth or in the prediction of the split.
Classes absent from both have no defined precision, recall or IoU (0 / 0) and are left out.
A present class whose ratio has a zero denominator counts as 0: a class in the truth that is
never predicted has precision 0 (as well as recall 0 and IoU 0), and a predicted class absent
from the truth has recall 0 (as well as precision 0 and IoU 0). So a model that predicts only
background scores ``1 / present`` precision for the background's share at most, and cannot
beat a model that finds the objects (leaving the never-predicted classes out of the mean, as
before, let an all-background model score 0.90 mean precision, above real models' 0.82).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from errors import ConfigError


class ConfusionMatrix:
    """Pixel confusion matrix over ``num_classes`` classes, accumulated batch by batch.

    Args:
        num_classes: number of classes.
        ignore_index: label value left out of the counts.
        device: where the counts live (the device of the predictions avoids copies).
    """

    def __init__(
        self, num_classes: int, *, ignore_index: int = 255, device: torch.device | str = "cpu"
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._counts = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` holds class ids (or logits ``[N, C, H, W]``), ``target`` labels."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        valid = target != self.ignore_index
        t = target[valid].to(torch.int64)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            raise ValueError(
                f"target labels must be in [0, {self.num_classes}) or {self.ignore_index}"
            )
        p = pred[valid].to(torch.int64)
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= self.num_classes):
            raise ValueError(f"predicted class ids must be in [0, {self.num_classes})")
        index = (t * self.num_classes + p).to(self._counts.device)
        self._counts += torch.bincount(index, minlength=self.num_classes**2)

    @property
    def matrix(self) -> np.ndarray:
        """The counts as a ``[true, predicted]`` numpy array."""
        return self._counts.view(self.num_classes, self.num_classes).cpu().numpy()

    def compute(self, *, background: int = 0) -> Metrics:
        """All metrics of the accumulated pixels."""
        return metrics_from_matrix(self.matrix, background=background)


METRIC_NAMES: tuple[str, ...] = ("accuracy", "mean_precision", "mean_recall", "miou", "miou_plus")
"""The headline metrics of ``Metrics``, in the order tables show them."""


class Metrics(BaseModel):
    """Metrics of one split.

    ``per_class_iou`` holds ``None`` for classes absent from truth and prediction.
    """

    model_config = ConfigDict(frozen=True)

    accuracy: float
    mean_precision: float
    mean_recall: float
    miou: float
    miou_plus: float
    per_class_iou: list[float | None]
    pixels: int


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else 0.0


def _present_mean(num: np.ndarray, den: np.ndarray, present: np.ndarray) -> float:
    """Mean of ``num / den`` over the present classes, a zero denominator counting as 0."""
    if not present.any():
        return 0.0
    ratio = np.zeros(num.shape)
    np.divide(num, den, out=ratio, where=den > 0)
    return float(ratio[present].mean())


def metrics_from_matrix(matrix: np.ndarray, *, background: int = 0) -> Metrics:
    """Pixel accuracy, mean precision, mean recall, per-class IoU, mIoU and mIoU+.

    mIoU+ merges the classes into two, ``background`` and everything else ("all objects"), and
    averages the two IoUs.

    Args:
        matrix: ``[true, predicted]`` pixel counts.
        background: the class id that stays background in mIoU+.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    true = m.sum(axis=1)
    pred = m.sum(axis=0)
    total = m.sum()
    iou = _ratio(tp, true + pred - tp)
    present = (true + pred) > 0

    objects = np.ones(len(m), dtype=bool)
    objects[background] = False
    merged = np.array(
        [
            [m[~objects][:, ~objects].sum(), m[~objects][:, objects].sum()],
            [m[objects][:, ~objects].sum(), m[objects][:, objects].sum()],
        ]
    )
    merged_tp = np.diag(merged)
    merged_iou = _ratio(merged_tp, merged.sum(0) + merged.sum(1) - merged_tp)

    return Metrics(
        accuracy=float(tp.sum() / total) if total else 0.0,
        mean_precision=_present_mean(tp, pred, present),
        mean_recall=_present_mean(tp, true, present),
        miou=_nanmean(iou),
        miou_plus=_nanmean(merged_iou),
        per_class_iou=[None if np.isnan(v) else float(v) for v in iou],
        pixels=int(total),
    )


REWARDS: dict[str, Callable[[Metrics], float]] = {
    "accuracy": lambda m: m.accuracy,
    "miou": lambda m: m.miou,
    "miou_plus": lambda m: m.miou_plus,
}
"""The paper's reward candidates, by name."""


def get_reward(name: str) -> Callable[[Metrics], float]:
    """The reward function called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        return REWARDS[name]
    except KeyError:
        raise ConfigError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)}") from None
