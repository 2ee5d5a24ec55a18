"""The report's figures: reward curves, cell-choice heat maps and architecture drawings.

Every figure is drawn on its own ``matplotlib.figure.Figure`` with an Agg canvas: pyplot is
never imported and no backend is selected, so an importer's matplotlib state (an interactive
backend, open pyplot figures) is left alone, and drawing is safe from any thread. The rcParams
are read, never written. Output is deterministic: same data and matplotlib version, same bytes
(no timestamp or software version in the PNG metadata).

Each function takes the output path, writes the PNG next to it and renames it into place (a
reader never sees half a file), and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle

from reports.model import REWARD_LABELS, SearchSummary, format_arch
from storage.fronts import staircase

DPI = 120

CELL_COLOURS: dict[str, str] = {
    "conv3x3": "#9ecae1",
    "conv5x5": "#4a98c9",
    "sep3x3": "#a6dba0",
    "sep5x5": "#4daf62",
    "avgpool3x3": "#fdc086",
    "maxpool3x3": "#f08a4b",
    "dilconv3x3_r2": "#bcbddc",
    "dilconv3x3_r4": "#9e9ac8",
    "dilsep3x3_r2": "#dadaeb",
    "aspp": "#fbb4c4",
}
"""Fill colour of each registered cell: blues convolve, greens are separable, oranges pool,
purples are dilated, pink is ASPP."""

_EXTRA_COLOURS = ("#d9d9d9", "#ffed6f", "#ccebc5", "#b3de69")

REWARD_COLOURS: dict[str, str] = {"accuracy": "#1f77b4", "miou": "#d62728", "miou_plus": "#2ca02c"}
_MORE_LINE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

_INK = "#333333"
_SKIP = "#7b3294"


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for writing; on success rename it to ``path``.

    The file is flushed and fsync-ed before the rename; on an error it is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    with atomic_output(path) as f:
        fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return path


def cell_colour(name: str, index: int) -> str:
    """Fill colour of a cell: registered cells have fixed colours, others take a spare one."""
    return CELL_COLOURS.get(name, _EXTRA_COLOURS[index % len(_EXTRA_COLOURS)])


def _text_colour(fill: str) -> str:
    r, g, b = (int(fill[k : k + 2], 16) / 255 for k in (1, 3, 5))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _line_colours(searches: Sequence[SearchSummary]) -> list[str]:
    colours, used = [], set()
    spare = iter(_MORE_LINE_COLOURS * (len(searches) // len(_MORE_LINE_COLOURS) + 1))
    for s in searches:
        colour = REWARD_COLOURS[s.reward] if s.reward not in used else next(spare)
        used.add(s.reward)
        colours.append(colour)
    return colours


def search_labels(searches: Sequence[SearchSummary]) -> list[str]:
    """One label per search: its reward function, plus its id where two share a reward."""
    rewards = [s.reward for s in searches]
    return [
        REWARD_LABELS[s.reward] + (f" ({s.search_id})" if rewards.count(s.reward) > 1 else "")
        for s in searches
    ]


def _line_chart_axes(ax: Axes) -> None:
    """The light grid behind the data and no top or right frame of the line charts."""
    ax.grid(True, color="#e3e3e3", lw=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def reward_curve_png(searches: Sequence[SearchSummary], path: Path) -> Path:
    """Mean reward of each controller step (solid) and the best so far (dashed), per search.

    The x axis numbers the controller steps of a search in ``(epoch, step)`` order from 1: the
    global controller step. Each search's rewards are on the scale of its own reward function.
    """
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    handles = []
    for s, colour, label in zip(
        searches, _line_colours(searches), search_labels(searches), strict=True
    ):
        x = np.arange(1, len(s.reward_curve) + 1)
        marker = "o" if len(x) == 1 else None
        ax.plot(x, [p.mean_reward for p in s.reward_curve], color=colour, lw=1.7, marker=marker)
        ax.plot(x, [p.best_so_far for p in s.reward_curve], color=colour, lw=1.2, ls="--")
        steps = f"{len(x)} step" + ("" if len(x) == 1 else "s")
        handles.append(Line2D([], [], color=colour, lw=2.2, label=f"{label}: {steps}"))
    if not any(s.reward_curve for s in searches):
        ax.text(
            0.5,
            0.5,
            "no controller steps recorded",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#777777",
        )
    handles += [
        Line2D([], [], color="#666666", lw=1.7, label="mean reward of the step"),
        Line2D([], [], color="#666666", lw=1.2, ls="--", label="best reward so far"),
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=9, framealpha=0.92)
    ax.set_xlabel("controller step (all epochs, in order)")
    ax.set_ylabel("reward (each search's own reward function)")
    ax.set_title("Controller reward during the search")
    _line_chart_axes(ax)
    return _save(fig, path)


def size_front_png(searches: Sequence[SearchSummary], path: Path) -> Path:
    """Retrained test mIoU against parameters of every retrained architecture, marked by where
    it came from, and per search the Pareto front of them (a staircase: the best test mIoU at
    each parameter budget)."""
    fig = _figure(8.0, 4.8)
    ax = fig.add_subplot()
    markers = {"enas": "o", "random": "s", "pareto": "^"}
    for s, colour, label in zip(
        searches, _line_colours(searches), search_labels(searches), strict=True
    ):
        points = [(r.params / 1000, r.test.miou, r.source) for r in s.retrained]
        for source, marker in markers.items():
            mine = [(x, y) for x, y, src in points if src == source]
            if mine:
                ax.scatter(*zip(*mine, strict=True), color=colour, marker=marker, s=36, zorder=3)
        front = [points[i] for i in staircase([(x, y) for x, y, _ in points])]
        xs = [x for x, _, _ in front]
        ys = [y for _, y, _ in front]
        ax.step(xs, ys, where="post", color=colour, lw=1.4, label=f"{label}: front")
    handles = [Line2D([], [], color="#666666", lw=1.4, label="Pareto front of the search")]
    handles += [
        Line2D([], [], ls="none", marker=m, color="#666666", label=f"{src} architectures")
        for src, m in markers.items()
    ]
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=9)
    ax.set_xlabel("parameters (thousands)")
    ax.set_ylabel("test mIoU, retrained from scratch")
    ax.set_title("Retrained quality against size")
    _line_chart_axes(ax)
    return _save(fig, path)


def cell_frequency_png(search: SearchSummary, path: Path) -> Path:
    """Heat map of the final policy's cell choices: layers down, cells across, shares annotated.

    The best architecture's cell at each layer is outlined; layers followed by pooling are
    marked with a down arrow.
    """
    data = np.asarray(search.cell_frequency, dtype=float)
    layers, cells = data.shape
    fig = _figure(max(5.5, 0.95 * cells + 2.6), max(3.4, 0.42 * layers + 2.1))
    ax = fig.add_subplot()
    image = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(layers):
        for j in range(cells):
            v = data[i, j]
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=8.5,
                color="white" if v > 0.55 else "#222222",
            )
        best = search.best.arch[i]
        outline = Rectangle((best - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="#d62728", lw=2.0)
        ax.add_patch(outline).set_zorder(4)
    ax.set_xticks(range(cells), search.cells, rotation=30, ha="right", rotation_mode="anchor")
    reds = set(search.reductions)
    ax.set_yticks(range(layers), [f"{i} ↓" if i in reds else str(i) for i in range(layers)])
    ax.set_xticks(np.arange(cells + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(layers + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.0)
    ax.tick_params(which="minor", length=0)
    ax.set_ylabel("encoder layer")
    ax.set_title(
        f"Cell choice of the final policy, reward {search.reward_label}\n"
        f"search {search.search_id}, {search.dataset}",
        fontsize=11,
    )
    fig.colorbar(image, ax=ax, label="share of the policy's samples", shrink=0.9)
    fig.legend(
        handles=[
            Patch(fc="none", ec="#d62728", lw=2.0, label="cell of the best architecture"),
            Line2D(
                [],
                [],
                ls="none",
                marker="$↓$",
                ms=9,
                color=_INK,
                label="layer followed by 2\u00d72 pooling",
            ),
        ],
        loc="outside lower center",
        ncol=2,
        fontsize=9,
        frameon=False,
    )
    return _save(fig, path)


# Geometry of the architecture drawing, in data units (y grows downwards).
_BOX_W, _BOX_H = 2.3, 0.56
_GAP, _POOL_GAP = 0.34, 1.2
_X_ENC, _X_DEC = 2.35, 7.65
_X_MIN, _X_MAX = 0.0, 9.6
_UNIT_IN = 0.4  # inches per vertical unit


def _resolution(level: int) -> str:
    return "full resolution" if level == 0 else f"1/{2**level} resolution"


def architecture_png(
    arch: Sequence[int],
    cells: Sequence[str],
    reductions: Sequence[int],
    path: Path,
    title: str | None = None,
) -> Path:
    """Draw the encoder-decoder of ``arch``: encoder down on the left, mirrored decoder up on the
    right, pooling after each reduction layer, upsampling before its mirror, and one long skip per
    resolution from the encoder's last map to the decoder's first (``docs/network.md``).

    Args:
        arch: one cell index per encoder layer.
        cells: cell names in index order.
        reductions: encoder layers followed by 2x2 pooling.
        path: the PNG to write.
        title: the figure's title; default ``Architecture 0 5 5 ...``.

    Raises:
        ValueError: an index outside ``cells`` or a reduction outside the layers.
    """
    arch = [int(c) for c in arch]
    n = len(arch)
    if n == 0 or any(not 0 <= c < len(cells) for c in arch):
        raise ValueError(f"architecture {arch} needs cell indices in [0, {len(cells) - 1}]")
    reds = sorted(set(int(r) for r in reductions))
    if any(not 0 <= r < n for r in reds):
        raise ValueError(f"reductions {list(reductions)} must be layer indices in [0, {n - 1}]")

    # Vertical layout: the stem and head, then one row per encoder layer (decoder layer
    # n-1-i shares row i), a taller gap after each reduction, then the bottleneck bridge.
    stem_y = 0.75
    rows: list[float] = []
    y = stem_y + _BOX_H / 2 + _GAP
    for i in range(n):
        rows.append(y + _BOX_H / 2)
        y = rows[-1] + _BOX_H / 2 + (_POOL_GAP if i in reds else _GAP)
    bridge_y = y + 0.1
    bottom = bridge_y + 0.5
    level = [sum(r < i for r in reds) for i in range(n)]

    fig = _figure(7.6, _UNIT_IN * (bottom + 0.55) + 1.4)
    ax = fig.add_subplot()
    ax.set_xlim(_X_MIN, _X_MAX)
    ax.set_ylim(bottom, -0.55)
    ax.axis("off")

    def arrow(x0: float, y0: float, x1: float, y1: float, **style: object) -> None:
        props = {
            "arrowstyle": "-|>",
            "color": _INK,
            "lw": 1.1,
            "shrinkA": 0,
            "shrinkB": 0,
            "mutation_scale": 9,
        } | style
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=props)

    def box(x: float, y: float, text: str, tag: str, fill: str) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x - _BOX_W / 2, y - _BOX_H / 2),
                _BOX_W,
                _BOX_H,
                boxstyle="round,pad=0,rounding_size=0.12",
                fc=fill,
                ec=_INK,
                lw=0.9,
                zorder=3,
            )
        )
        ink = _text_colour(fill)
        ax.text(x + 0.15, y, text, ha="center", va="center", fontsize=9.5, color=ink, zorder=4)
        ax.text(
            x - _BOX_W / 2 + 0.12,
            y,
            tag,
            ha="left",
            va="center",
            fontsize=7.5,
            color=ink,
            alpha=0.75,
            zorder=4,
        )

    # Resolution bands behind the rows: level k spans from its first row to its last.
    band_edges = []
    for k in range(len(reds) + 1):
        members = [rows[i] for i in range(n) if level[i] == k]
        top = (stem_y if k == 0 else members[0] if members else bridge_y) - _BOX_H / 2 - 0.14
        end = members[-1] + _BOX_H / 2 + 0.14 if members else bridge_y + 0.3
        if k == len(reds):
            end = bridge_y + 0.3
        band_edges.append((top, end))
    for k, (top, end) in enumerate(band_edges):
        shade = ("#f3f5f8", "#e8edf4")[k % 2]
        ax.add_patch(
            FancyBboxPatch(
                (0.35, top),
                _X_MAX - 0.55,
                end - top,
                boxstyle="round,pad=0,rounding_size=0.15",
                fc=shade,
                ec="none",
                zorder=0,
            )
        )
        label = _resolution(k) if end - top > 1.7 else _resolution(k).split()[0]
        ax.text(
            0.6,
            (top + end) / 2,
            label,
            rotation=90,
            ha="center",
            va="center",
            fontsize=8,
            color="#666666",
        )

    # Stem and head.
    box(_X_ENC, stem_y, "stem conv3x3", "", "#e0e0e0")
    box(_X_DEC, stem_y, "head conv1x1", "", "#e0e0e0")
    ax.text(_X_ENC, 0.1, "input", ha="center", va="center", fontsize=9, color=_INK)
    ax.text(_X_DEC, 0.1, "class scores", ha="center", va="center", fontsize=9, color=_INK)
    arrow(_X_ENC, 0.22, _X_ENC, stem_y - _BOX_H / 2)
    arrow(_X_DEC, stem_y - _BOX_H / 2, _X_DEC, 0.22)
    arrow(_X_ENC, stem_y + _BOX_H / 2, _X_ENC, rows[0] - _BOX_H / 2)
    arrow(_X_DEC, rows[0] - _BOX_H / 2, _X_DEC, stem_y + _BOX_H / 2)

    for i, c in enumerate(arch):
        fill = cell_colour(cells[c], c)
        box(_X_ENC, rows[i], cells[c], f"e{i}", fill)
        box(_X_DEC, rows[i], cells[c], f"d{n - 1 - i}", fill)
        top_next = rows[i + 1] - _BOX_H / 2 if i + 1 < n else bridge_y
        bottom_i = rows[i] + _BOX_H / 2
        if i in reds:
            tap = bottom_i + 0.36
            mark = bottom_i + 0.84
            # Encoder: keep the map for the skip, then pool. Decoder: upsample, then merge.
            ax.plot([_X_ENC], [tap], "o", ms=4.5, color=_SKIP, zorder=5)
            ax.plot([_X_ENC], [mark], "v", ms=8, color=_INK, zorder=5)
            ax.plot([_X_DEC], [mark], "^", ms=8, color=_INK, zorder=5)
            ax.plot([_X_DEC], [tap], "o", ms=9, mfc="white", mec=_SKIP, mew=1.6, zorder=5)
            ax.text(
                _X_ENC + 0.22,
                mark,
                "max pool 2\u00d72",
                ha="left",
                va="center",
                fontsize=8,
                color=_INK,
            )
            ax.text(
                _X_DEC - 0.22,
                mark,
                "upsample \u00d72",
                ha="right",
                va="center",
                fontsize=8,
                color=_INK,
            )
            arrow(_X_ENC, tap, _X_DEC - 0.14, tap, color=_SKIP, lw=1.6, ls="--", mutation_scale=12)
            ax.text(
                (_X_ENC + _X_DEC) / 2,
                tap - 0.1,
                f"long skip, {_resolution(level[i])}",
                ha="center",
                va="bottom",
                fontsize=8,
                color=_SKIP,
            )
            ax.plot([_X_ENC, _X_ENC], [bottom_i, tap], color=_INK, lw=1.1, zorder=2)
            arrow(_X_ENC, tap, _X_ENC, top_next)
            arrow(_X_DEC, top_next, _X_DEC, tap + 0.13)
            arrow(_X_DEC, tap - 0.13, _X_DEC, bottom_i)
        elif i + 1 < n:
            arrow(_X_ENC, bottom_i, _X_ENC, top_next)
            arrow(_X_DEC, top_next, _X_DEC, bottom_i)

    # The bottleneck: the encoder's last map is the decoder's input.
    last = rows[-1] + _BOX_H / 2
    if n - 1 not in reds:
        ax.plot([_X_ENC, _X_ENC], [last, bridge_y], color=_INK, lw=1.1)
        arrow(_X_DEC, bridge_y, _X_DEC, last)
    ax.plot([_X_ENC, _X_DEC], [bridge_y, bridge_y], color=_INK, lw=1.1)
    ax.text(
        (_X_ENC + _X_DEC) / 2,
        bridge_y + 0.08,
        "bottleneck",
        ha="center",
        va="top",
        fontsize=8,
        color="#666666",
    )
    for x, text in ((_X_ENC, "encoder ↓"), (_X_DEC, "decoder ↑")):
        ax.text(
            x, -0.32, text, ha="center", va="center", fontsize=10, fontweight="bold", color=_INK
        )

    used = sorted(set(arch))
    handles: list[Patch | Line2D] = [
        Patch(fc=cell_colour(cells[c], c), ec=_INK, lw=0.8, label=f"{c} {cells[c]}") for c in used
    ]
    if reds:
        handles.append(Line2D([], [], color=_SKIP, lw=1.6, ls="--", label="long skip"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 4),
        fontsize=8.5,
        frameon=False,
    )
    fig.suptitle(title if title is not None else f"Architecture {format_arch(arch)}", fontsize=11)
    return _save(fig, path)


def evaluation_methods_png(summary: dict, path: Path) -> Path:
    """Each method's retrained test metric (the evaluation's ``metric``) per seed, with its
    mean and standard deviation over the seeds: one column per method."""
    metric, methods = summary["metric"], summary["methods"]
    names = list(methods)
    fig = _figure(1.2 + 1.1 * len(names), 3.4)
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        entry = methods[name]
        values = entry.get(f"per_seed_{metric}") or []
        ax.scatter([k] * len(values), values, color=_INK, s=14, zorder=3)
        mean, sd = entry[f"test_{metric}_mean"], entry[f"test_{metric}_sd"]
        if mean is not None:
            ax.errorbar(k, mean, yerr=sd or 0.0, fmt="_", color="#d62728", markersize=18,
                        capsize=6, zorder=4)  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"retrained test {metric}")
    ax.set_title(f"{summary['seeds']} seeds: each seed's pick (dots), mean ± sd (red)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def shared_vs_retrained_png(summary: dict, path: Path) -> Path:
    """The uniform architectures' shared-weight score against their retrained test metric, for
    each seed's ENAS supernet and uniform supernet, with Kendall's tau."""
    metric, pairs = summary["metric"], summary.get("shared_vs_retrained", {})
    fig = _figure(8.0, 3.4)
    for k, supernet in enumerate(("enas", "uniform")):
        ax = fig.add_subplot(1, 2, k + 1)
        for seed, by in sorted(pairs.items()):
            points = np.asarray(by.get(supernet, []), dtype=float).reshape(-1, 2)
            ax.scatter(points[:, 0], points[:, 1], s=12, label=f"seed {seed}", alpha=0.8)
        tau = summary["kendall_tau"].get(supernet)
        label = "undefined" if tau is None else f"{tau:.2f}"
        ax.set_title(f"{supernet} supernet: Kendall tau {label} (mean of seeds)", fontsize=9)
        ax.set_xlabel(f"shared-weight validation {metric}")
        ax.set_ylabel(f"retrained test {metric}")
        ax.grid(alpha=0.3)
        if pairs:
            ax.legend(fontsize=7)
    return _save(fig, path)
