"""Size and cost of a network: parameter count and FLOPs at a given input size.

FLOPs are counted by PyTorch's own ``torch.utils.flop_counter`` on one forward pass of one
image: 2 per multiply-add of convolutions and matrix products. Pooling, BatchNorm, ReLU and the
bilinear upsampling are not counted (they are small beside the convolutions and fusable).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(module: nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> int:
    """FLOPs of one forward pass on one ``in_channels x H x W`` image (eval mode)."""
    was_training = module.training
    module.eval()
    try:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.zeros(1, in_channels, *input_size, device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(x)
        return int(counter.get_total_flops())
    finally:
        module.train(was_training)
