"""Architectures scored under the shared weights of a search's checkpoint, on a whole split.

What the derive phase does inside a search, for any architectures, after the fact: the
evaluation (``workers.evaluate``) ranks uniformly drawn architectures with each searched
supernet, and ``bench/reward_agreement.py`` compares the rewards' rankings. BatchNorm runs in
batch-statistics mode as in the search (``supernet.scoring``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from searchspec.spec import SearchSpec
from supernet.data import load_dataset
from supernet.metrics import METRIC_NAMES
from supernet.network import SuperNet
from supernet.scoring import score_architectures
from workers.checkpoints import load_checkpoint


def score_checkpoint(
    path: str | Path,
    archs: Sequence[Sequence[int]],
    *,
    split: str = "val",
    batch_size: int | None = None,
) -> list[dict[str, float]]:
    """The headline metrics of each architecture under the checkpoint's shared weights.

    Args:
        path: a search checkpoint (``epoch-NNNNN.pt``).
        archs: architectures of the search's space.
        split: the split scored (the whole of it).
        batch_size: images per forward pass; default the search's scoring minibatch.
    """
    payload = load_checkpoint(path)
    spec = SearchSpec.model_validate(payload["spec"])
    data = load_dataset(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    supernet = SuperNet(space, sharing=spec.shared.sharing)
    supernet.load_state_dict(payload["weights"]["supernet"])
    images = data.split(split)
    size = batch_size or spec.controller_phase.batch_size
    batches = [
        _stack(images, range(i, min(i + size, len(images)))) for i in range(0, len(images), size)
    ]
    metrics = score_architectures(
        supernet, archs, batches, num_classes=data.num_classes, ignore_index=data.ignore_index
    )
    return [{name: float(getattr(m, name)) for name in METRIC_NAMES} for m in metrics]


def _stack(split: Any, indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [split[i] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
