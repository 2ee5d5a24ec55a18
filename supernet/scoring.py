"""Scoring child architectures with the supernet's shared weights.

A child is scored with BatchNorm in batch-statistics mode: the running statistics belong to
every child at once and describe none of them, so each minibatch is normalised by its own
statistics, and nothing the scoring sees is written back into the supernet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from supernet.metrics import ConfusionMatrix, Metrics
from supernet.network import SuperNet
from supernet.training import autocast


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm of ``model`` normalises with the current batch's own
    statistics and leaves its running statistics (and counter) untouched; other modules run in
    eval mode. Modes and flags are restored afterwards."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [(m, m.training) for m in model.modules()]
    tracking = [(m, m.track_running_stats) for m in norms]
    model.eval()
    for m in norms:
        # training=True selects batch statistics; track_running_stats=False keeps the running
        # buffers (and num_batches_tracked) out of the update.
        m.training = True
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in tracking:
            m.track_running_stats = flag
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def score_architectures(
    supernet: SuperNet,
    archs: Sequence[Sequence[int]],
    batches: Iterable[tuple[Tensor, Tensor]] | Sequence[Iterable[tuple[Tensor, Tensor]]],
    *,
    num_classes: int,
    ignore_index: int = 255,
    device: torch.device | None = None,
    per_arch_batches: bool = False,
) -> list[Metrics]:
    """Metrics of each architecture in ``archs`` under the supernet's shared weights.

    Args:
        supernet: the shared weights.
        archs: the architectures to score.
        batches: ``(images, masks)`` minibatches that every architecture is scored on, or, with
            ``per_arch_batches``, one such iterable per architecture.
        num_classes: classes of the masks.
        ignore_index: mask value left out of the metrics.
        device: where to run (default: the supernet's device).
        per_arch_batches: ``batches`` holds one iterable per architecture.
    """
    device = device or next(supernet.parameters()).device
    if per_arch_batches:
        per_arch = list(batches)  # type: ignore[arg-type]
        if len(per_arch) != len(archs):
            raise ValueError(f"{len(archs)} architectures but {len(per_arch)} batch lists")
    else:
        shared = [(x.to(device), y.to(device)) for x, y in batches]  # type: ignore[misc]
        per_arch = [shared] * len(archs)
    results = []
    with batch_statistics(supernet):
        for arch, arch_batches in zip(archs, per_arch, strict=True):
            matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
            view = supernet.view(arch)
            for images, masks in arch_batches:
                with autocast(device):
                    logits = view(images.to(device, non_blocking=True))
                matrix.update(logits.argmax(dim=1), masks.to(device, non_blocking=True))
            results.append(matrix.compute())
    return results
