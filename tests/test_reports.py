"""The reproduction report: models, quality lines, figures and the written files."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from PIL import Image
from pydantic import ValidationError

from reports import (
    MetricsRow,
    Report,
    RetrainedArch,
    RewardPoint,
    SearchSummary,
    kendall_tau,
    pooled_quality_line,
    quality_line,
    write_report,
)
from reports.figures import architecture_png, reward_curve_png
from reports.render import ReportFiles, file_stems, quality_sentence, table_one
from supernet.space import CELL_NAMES, default_reductions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metrics(miou: float) -> MetricsRow:
    return MetricsRow(
        accuracy=min(1.0, miou + 0.3),
        mean_precision=miou + 0.05,
        mean_recall=miou + 0.02,
        miou=miou,
        miou_plus=min(1.0, miou + 0.2),
    )


def arch_of(layers: int, seed: int) -> list[int]:
    return [(seed * 7 + 5 * i + i * i) % len(CELL_NAMES) for i in range(layers)]


def make_search(
    k: int,
    reward: str,
    layers: int,
    *,
    randoms: int = 3,
    dataset: str = "digits",
    shared: list[float] | None = None,
) -> SearchSummary:
    """A search whose retrained ENAS architectures' shared scores rank their test mIoU."""
    best = RetrainedArch(
        arch=arch_of(layers, k),
        params=12_000 + 1_000 * k,
        test=metrics(0.60 + 0.01 * k),
        shared_score=0.70,
        source="enas",
    )
    shared = [0.40, 0.50, 0.60] if shared is None else shared
    others = [
        RetrainedArch(
            arch=arch_of(layers, k + 10 + j),
            params=11_000,
            test=metrics(0.45 + 0.04 * j),
            shared_score=s,
            source="enas",
        )
        for j, s in enumerate(shared)
    ]
    baselines = [
        RetrainedArch(
            arch=arch_of(layers, k + 20 + j),
            params=10_500,
            test=metrics(0.40 + 0.05 * j),
            source="random",
        )
        for j in range(randoms)
    ]
    curve, best_so_far = [], 0.0
    for epoch in range(3):
        for step in range(4):
            mean = 0.3 + 0.03 * (4 * epoch + step) + 0.05 * k
            best_so_far = max(best_so_far, mean + 0.05)
            curve.append(
                RewardPoint(
                    epoch=epoch,
                    step=step,
                    samples=10,
                    mean_reward=mean,
                    max_reward=mean + 0.05,
                    best_so_far=best_so_far,
                )
            )
    frequency = []
    for i in range(layers):
        row = [0.04] * len(CELL_NAMES)
        row[best.arch[i]] = 1.0 - 0.04 * (len(CELL_NAMES) - 1)
        frequency.append(row)
    return SearchSummary(
        search_id=f"search-{k}",
        reward=reward,
        dataset=dataset,
        cells=list(CELL_NAMES),
        reductions=list(default_reductions(layers)),
        best=best,
        reward_curve=curve,
        cell_frequency=frequency,
        retrained=[best, *others, *baselines],
        seconds=95.0 + k,
    )


def make_report() -> Report:
    return Report(
        title="Table 1 on digits",
        created_at=datetime(2025, 3, 1, 12, 30, tzinfo=UTC),
        command="segnas report --search search-0 --search search-1 --search search-2",
        searches=[
            make_search(0, "accuracy", 4),
            make_search(1, "miou", 5),
            make_search(2, "miou_plus", 6, randoms=0),
        ],
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, ReportFiles]:
    report = make_report()
    return report, write_report(report, tmp_path_factory.mktemp("report"))


def table_rows(markdown: str) -> list[list[str]]:
    start = markdown.index("## Table 1")
    lines = markdown[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_table_one_has_the_five_rows_and_a_column_per_reward(written):
    _, files = written
    markdown = files.markdown.read_text()
    header, rule, *rows = table_rows(markdown)
    assert header == ["test split", "accuracy", "mIoU", "mIoU+"]
    assert set(rule) == {"---", "---:"}
    assert [r[0] for r in rows] == [
        "accuracy",
        "mean precision",
        "mean recall",
        "mean IoU",
        "parameters (millions)",
    ]
    by_row = {r[0]: r[1:] for r in rows}
    assert by_row["mean IoU"] == ["0.600", "0.610", "0.620"]
    assert by_row["accuracy"] == ["0.900", "0.910", "0.920"]
    assert by_row["mean precision"] == ["0.650", "0.660", "0.670"]
    assert by_row["mean recall"] == ["0.620", "0.630", "0.640"]
    assert by_row["parameters (millions)"] == ["0.012", "0.013", "0.014"]
    assert "fractions of 1" in markdown  # the caption says which format


def test_table_one_gives_the_flops_the_searches_recorded_and_n_a_where_none():
    report = make_report()
    with_flops = report.searches[1].best.model_copy(update={"flops": 21_495_808})
    searches = [
        report.searches[0],
        report.searches[1].model_copy(
            update={
                "best": with_flops,
                "retrained": [with_flops, *report.searches[1].retrained[1:]],
            }
        ),
        report.searches[2],
    ]
    table = table_one(report.model_copy(update={"searches": searches}))
    last = [c.strip() for c in table.splitlines()[-1].strip("|").split("|")]
    assert last == ["MFLOPs per image", "n/a", "21.5", "n/a"]
    assert "MFLOPs per image" not in table_one(report)  # no search recorded any: no row


def test_markdown_has_command_architectures_quality_and_figures(written):
    report, files = written
    markdown = files.markdown.read_text()
    assert markdown.startswith("# Table 1 on digits\n")
    assert f"```sh\n{report.command}\n```" in markdown
    for s in report.searches:
        assert f"`{' '.join(map(str, s.best.arch))}`" in markdown
    assert "best ENAS architecture mIoU 0.600 vs best of 3 random 0.500 (+0.100)" in markdown
    assert "best ENAS architecture mIoU 0.620; no random baselines" in markdown
    assert "Kendall tau between shared-weight score and retrained mIoU: 1.00 over 4" in markdown
    assert "**All searches pooled**" in markdown
    for path in files.all[2:]:
        assert f"]({path.name})" in markdown  # relative links
    assert {p.name for p in files.all} == {
        "report.md",
        "report.json",
        "reward_curves.png",
        "size_front.png",
        "cell_frequency_accuracy.png",
        "cell_frequency_miou.png",
        "cell_frequency_miou_plus.png",
        "best_arch_accuracy.png",
        "best_arch_miou.png",
        "best_arch_miou_plus.png",
    }
    # Written next to the final name and renamed: nothing else is left in the folder.
    assert sorted(p.name for p in files.markdown.parent.iterdir()) == sorted(
        p.name for p in files.all
    )


def test_architectures_from_the_size_front_are_counted_and_drawn_apart(tmp_path):
    report = make_report()
    search = report.searches[0]
    on_front = RetrainedArch(
        arch=arch_of(4, 40), params=9_000, test=metrics(0.55), shared_score=0.6, source="pareto"
    )
    search = search.model_copy(update={"retrained": [*search.retrained, on_front]})
    report = report.model_copy(update={"searches": [search, *report.searches[1:]]})
    files = write_report(report, tmp_path)
    markdown = files.markdown.read_text()
    assert "| 4 + 3 + 1 on the front |" in markdown  # ENAS + random + front
    assert "| 4 + 0 |" in markdown  # a search without: as before
    assert f"]({files.size_front.name})" in markdown
    with Image.open(files.size_front) as image:
        image.verify()
    # the quality lines still compare the picks with the random baselines only
    assert report.quality[0].random_count == 3


def test_report_json_round_trips_with_the_quality_lines(written):
    report, files = written
    text = files.json.read_text()
    assert Report.model_validate_json(text) == report
    import json

    data = json.loads(text)
    assert [q["search_id"] for q in data["quality"]] == ["search-0", "search-1", "search-2"]
    assert data["pooled_quality"]["random_count"] == 6
    assert data["quality"][2]["random_best_miou"] is None


def test_pngs_are_valid_images(written):
    _, files = written
    for path in files.all[2:]:
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, path
        assert len(data) > 10_000, path
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
        assert width >= 500 and height >= 300, (path, image.size)
    # More layers draw a taller architecture.
    heights = [Image.open(files.architectures[f"search-{k}"]).size[1] for k in range(3)]
    assert heights == sorted(heights) and heights[0] < heights[2]


def test_figures_are_deterministic_and_replace_in_place(tmp_path):
    searches = make_report().searches
    first = reward_curve_png(searches, tmp_path / "a.png").read_bytes()
    path = reward_curve_png(searches, tmp_path / "b.png")
    assert path == tmp_path / "b.png"
    assert path.read_bytes() == first
    reward_curve_png(searches[:1], path)  # overwrites
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_architecture_png_edge_cases(tmp_path):
    cells = list(CELL_NAMES)
    # No reductions; a reduction after the last layer; one layer.
    for arch, reds in (([0, 1, 2], []), ([3, 4, 5, 0], [1, 3]), ([5], [])):
        path = architecture_png(arch, cells, reds, tmp_path / "a.png", title="t")
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="cell indices"):
        architecture_png([6], cells, [], tmp_path / "b.png")
    with pytest.raises(ValueError, match="reductions"):
        architecture_png([0, 1], cells, [2], tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_figures_leave_pyplot_alone():
    code = (
        "import sys, reports.figures, reports.render\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "import reports.model\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    code = "import sys, reports\nassert 'matplotlib' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([], []) is None
    assert kendall_tau([0.5], [0.7]) is None
    assert kendall_tau([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) is None
    assert kendall_tau([0.1, 0.2, 0.3], [0.4, 0.4, 0.4]) is None
    assert kendall_tau([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3]) is None
    with pytest.raises(ValueError, match="paired"):
        kendall_tau([1, 2], [1])


def test_quality_line_with_random_baselines():
    line = quality_line(make_search(0, "miou", 4, randoms=5))
    assert line.search_id == "search-0" and line.reward == "miou"
    assert line.enas_best_miou == pytest.approx(0.60)
    assert line.random_count == 5
    assert line.random_best_miou == pytest.approx(0.60)  # 0.40 + 0.05 * 4
    assert line.margin == pytest.approx(0.0)
    assert line.kendall_tau == 1.0
    assert line.pairs == 4  # the best and the three other ENAS architectures


def test_quality_line_without_random_baselines_or_pairs():
    line = quality_line(make_search(0, "accuracy", 4, randoms=0, shared=[]))
    assert line.random_count == 0
    assert line.random_best_miou is None and line.margin is None
    assert line.pairs == 1 and line.kendall_tau is None
    text = quality_sentence(line)
    assert "no random baselines" in text
    assert "not defined (fewer than 2 architectures" in text
    constant = quality_line(make_search(0, "accuracy", 4, shared=[0.7, 0.7]))
    assert constant.pairs == 3 and constant.kendall_tau is None
    assert "not defined (all scores or all mIoUs equal" in quality_sentence(constant)


def test_pooled_quality_line():
    searches = make_report().searches
    pooled = pooled_quality_line(searches)
    assert pooled.search_id is None and pooled.pooled
    assert pooled.enas_best_miou == pytest.approx(0.62)
    assert pooled.random_best_miou == pytest.approx(0.50)
    assert pooled.margin == pytest.approx(0.12)
    assert pooled.random_count == 6
    assert pooled.pairs == 12
    assert pooled.kendall_tau is not None and -1 <= pooled.kendall_tau <= 1
    mixed = pooled_quality_line([searches[0], make_search(5, "miou", 4, dataset="voc")])
    assert mixed.datasets == ["digits", "voc"]
    assert mixed.enas_best_miou is None and mixed.margin is None and mixed.kendall_tau is None
    assert mixed.random_count == 6 and mixed.pairs == 8
    assert "different data sets" in quality_sentence(mixed)


def test_models_reject_inconsistent_data():
    good = make_search(0, "miou", 4)
    data = good.model_dump()
    with pytest.raises(ValidationError, match="sums to"):
        SearchSummary(**{**data, "cell_frequency": [[0.5] * 6] * 4})
    with pytest.raises(ValidationError, match="rows"):
        SearchSummary(**{**data, "cell_frequency": data["cell_frequency"][:3]})
    with pytest.raises(ValidationError, match="listed in retrained"):
        SearchSummary(**{**data, "retrained": data["retrained"][1:]})
    with pytest.raises(ValidationError, match="layers"):
        SearchSummary(**{**data, "retrained": [*data["retrained"], {**data["best"], "arch": [0]}]})
    with pytest.raises(ValidationError, match="cell index"):
        SearchSummary(**{**data, "cells": list(CELL_NAMES[:2])})
    with pytest.raises(ValidationError, match="reductions"):
        SearchSummary(**{**data, "reductions": [3, 1]})
    with pytest.raises(ValidationError, match="two points"):
        SearchSummary(**{**data, "reward_curve": data["reward_curve"][:1] * 2})
    with pytest.raises(ValidationError, match="extra"):
        SearchSummary(**{**data, "colour": "red"})
    with pytest.raises(ValidationError):
        MetricsRow(accuracy=1.5, mean_precision=0, mean_recall=0, miou=0, miou_plus=0)
    with pytest.raises(ValidationError, match="timezone"):
        Report(title="t", created_at=datetime(2025, 1, 1), command="c", searches=[good])
    with pytest.raises(ValidationError, match="distinct"):
        Report(title="t", created_at=datetime.now(UTC), command="c", searches=[good, good])
    with pytest.raises(ValidationError, match="frozen"):
        good.dataset = "voc"  # type: ignore[misc]
    # The curve is kept in (epoch, step) order whatever order it came in.
    shuffled = SearchSummary(**{**data, "reward_curve": data["reward_curve"][::-1]})
    assert shuffled.reward_curve == good.reward_curve


def test_searches_sharing_a_reward_get_distinct_files():
    searches = [make_search(0, "miou", 4), make_search(1, "miou", 4), make_search(2, "accuracy", 4)]
    assert file_stems(searches) == ["miou_search-0", "miou_search-1", "accuracy"]


def test_a_baseline_shared_by_the_searches_counts_once_when_pooled():
    searches = make_report().searches
    shared = next(r for r in searches[0].retrained if r.source == "random")
    with_shared = [s.model_copy(update={"retrained": [*s.retrained, shared]}) for s in searches[1:]]
    alone = pooled_quality_line(searches)
    pooled = pooled_quality_line([searches[0], *with_shared])
    assert pooled.random_count == alone.random_count
