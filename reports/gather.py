"""Gathers a ``Report`` from the database: searches, their samples and their retrains.

Imports no torch: a report is made from rows alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from errors import ConfigError
from reports.model import MetricsRow, Report, RetrainedArch, RewardPoint, SearchSummary
from searchspec.spec import SearchSpec
from storage.retrains import RetrainStore, StoredRetrainRecord
from storage.searches import SampleRecord, SearchStore
from supernet.space import default_reductions


def build_report(
    store: SearchStore, search_ids: Sequence[str], *, command: str, title: str | None = None
) -> Report:
    """The report of ``search_ids``, one Table 1 column each, in that order.

    Raises:
        SearchNotFoundError: an unknown id.
        ConfigError: a search that has not succeeded or has no retrained best architecture.
    """
    searches = [summarise_search(store, search_id) for search_id in search_ids]
    datasets = sorted({s.dataset for s in searches})
    return Report(
        title=title or f"ENAS for semantic segmentation: reward functions on {', '.join(datasets)}",
        created_at=datetime.now(UTC),
        command=command,
        searches=searches,
    )


def summarise_search(store: SearchStore, search_id: str) -> SearchSummary:
    """One search as a report column. Its best is the retrained rank-0 ENAS architecture."""
    record = store.get(search_id)
    if record.status != "succeeded":
        raise ConfigError(f"search {search_id} is {record.status}: report finished searches only")
    spec = SearchSpec.model_validate(record.spec)
    derive = store.samples(search_id, phase="derive")
    flops = {tuple(s.arch): s.flops for s in derive if s.flops is not None}
    retrained = [
        _retrained(r, flops.get(tuple(r.arch)))
        for r in RetrainStore(store).list(search_id)
        if r.miou is not None
    ]
    best = next((r for r in retrained if r.source == "enas"), None)
    if best is None:
        raise ConfigError(
            f"search {search_id} has no retrained architecture: run "
            f"segnas retrain --search {search_id}"
        )
    seconds = None
    if record.started_at is not None and record.finished_at is not None:
        seconds = max(0.0, (record.finished_at - record.started_at).total_seconds())
    return SearchSummary(
        search_id=search_id,
        reward=spec.reward,
        dataset=spec.dataset.kind,
        cells=list(spec.space.cells),
        reductions=list(spec.space.reductions or default_reductions(spec.space.layers)),
        best=best,
        reward_curve=reward_curve(store, search_id),
        cell_frequency=cell_frequency(derive, search_id, spec),
        retrained=retrained,
        seconds=seconds,
    )


def reward_curve(store: SearchStore, search_id: str) -> list[RewardPoint]:
    """Mean and max reward per controller step, with the best so far."""
    return [RewardPoint(**p.model_dump()) for p in store.reward_curve(search_id)]


def cell_frequency(
    derive: Sequence[SampleRecord], search_id: str, spec: SearchSpec
) -> list[list[float]]:
    """Per layer, the share of the final policy's samples choosing each cell: the derive
    phase's sampled architectures (``derive``, its rows; its greedy pick, the last row, is not a
    sample)."""
    sampled = [s for s in derive if s.index < spec.derive.samples] or derive
    layers, cells = spec.space.layers, len(spec.space.cells)
    if not sampled:
        raise ConfigError(f"search {search_id} has no derive-phase samples")
    counts = [[0] * cells for _ in range(layers)]
    for sample in sampled:
        for layer, cell in enumerate(sample.arch):
            counts[layer][cell] += 1
    return [[c / len(sampled) for c in row] for row in counts]


def _retrained(record: StoredRetrainRecord, flops: int | None) -> RetrainedArch:
    return RetrainedArch(
        arch=record.arch,
        params=record.params or 0,
        test=MetricsRow(
            accuracy=record.accuracy,
            mean_precision=record.mean_precision,
            mean_recall=record.mean_recall,
            miou=record.miou,
            miou_plus=record.miou_plus,
        ),
        shared_score=record.shared_score,
        source=record.source,
        flops=flops,
    )
