"""The shared weights' schedule: cosine with warm restarts (ENAS's). Their optimizer is
``supernet.training.make_optimizer``, the same choice as for a child."""

from __future__ import annotations

import torch

from searchspec.spec import SharedSpec
from supernet.training import DEFAULT_LR


def shared_lr(shared: SharedSpec) -> float:
    return shared.lr if shared.lr is not None else DEFAULT_LR[shared.optimizer]


def make_shared_scheduler(
    optimizer: torch.optim.Optimizer, shared: SharedSpec, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from ``lr`` to ``lr_min`` over ``restart_epochs`` epochs, then a warm restart with
    a period ``restart_mult`` times longer; stepped once per training step."""
    lr = shared_lr(shared)
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer,
        T_0=shared.restart_epochs * steps_per_epoch,
        T_mult=shared.restart_mult,
        eta_min=shared.lr_min if shared.lr_min is not None else lr / 100,
    )
