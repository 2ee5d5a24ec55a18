"""Write a reproduction report: ``report.md``, ``report.json`` and the figures, into one folder.

The markdown has the title, the command that produced it, Table 1 (test-split metrics of each
search's retrained best architecture, one column per reward function), the best architectures,
the quality lines in words, and the figures embedded by relative links, so the folder can be
moved or served as it is. Every file is written next to its final name and renamed into place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reports.figures import (
    architecture_png,
    atomic_output,
    cell_frequency_png,
    reward_curve_png,
    search_labels,
    size_front_png,
)
from reports.model import Report, SearchSummary
from reports.stats import QualityLine

MARKDOWN = "report.md"
JSON = "report.json"
REWARD_CURVES = "reward_curves.png"
SIZE_FRONT = "size_front.png"


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`write_report` wrote; the per-search figures are keyed by search id."""

    markdown: Path
    json: Path
    reward_curves: Path
    size_front: Path
    cell_frequency: dict[str, Path]
    architectures: dict[str, Path]

    @property
    def all(self) -> list[Path]:
        """Every file, the markdown first."""
        return [
            self.markdown,
            self.json,
            self.reward_curves,
            self.size_front,
            *self.cell_frequency.values(),
            *self.architectures.values(),
        ]


def file_stems(searches: Sequence[SearchSummary]) -> list[str]:
    """The name part of each search's figures: its reward, plus its id where two share one."""
    rewards = [s.reward for s in searches]
    return [
        s.reward
        if rewards.count(s.reward) == 1
        else f"{s.reward}_{re.sub(r'[^A-Za-z0-9._-]', '_', s.search_id)}"
        for s in searches
    ]


def write_report(report: Report, out_dir: Path) -> ReportFiles:
    """Write ``report.md``, ``report.json`` and the PNGs of ``report`` into ``out_dir``.

    ``out_dir`` is created if missing; files of an earlier report there are replaced. The figures
    are written first and the markdown last, so a ``report.md`` that exists has its figures.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = file_stems(report.searches)
    curves = reward_curve_png(report.searches, out_dir / REWARD_CURVES)
    front = size_front_png(report.searches, out_dir / SIZE_FRONT)
    frequency: dict[str, Path] = {}
    architectures: dict[str, Path] = {}
    for s, stem, label in zip(report.searches, stems, search_labels(report.searches), strict=True):
        frequency[s.search_id] = cell_frequency_png(s, out_dir / f"cell_frequency_{stem}.png")
        title = (
            f"Best architecture, reward {label}: {s.best.arch_string}\n"
            f"{s.best.params:,} parameters, test mIoU {s.best.test.miou:.3f}"
        )
        architectures[s.search_id] = architecture_png(
            s.best.arch, s.cells, s.reductions, out_dir / f"best_arch_{stem}.png", title=title
        )
    files = ReportFiles(
        markdown=out_dir / MARKDOWN,
        json=out_dir / JSON,
        reward_curves=curves,
        size_front=front,
        cell_frequency=frequency,
        architectures=architectures,
    )
    _write_text(files.json, report.model_dump_json(indent=2) + "\n")
    _write_text(files.markdown, render_markdown(report, files))
    return files


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as f:
        f.write(text.encode("utf-8"))


# --- markdown -------------------------------------------------------------------------------

TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("mean precision", "mean_precision"),
    ("mean recall", "mean_recall"),
    ("mean IoU", "miou"),
)
"""Table 1's metric rows: heading and ``MetricsRow`` field; the parameter row follows."""


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _code(text: str) -> str:
    """Inline code that survives backticks in ``text``."""
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(text: str) -> str:
    run = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, run + 1)
    return f"{fence}sh\n{text}\n{fence}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def table_one(report: Report) -> str:
    """Table 1 as a markdown table: metric rows, one column per search."""
    labels = search_labels(report.searches)
    lines = [
        "| test split | " + " | ".join(_cell(label) for label in labels) + " |",
        "| --- |" + " ---: |" * len(labels),
    ]
    for heading, field in TABLE_ROWS:
        values = [f"{getattr(s.best.test, field):.3f}" for s in report.searches]
        lines.append(f"| {heading} | " + " | ".join(values) + " |")
    params = [f"{s.best.params / 1e6:.3f}" for s in report.searches]
    lines.append("| parameters (millions) | " + " | ".join(params) + " |")
    if any(s.best.flops is not None for s in report.searches):
        flops = ["n/a" if s.best.flops is None else f"{s.best.flops / 1e6:.1f}"
                 for s in report.searches]  # fmt: skip
        lines.append("| MFLOPs per image | " + " | ".join(flops) + " |")
    return "\n".join(lines)


def _searches_table(report: Report) -> str:
    lines = [
        "| reward | search | data set | layers | controller steps | retrained (ENAS + random)"
        " | best test mIoU+ | search time |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, label in zip(report.searches, search_labels(report.searches), strict=True):
        enas = sum(r.source == "enas" for r in s.retrained)
        rand = sum(r.source == "random" for r in s.retrained)
        pareto = sum(r.source == "pareto" for r in s.retrained)
        front = f" + {pareto} on the front" if pareto else ""
        lines.append(
            f"| {_cell(label)} | {_cell(s.search_id)} | {_cell(s.dataset)} | {s.layers}"
            f" | {len(s.reward_curve)} | {enas} + {rand}{front}"
            f" | {s.best.test.miou_plus:.3f}"
            f" | {_duration(s.seconds)} |"
        )
    return "\n".join(lines)


def quality_sentence(line: QualityLine) -> str:
    """The quality line in words."""
    if line.enas_best_miou is None:
        versus = "mIoU comparison not defined (searches on different data sets)"
    elif line.random_best_miou is None:
        versus = f"best ENAS architecture mIoU {line.enas_best_miou:.3f}; no random baselines"
    else:
        versus = (
            f"best ENAS architecture mIoU {line.enas_best_miou:.3f} vs best of "
            f"{line.random_count} random {line.random_best_miou:.3f} ({line.margin:+.3f})"
        )
    plural = "architecture" if line.pairs == 1 else "architectures"
    if line.kendall_tau is not None:
        tau = f"{line.kendall_tau:.2f} over {line.pairs} {plural}"
    elif line.pairs < 2:
        tau = f"not defined (fewer than 2 architectures; {line.pairs} with a shared-weight score)"
    elif len(line.datasets) > 1:
        tau = "not defined (searches on different data sets)"
    else:
        tau = f"not defined (all scores or all mIoUs equal over {line.pairs} {plural})"
    return f"{versus}. Kendall tau between shared-weight score and retrained mIoU: {tau}."


def _cell_key(cells: Sequence[str]) -> str:
    return ", ".join(f"{i} {name}" for i, name in enumerate(cells))


def render_markdown(report: Report, files: ReportFiles) -> str:
    """The text of ``report.md``; figures are linked relative to ``files.markdown``."""
    searches = report.searches
    labels = search_labels(searches)
    base = files.markdown.parent

    def link(path: Path) -> str:
        return path.relative_to(base).as_posix()

    out = [
        f"# {_one_line(report.title)}",
        "",
        f"Created {report.created_at.isoformat(timespec='seconds')} by:",
        "",
        _fenced(report.command),
        "",
        "## Table 1",
        "",
        "Test-split metrics of the best architecture of each search, retrained from scratch."
        " Each column is a search, headed by the reward function its controller was trained"
        " with. Metrics are fractions of 1 (0.xxx, not percentages); parameters are in"
        " millions.",
        "",
        table_one(report),
        "",
    ]
    keys = {tuple(s.cells) for s in searches}
    if len(keys) == 1:
        key = _cell_key(searches[0].cells)
        out += [f"Best architectures, one cell index per encoder layer ({key}):", ""]
    else:
        out += ["Best architectures, one cell index per encoder layer:", ""]
    for s, label in zip(searches, labels, strict=True):
        key = "" if len(keys) == 1 else f" ({_cell_key(s.cells)})"
        out.append(f"- {_one_line(label)}: {_code(s.best.arch_string)}{key}")
    out += ["", "## Searches", "", _searches_table(report), "", "## Quality", ""]
    out.append(
        "The best ENAS architecture is the one each search chose (not picked by its test"
        " score); the random baselines are architectures drawn at random from the search space"
        " and retrained, and the best of them is taken by test mIoU (which favours random"
        " search). Kendall's"
        " tau-b is taken over the retrained ENAS architectures that have a shared-weight"
        " validation score from the search."
    )
    out.append("")
    for s, label, line in zip(searches, labels, report.quality, strict=True):
        out.append(f"- **{_one_line(label)}** ({_code(s.search_id)}): {quality_sentence(line)}")
    if len(searches) > 1:
        out.append(f"- **All searches pooled**: {quality_sentence(report.pooled_quality)}")
        out += [
            "",
            "Pooled shared-weight scores come from different supernets and reward functions, so"
            " the pooled tau mixes their scales; the per-search values are the cleaner measure.",
        ]
    out += [
        "",
        "## Figures",
        "",
        "Mean reward of each controller step (solid) and the best reward so far (dashed); each"
        " search on the scale of its own reward function.",
        "",
        f"![Controller reward per step]({link(files.reward_curves)})",
        "",
        "Test mIoU against parameters of every retrained architecture (circles: the search's"
        " picks, squares: random baselines, triangles: spread along the search's size front,"
        " `segnas retrain --pareto K`), and each search's Pareto front of them.",
        "",
        f"![Retrained quality against size]({link(files.size_front)})",
    ]
    for s, label in zip(searches, labels, strict=True):
        arch = s.best.arch_string
        out += [
            "",
            f"### {_one_line(label)}",
            "",
            f"Share of the final policy's samples choosing each cell at each layer; the cells of"
            f" the best architecture {_code(arch)} are outlined.",
            "",
            f"![Cell choice of the final policy, reward {_one_line(label)}]"
            f"({link(files.cell_frequency[s.search_id])})",
            "",
            f"![Best architecture, reward {_one_line(label)}]"
            f"({link(files.architectures[s.search_id])})",
        ]
    return "\n".join(out) + "\n"
