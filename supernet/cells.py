"""The candidate cells, and the small blocks they are made of.

Every cell is ``conv1x1 + BN + ReLU`` followed by one operation. The paper's six (index: name,
the default space's order):

    0: conv3x3   conv 3x3 + BN + ReLU
    1: sep3x3    depthwise-separable conv 3x3 + BN + ReLU
    2: conv5x5   conv 5x5 + BN + ReLU
    3: sep5x5    depthwise-separable conv 5x5 + BN + ReLU
    4: avgpool3x3  average pooling 3x3, stride 1 (padding not counted in the average)
    5: maxpool3x3  max pooling 3x3, stride 1

and the paper's future work, DeepLab v3+'s atrous convolutions, which a space may name:

    dilconv3x3_r2, dilconv3x3_r4  dilated conv 3x3 at rate 2 or 4 + BN + ReLU
    dilsep3x3_r2                  dilated depthwise-separable conv 3x3, rate 2 + BN + ReLU
    aspp                          conv 1x1, conv 3x3 at rates 2 and 4 and image pooling in
                                  parallel, concatenated, fused by conv 1x1 + BN + ReLU

All cells keep the number of channels and the spatial size. ``OPS`` is the registry: a cell
added to it (and to ``supernet.space.CELL_REGISTRY``) is tested by the cell tests as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.space import CELL_REGISTRY


class ConvBnAct(nn.Sequential):
    """``conv(kernel) + BN + ReLU`` with same padding.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
        groups: convolution groups (``in_channels`` for a depthwise conv).
        act: whether to end with ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        groups: int = 1,
        act: bool = True,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=dilation * (kernel_size // 2),
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


class SepConvBnAct(nn.Sequential):
    """Depthwise ``k x k`` conv (dilated by ``dilation``), pointwise ``1 x 1`` conv, then
    BN + ReLU."""

    def __init__(self, channels: int, kernel_size: int, *, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(
                channels,
                channels,
                kernel_size,
                padding=dilation * (kernel_size // 2),
                dilation=dilation,
                groups=channels,
                bias=False,
            ),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


def _conv3x3(c: int) -> nn.Module:
    return ConvBnAct(c, c, 3)


def _sep3x3(c: int) -> nn.Module:
    return SepConvBnAct(c, 3)


def _conv5x5(c: int) -> nn.Module:
    return ConvBnAct(c, c, 5)


def _sep5x5(c: int) -> nn.Module:
    return SepConvBnAct(c, 5)


def _avgpool3x3(c: int) -> nn.Module:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def _maxpool3x3(c: int) -> nn.Module:
    return nn.MaxPool2d(3, stride=1, padding=1)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3+), at ``channels`` per branch: conv 1x1,
    conv 3x3 at rates 2 and 4 (each + BN + ReLU) and image-level pooling (global average,
    conv 1x1 + ReLU, spread back over the map), concatenated and fused by conv 1x1 + BN + ReLU.

    The pooled branch has no BatchNorm: on a 1x1 map of a batch of one it has a single value
    per channel, which BatchNorm cannot normalise in training.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.branches = nn.ModuleList(
            [ConvBnAct(c, c, 1), ConvBnAct(c, c, 3, dilation=2), ConvBnAct(c, c, 3, dilation=4)]
        )
        self.image = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1), nn.ReLU(inplace=True)
        )
        self.fuse = ConvBnAct(4 * c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        # A loop TorchScript can type (it cannot a starred generator), as export needs.
        maps: list[Tensor] = []
        for branch in self.branches:
            maps.append(branch(x))
        maps.append(self.image(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.fuse(torch.cat(maps, dim=1))


def _dilconv3x3_r2(c: int) -> nn.Module:
    return ConvBnAct(c, c, 3, dilation=2)


def _dilconv3x3_r4(c: int) -> nn.Module:
    return ConvBnAct(c, c, 3, dilation=4)


def _dilsep3x3_r2(c: int) -> nn.Module:
    return SepConvBnAct(c, 3, dilation=2)


# One named factory per cell: a table rather than closures built in a loop, so that each index
# provably builds its own operation (a late-binding closure once made every branch the same op).
OPS: dict[str, Callable[[int], nn.Module]] = {
    "conv3x3": _conv3x3,
    "sep3x3": _sep3x3,
    "conv5x5": _conv5x5,
    "sep5x5": _sep5x5,
    "avgpool3x3": _avgpool3x3,
    "maxpool3x3": _maxpool3x3,
    "dilconv3x3_r2": _dilconv3x3_r2,
    "dilconv3x3_r4": _dilconv3x3_r4,
    "dilsep3x3_r2": _dilsep3x3_r2,
    "aspp": ASPP,
}
if tuple(OPS) != tuple(CELL_REGISTRY):  # one registry: the names, and what builds each
    raise ImportError("supernet.cells.OPS and supernet.space.CELL_REGISTRY disagree")


class Cell(nn.Module):
    """One searchable cell: ``conv1x1 + BN + ReLU`` followed by the named operation.

    Args:
        name: one of ``CELL_REGISTRY``.
        channels: input and output channels.
    """

    def __init__(self, name: str, channels: int) -> None:
        super().__init__()
        if name not in OPS:
            raise ValueError(f"unknown cell {name!r}; known cells are {list(OPS)}")
        self.name = name
        self.proj = ConvBnAct(channels, channels, 1)
        self.op = OPS[name](channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(self.proj(x))

    def extra_repr(self) -> str:
        return self.name


class CentreConv(nn.Module):
    """A ``k x k`` convolution whose kernel is the centre of a larger convolution's kernel.

    Weight entanglement: conv3x3 trains the centre of the same layer's conv5x5 instead of a
    kernel of its own, so every step that runs either trains the weights of both.

    Args:
        larger: the convolution that owns the weights (same padding, no bias).
        kernel_size: the smaller, odd kernel size.
    """

    def __init__(self, larger: nn.Conv2d, kernel_size: int) -> None:
        super().__init__()
        if kernel_size > larger.kernel_size[0] or kernel_size % 2 == 0:
            raise ValueError(f"cannot take a {kernel_size}x{kernel_size} centre of {larger}")
        self.larger = larger
        self.kernel_size = kernel_size

    def centre(self) -> Tensor:
        weight = self.larger.weight
        off = (weight.shape[-1] - self.kernel_size) // 2
        return weight[:, :, off : off + self.kernel_size, off : off + self.kernel_size]

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.centre(), padding=self.kernel_size // 2, groups=self.larger.groups)

    def standalone(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding a copy of the centre (for a child of its own)."""
        big = self.larger
        conv = nn.Conv2d(
            big.in_channels,
            big.out_channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            groups=big.groups,
            bias=False,
        ).to(big.weight.device, big.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.centre())
        return conv


SHARING_MODES: tuple[str, ...] = ("independent", "entangled")
"""How the candidate cells of one layer share weights in the supernet: ``independent`` (ENAS:
every cell its own), or ``entangled``: one leading conv1x1 + BN + ReLU for all cells of the
layer, and conv3x3 / sep3x3 use the centre of conv5x5's / sep5x5's kernels (sep3x3 also
shares sep5x5's pointwise conv). BatchNorms after the operation stay per cell."""


def entangle(cells: nn.ModuleList) -> None:
    """Tie the weights of one layer's candidate ``Cell`` s in place (``entangled`` sharing).

    Pairs whose larger cell is not among ``cells`` stay independent.
    """
    by_name = {cell.name: cell for cell in cells}
    first = cells[0]
    for cell in cells[1:]:
        cell.proj = first.proj
    for small, large in (("conv3x3", "conv5x5"), ("sep3x3", "sep5x5")):
        if small in by_name and large in by_name:
            by_name[small].op[0] = CentreConv(by_name[large].op[0], 3)
    if "sep3x3" in by_name and "sep5x5" in by_name:
        by_name["sep3x3"].op[1] = by_name["sep5x5"].op[1]


def materialize(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``CentreConv`` below ``module`` with a plain convolution
    holding a copy of its weights; returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, CentreConv):
            setattr(module, name, child.standalone())
        else:
            materialize(child)
    return module
