"""Size and cost of a network: parameter count and FLOPs at a given input size.

FLOPs are counted by PyTorch's own ``torch.utils.flop_counter`` on one forward pass of one
image: 2 per multiply-add of convolutions and matrix products. Pooling, BatchNorm, ReLU and the
bilinear upsampling are not counted (they are small beside the convolutions and fusable).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from supernet.cells import Cell
from supernet.network import build_child
from supernet.space import SearchSpace


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


class ChildSizes:
    """Parameters and FLOPs of any child of ``space`` as a stand-alone network, without
    building it.

    A child is its frame (stem, skip merges, head) and one cell per encoder and decoder layer
    (decoder layer ``j`` mirrors encoder layer ``n - 1 - j`` at the same resolution), so its
    size is the frame's plus twice the sum of its cells'. Each cell kind is counted once here,
    from a real module (for FLOPs once per resolution its layers run at), so
    ``params(arch) == count_params(build_child(space, arch))`` and, with ``input_size``,
    ``flops(arch) == count_flops(build_child(space, arch), (input_size, input_size))`` for every
    ``arch``.

    Args:
        space: the search space.
        input_size: side of the square input the FLOPs are counted at (the data set's
            ``size``); None: ``flops`` is not available.
    """

    def __init__(self, space: SearchSpace, input_size: int | None = None) -> None:
        self.space = space
        self.input_size = input_size
        cells = [Cell(name, space.channels) for name in space.cells]
        self.cell_params = [count_params(cell) for cell in cells]
        first = build_child(space, [0] * space.layers)
        self.frame_params = count_params(first) - 2 * space.layers * self.cell_params[0]
        if input_size is None:
            return
        # Encoder layer i and its decoder mirror run at side sides[i]; each cell kind is counted
        # once at each side there is.
        self._sides = space.sides(input_size)
        self.cell_flops = [
            {side: count_flops(cell, (side, side), space.channels) for side in set(self._sides)}
            for cell in cells
        ]  # [cell][side]
        zeros = sum(self.cell_flops[0][side] for side in self._sides)
        self.frame_flops = count_flops(first, (input_size, input_size), space.in_channels)
        self.frame_flops -= 2 * zeros

    def params(self, arch: Iterable[int]) -> int:
        cells = self.space.check(arch)
        return self.frame_params + 2 * sum(self.cell_params[i] for i in cells)

    def flops(self, arch: Iterable[int]) -> int:
        """FLOPs of one forward pass of one image at ``input_size`` (``count_flops``)."""
        if self.input_size is None:
            raise ValueError("ChildSizes was made without an input_size: no FLOPs to count")
        cells = self.space.check(arch)
        return self.frame_flops + 2 * sum(
            self.cell_flops[c][side] for c, side in zip(cells, self._sides, strict=True)
        )
