"""The encoder-decoder skeleton, the shared-weight supernet and stand-alone child networks.

Topology (``n`` layers, reductions ``R``; default ``n = 12``, ``R = (3, 7)``)::

    stem: conv3x3 + BN + ReLU                          (in_channels -> C)
    encoder layer i = 0..n-1: cell arch[i]; if i in R: keep as skip, then maxpool 2x2 stride 2
    decoder layer j = 0..n-1 mirrors encoder layer i = n-1-j with a cell of type arch[i] and its
        own weights; if i in R, the decoder first upsamples (bilinear, x2, to the skip's exact
        size) and merges the skip kept after encoder layer i
    head: conv1x1 (C -> classes), output at the input resolution

Choices made where the paper is silent, and why:

- Upsampling is bilinear interpolation to the skip's size: parameter-free, so the parameter count
  measures the cells, and exact for odd sizes, so any input size works.
- A long skip joins at every reduced resolution (the U-Net pattern): the last encoder map of each
  resolution meets the first decoder map of the same resolution. ``concat`` (default) concatenates
  and fuses with conv1x1 + BN + ReLU; ``sum`` adds.
- The stem, skip merges and head are shared by every architecture.

Both networks run the same code: the supernet's ``forward(x, arch)`` builds (and caches) a
``ChildNet`` *view* whose layers are the supernet's own chosen cells, and runs it. So only the
chosen cell of each layer runs, and a child extracted with ``build_child`` computes exactly what
the supernet computes for that architecture.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.cells import SHARING_MODES, Cell, ConvBnAct, entangle, materialize
from supernet.space import Arch, SearchSpace


class SkipMerge(nn.Module):
    """Joins an upsampled decoder map with the encoder skip of the same resolution."""

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        if mode not in ("concat", "sum"):
            raise ValueError(f"skip merge must be 'concat' or 'sum', got {mode!r}")
        self.mode = mode
        self.fuse = ConvBnAct(2 * channels, channels, 1) if mode == "concat" else nn.Identity()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.mode == "concat":
            return self.fuse(torch.cat([x, skip], dim=1))
        return x + skip


class UpStage(nn.Module):
    """Decoder stage: upsample to the skip's size, merge the skip, run the stage's cells."""

    def __init__(self, merge: nn.Module, cells: nn.Sequential) -> None:
        super().__init__()
        self.merge = merge
        self.cells = cells

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.cells(self.merge(x, skip))


def _split(items: Sequence[nn.Module], starts: Iterable[int]) -> list[nn.Sequential]:
    """Cut ``items`` into consecutive ``nn.Sequential`` groups starting at ``starts``."""
    bounds = [0, *starts, len(items)]
    return [nn.Sequential(*items[a:b]) for a, b in itertools.pairwise(bounds)]


class ChildNet(nn.Module):
    """A stand-alone network for one architecture (TorchScript-able).

    Built from already constructed modules, so the same class serves a fresh child, a copy of the
    supernet's weights, and the supernet's own non-owning views.

    Args:
        space: the search space the architecture belongs to.
        arch: the architecture (checked against ``space``).
        stem: input stem.
        encoder: the ``n`` encoder cells in order.
        decoder: the ``n`` decoder cells in execution order (decoder layer j mirrors encoder
            layer n-1-j).
        merges: one skip merge per reduction, in the order of ``space.reductions``.
        head: the classifier.
    """

    def __init__(
        self,
        space: SearchSpace,
        arch: Arch,
        *,
        stem: nn.Module,
        encoder: Sequence[nn.Module],
        decoder: Sequence[nn.Module],
        merges: Sequence[nn.Module],
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.arch = list(space.check(arch))
        n, reductions = space.layers, list(space.reductions)
        self.stem = stem
        enc_stages = _split(encoder, [r + 1 for r in reductions])
        dec_stages = _split(decoder, sorted(n - 1 - r for r in reductions))
        # Encoder stages that end in a reduction; the last encoder stage and the first decoder
        # stage run back to back at the lowest resolution.
        self.down = nn.ModuleList(enc_stages[:-1])
        self.bottom = nn.Sequential(*enc_stages[-1], *dec_stages[0])
        self.pool = nn.MaxPool2d(2, stride=2)
        self.up = nn.ModuleList(
            UpStage(merges[len(reductions) - 1 - k], cells)
            for k, cells in enumerate(dec_stages[1:])
        )
        self.head = head

    @torch.jit.unused
    def layer_cells(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The encoder cells in layer order and the decoder cells in execution order."""
        down = [cell for stage in self.down for cell in stage]
        bottom = list(self.bottom)
        split = len(self.arch) - len(down)
        up = [cell for stage in self.up for cell in stage.cells]
        return down + bottom[:split], bottom[split:] + up

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        skips: list[Tensor] = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)


def _stem(space: SearchSpace) -> nn.Module:
    return ConvBnAct(space.in_channels, space.channels, 3)


def _head(space: SearchSpace) -> nn.Module:
    return nn.Conv2d(space.channels, space.num_classes, 1)


def _merges(space: SearchSpace) -> list[nn.Module]:
    return [SkipMerge(space.channels, space.skip_merge) for _ in space.reductions]


class _ViewCache(OrderedDict):
    """Views are derived from their owner's modules: never copied or pickled along with it."""

    def __deepcopy__(self, memo: dict) -> _ViewCache:
        return _ViewCache()

    def __reduce__(self) -> tuple:
        return (_ViewCache, ())


class SuperNet(nn.Module):
    """The shared-weight supernet: every candidate cell of every layer, with its own weights.

    ``forward(x, arch)`` runs only the chosen cell of each encoder and decoder layer.

    Args:
        space: the search space.
        sharing: how the cells of one layer share weights (``supernet.cells.SHARING_MODES``):
            ``independent`` (ENAS), or ``entangled`` (one conv1x1 per layer, the 3x3 kernels
            the centres of the 5x5 ones).
        view_cache: how many architecture views to keep. Building a view costs about 0.8 ms of
            Python, small beside a training step; the cache saves it for repeated architectures.
    """

    def __init__(
        self, space: SearchSpace, *, sharing: str = "independent", view_cache: int = 64
    ) -> None:
        super().__init__()
        if sharing not in SHARING_MODES:
            raise ValueError(f"sharing must be one of {list(SHARING_MODES)}, got {sharing!r}")
        self.space = space
        self.sharing = sharing
        c = space.channels

        def candidates() -> nn.ModuleList:
            cells = nn.ModuleList(Cell(name, c) for name in space.cells)
            if sharing == "entangled":
                entangle(cells)
            return cells

        self.stem = _stem(space)
        self.encoder = nn.ModuleList(candidates() for _ in range(space.layers))
        self.decoder = nn.ModuleList(candidates() for _ in range(space.layers))
        self.merges = nn.ModuleList(_merges(space))
        self.head = _head(space)
        self._view_cache = view_cache
        self._views = _ViewCache()

    def view(self, arch: Iterable[int]) -> ChildNet:
        """A ``ChildNet`` that shares this supernet's modules for ``arch`` (no copy)."""
        arch = self.space.check(arch)
        view = self._views.get(arch)
        if view is None:
            n = self.space.layers
            view = ChildNet(
                self.space,
                arch,
                stem=self.stem,
                encoder=[self.encoder[i][arch[i]] for i in range(n)],
                decoder=[self.decoder[j][arch[n - 1 - j]] for j in range(n)],
                merges=list(self.merges),
                head=self.head,
            )
            self._views[arch] = view
            if len(self._views) > self._view_cache:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(arch)
        # Only the flag of the view itself: its cells are this supernet's own modules and
        # already in its mode, and its new containers (Sequential, UpStage) ignore the flag.
        # A recursive ``train()`` here was 70% of the cost of building a view.
        view.training = self.training
        return view

    def forward(self, x: Tensor, arch: Iterable[int]) -> Tensor:
        return self.view(arch)(x)


def build_child(
    space: SearchSpace, arch: Iterable[int], *, supernet: SuperNet | None = None
) -> ChildNet:
    """Build a stand-alone network holding only the cells ``arch`` chooses.

    Args:
        space: the search space.
        arch: the architecture.
        supernet: if given, the child starts from a copy of the supernet's weights (and BN
            statistics) for ``arch``, so it computes exactly what the supernet computes, with
            weights of its own (an entangled 3x3 kernel becomes a 3x3 parameter). Otherwise the
            child is freshly initialised, for training from scratch.
    """
    arch = space.check(arch)
    if supernet is not None:
        if supernet.space != space:
            raise ValueError("the supernet was built for a different search space")
        child = standalone_copy(supernet.view(arch))
        child.train(supernet.training)
        return child
    n, c = space.layers, space.channels
    return ChildNet(
        space,
        arch,
        stem=_stem(space),
        encoder=[Cell(space.cells[arch[i]], c) for i in range(n)],
        decoder=[Cell(space.cells[arch[n - 1 - j]], c) for j in range(n)],
        merges=_merges(space),
        head=_head(space),
    )


def standalone_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (a child or a supernet's view) that owns plain weights: only
    its chosen cells, and an entangled kernel as a parameter of its own size."""
    return materialize(copy.deepcopy(model))
