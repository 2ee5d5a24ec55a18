"""The shared weights' optimizer and its cosine schedule with warm restarts (ENAS's)."""

from __future__ import annotations

import torch
from torch import nn

from segnas.spec import SharedSpec

DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3}


def shared_lr(shared: SharedSpec) -> float:
    return shared.lr if shared.lr is not None else DEFAULT_LR[shared.optimizer]


def make_shared_optimizer(net: nn.Module, shared: SharedSpec) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum as in ENAS, or AdamW."""
    lr = shared_lr(shared)
    if shared.optimizer == "sgd":
        return torch.optim.SGD(
            net.parameters(),
            lr=lr,
            momentum=shared.momentum,
            nesterov=shared.nesterov and shared.momentum > 0,
            weight_decay=shared.weight_decay,
        )
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=shared.weight_decay)


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
