"""Quality lines of a reproduction: does ENAS beat random search, does the supernet rank well.

Two questions a reader of Table 1 asks, answered from the retrained architectures only:

- **ENAS vs random.** The test mIoU of the search's best ENAS architecture (chosen by the
  search, not by its test score) against the best test mIoU among the retrained random
  baselines (the best of them by test score, which favours random search, never ENAS).
- **Shared-weight ranking.** Kendall's tau-b between each retrained ENAS architecture's
  shared-weight validation score in the search and its retrained test mIoU: how well the
  supernet ranks architectures.

A value that is undefined (no random baselines, fewer than two pairs, constant scores, searches
on different data sets pooled) is None, never a made-up number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

# What the quality lines read of the report's rows (``reports.model``'s ``RetrainedArch`` and
# ``SearchSummary`` have it), as protocols: the model imports this module, not the reverse.


class _Scores(Protocol):
    @property
    def miou(self) -> float: ...


class RetrainedArch(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def shared_score(self) -> float | None: ...
    @property
    def test(self) -> _Scores: ...
    @property
    def arch_string(self) -> str: ...


class _Best(Protocol):
    @property
    def test(self) -> _Scores: ...


class SearchSummary(Protocol):
    @property
    def search_id(self) -> str: ...
    @property
    def reward(self) -> Literal["accuracy", "miou", "miou_plus"]: ...
    @property
    def dataset(self) -> str: ...
    @property
    def best(self) -> _Best: ...
    @property
    def retrained(self) -> Sequence[RetrainedArch]: ...


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b of paired values (``scipy.stats.kendalltau``).

    Returns:
        tau in [-1, 1], or None with fewer than 2 pairs or where tau is undefined (all ``xs`` or
        all ``ys`` equal, or a NaN among the values).

    Raises:
        ValueError: ``xs`` and ``ys`` have different lengths.
    """
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau needs paired values, got {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        return None
    from scipy.stats import kendalltau  # scipy is slow to import; only the report needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant input: NaN, said here
        tau = float(kendalltau(list(xs), list(ys)).statistic)
    # Round off the float noise of scipy's arithmetic (0.9999999999999999 for a perfect order).
    return None if math.isnan(tau) else round(tau, 12)


class QualityLine(BaseModel):
    """The quality numbers of one search, or of all searches pooled.

    Args:
        search_id: the search, or None for the pooled line.
        reward: its reward function, or None for the pooled line.
        enas_best_miou: test mIoU of the best ENAS architecture (pooled: the highest of the
            searches' best); None when pooling searches on different data sets.
        random_best_miou: best test mIoU among the random baselines; None without any.
        random_count: number of random baselines.
        margin: ``enas_best_miou - random_best_miou``; None where either is None.
        kendall_tau: tau-b between shared-weight score and test mIoU over the retrained ENAS
            architectures with a shared score; None where undefined (see :func:`kendall_tau`).
        pairs: number of those architectures.
        datasets: the data sets of the searches the line covers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    search_id: str | None
    reward: Literal["accuracy", "miou", "miou_plus"] | None
    enas_best_miou: float | None
    random_best_miou: float | None
    random_count: int
    margin: float | None
    kendall_tau: float | None
    pairs: int
    datasets: list[str]

    @property
    def pooled(self) -> bool:
        """Whether this line pools several searches."""
        return self.search_id is None


def _ranking_pairs(retrained: Sequence[RetrainedArch]) -> tuple[list[float], list[float]]:
    scored = [r for r in retrained if r.source == "enas" and r.shared_score is not None]
    return [r.shared_score for r in scored], [r.test.miou for r in scored]  # type: ignore[misc]


def _line(
    search_id: str | None,
    reward: Literal["accuracy", "miou", "miou_plus"] | None,
    enas_best: float | None,
    retrained: Sequence[RetrainedArch],
    datasets: list[str],
    comparable: bool,
) -> QualityLine:
    randoms = [r.test.miou for r in retrained if r.source == "random"]
    random_best = max(randoms) if randoms else None
    if not comparable:
        enas_best = random_best = None
    xs, ys = _ranking_pairs(retrained)
    return QualityLine(
        search_id=search_id,
        reward=reward,
        enas_best_miou=enas_best,
        random_best_miou=random_best,
        random_count=len(randoms),
        margin=None if enas_best is None or random_best is None else enas_best - random_best,
        kendall_tau=kendall_tau(xs, ys) if comparable else None,
        pairs=len(xs),
        datasets=datasets,
    )


def quality_line(search: SearchSummary) -> QualityLine:
    """The quality line of one search."""
    return _line(
        search.search_id,
        search.reward,
        search.best.test.miou,
        search.retrained,
        [search.dataset],
        comparable=True,
    )


def pooled_quality_line(searches: Sequence[SearchSummary]) -> QualityLine:
    """The quality line of all searches pooled: their retrained architectures taken together.

    mIoUs of different data sets do not compare, so when the searches span more than one data
    set every number of the line is None (the counts stay).
    """
    datasets = sorted({s.dataset for s in searches})
    comparable = len(datasets) == 1
    best = max((s.best.test.miou for s in searches), default=None)
    retrained = [r for s in searches for r in s.retrained if r.source == "enas"]
    # A baseline shared by several searches (``segnas reproduce`` draws one set for all) is
    # one architecture trained once: count it once.
    randoms = {
        (s.dataset, r.arch_string): r for s in searches for r in s.retrained if r.source == "random"
    }
    return _line(None, None, best, [*retrained, *randoms.values()], datasets, comparable)
