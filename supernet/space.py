"""The search space: shape of the encoder-decoder and the encoding of architectures.

An architecture is one cell index per encoder layer, written as a space-separated string such as
``"0 5 5 2 2 2 4 5 3 5 3 4"`` (the paper's notation). The decoder mirrors the encoder, so the
encoder's choices fix the whole network.

Imports no torch: the service validates search specs with it.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from errors import ArchitectureError

CELL_NAMES: tuple[str, ...] = (
    "conv3x3",
    "sep3x3",
    "conv5x5",
    "sep5x5",
    "avgpool3x3",
    "maxpool3x3",
)
"""The paper's six cells in index order: a space's cells unless it names others."""

CELL_REGISTRY: dict[str, str] = {
    "conv3x3": "conv 3x3 + BN + ReLU",
    "sep3x3": "depthwise-separable conv 3x3 + BN + ReLU",
    "conv5x5": "conv 5x5 + BN + ReLU",
    "sep5x5": "depthwise-separable conv 5x5 + BN + ReLU",
    "avgpool3x3": "average pooling 3x3, stride 1",
    "maxpool3x3": "max pooling 3x3, stride 1",
    "dilconv3x3_r2": "dilated conv 3x3, rate 2 (a 5x5 field) + BN + ReLU",
    "dilconv3x3_r4": "dilated conv 3x3, rate 4 (a 9x9 field) + BN + ReLU",
    "dilsep3x3_r2": "dilated depthwise-separable conv 3x3, rate 2 + BN + ReLU",
    "aspp": "ASPP: conv 1x1, conv 3x3 at rates 2 and 4, image pooling, in parallel; "
    "fused by conv 1x1 + BN + ReLU",
}
"""Every cell a space may name, with what it computes after the common ``conv1x1 + BN + ReLU``
(``supernet.cells.OPS`` builds each): the paper's six, then the dilated and ASPP cells of its
future work (DeepLab v3+'s atrous convolutions). Torch-free, so the API validates spaces."""

Arch = tuple[int, ...]
"""An architecture: one cell index per encoder layer."""


def default_reductions(layers: int) -> tuple[int, ...]:
    """ENAS macro reduction positions: after layers ``n//3 - 1`` and ``2n//3 - 1``."""
    return tuple(sorted({layers // 3 - 1, 2 * layers // 3 - 1} - {-1}))


class SearchSpace(BaseModel):
    """Shape of the searched encoder-decoder network.

    Args:
        layers: encoder layers (the decoder has as many).
        channels: feature channels, constant through the network as in ENAS macro search.
        cells: candidate cell names, in index order: any cells of ``CELL_REGISTRY``
            (``segnas cells``) in any order; defaults to the paper's six, so an architecture
            string's indices refer to this list.
        reductions: encoder layers followed by stride-2 pooling (and, mirrored, decoder layers
            preceded by upsampling); defaults to ``n//3 - 1`` and ``2n//3 - 1``.
        num_classes: output classes of the segmentation head.
        in_channels: input image channels.
        skip_merge: how a long skip joins the upsampled decoder map: ``concat`` (concatenate,
            then conv1x1 + BN + ReLU back to ``channels``) or ``sum``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: int = Field(12, ge=1, le=64)
    channels: int = Field(36, ge=1, le=1024)
    cells: tuple[str, ...] = CELL_NAMES
    # None (the default) means ENAS's positions for ``layers``; always a tuple once validated.
    reductions: tuple[int, ...] = Field(None, validate_default=True)  # type: ignore[assignment]
    num_classes: int = Field(21, ge=2, le=1024)
    in_channels: int = Field(3, ge=1, le=64)
    skip_merge: Literal["concat", "sum"] = "concat"

    @field_validator("reductions", mode="before")
    @classmethod
    def _default_reductions(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            # ``layers`` is validated first; if it failed, its own error is the one to report.
            layers = info.data.get("layers")
            return default_reductions(layers) if isinstance(layers, int) else ()
        return value

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        unknown = [c for c in self.cells if c not in CELL_REGISTRY]
        if unknown:
            raise ValueError(f"unknown cells {unknown}; known cells are {list(CELL_REGISTRY)}")
        if not self.cells or len(set(self.cells)) != len(self.cells):
            raise ValueError("cells must be a non-empty list of distinct cell names")
        reds = self.reductions
        if list(reds) != sorted(set(reds)) or any(not 0 <= r < self.layers for r in reds):
            raise ValueError(
                f"reductions must be distinct, increasing layer indices in [0, {self.layers - 1}],"
                f" got {list(reds)}"
            )
        return self

    @property
    def num_choices(self) -> int:
        """Number of candidate cells per layer."""
        return len(self.cells)

    def sides(self, size: int) -> list[int]:
        """Side of the feature maps each encoder layer runs at (its decoder mirror too) on a
        ``size x size`` input: the pooling after each reduction halves it, rounding down."""
        sides, side = [], size
        for layer in range(self.layers):
            sides.append(side)
            if layer in self.reductions:
                side //= 2
        return sides

    @property
    def min_input_size(self) -> int:
        """Smallest input side the network accepts: each reduction halves it (floor)."""
        return 2 ** len(self.reductions)

    @property
    def size(self) -> int:
        """Number of distinct architectures in the space."""
        return self.num_choices**self.layers

    def check(self, arch: Iterable[int]) -> Arch:
        """Return ``arch`` as a tuple after checking its length and indices.

        Raises:
            ArchitectureError: wrong number of layers or an index outside ``[0, num_choices)``.
        """
        arch = tuple(arch)
        if len(arch) != self.layers:
            raise ArchitectureError(
                f"architecture has {len(arch)} layers, the search space has {self.layers}"
            )
        bad = [
            (i, c)
            for i, c in enumerate(arch)
            if not isinstance(c, numbers.Integral)
            or isinstance(c, bool)
            or not 0 <= c < self.num_choices
        ]
        if bad:
            i, c = bad[0]
            raise ArchitectureError(
                f"layer {i} has cell index {c!r}; valid indices are 0..{self.num_choices - 1}"
            )
        return tuple(int(c) for c in arch)

    def parse(self, text: str | Sequence[int]) -> Arch:
        """Parse ``"0 5 5 2 ..."`` (spaces or commas) or a list of ints into a checked arch."""
        if not isinstance(text, str):
            return self.check(text)
        tokens = arch_tokens(text)
        try:
            values = [int(t) for t in tokens]
        except ValueError:
            raise ArchitectureError(
                f"architecture {text!r} must be cell indices separated by spaces, "
                f"e.g. {format_arch(i % self.num_choices for i in range(self.layers))!r}"
            ) from None
        return self.check(values)

    def cell_name(self, index: int) -> str:
        """Name of the cell with the given index."""
        return self.cells[index]


def arch_tokens(text: str) -> list[str]:
    """The cells of ``"0 5 5 2 ..."`` (spaces or commas) as written, one per layer."""
    return text.replace(",", " ").split()


def format_arch(arch: Iterable[int]) -> str:
    """Format an architecture the way the paper writes it: ``"0 5 5 2 ..."``."""
    return " ".join(str(int(c)) for c in arch)
