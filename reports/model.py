"""The input contract of the reproduction report: plain data, no SQL, Ray or HTTP.

Whoever gathers a report (from the database, a file, a test) builds a :class:`Report` of
:class:`SearchSummary` objects and hands it to :func:`reports.render.write_report`. Every model
is frozen and rejects unknown fields, and the validators check what the renderer relies on
(architectures that fit the cells and layers, frequency rows that sum to 1, the best
architecture among the retrained ones), so a gathering bug fails here with a message instead of
drawing a wrong figure.

Metrics are fractions in [0, 1], as ``supernet.metrics.Metrics`` computes them.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from reports.stats import QualityLine, pooled_quality_line, quality_line

RewardName = Literal["accuracy", "miou", "miou_plus"]
"""The paper's three reward functions, as ``supernet.metrics.get_reward`` names them."""

REWARD_LABELS: dict[str, str] = {"accuracy": "accuracy", "miou": "mIoU", "miou_plus": "mIoU+"}
"""How the report writes each reward function (column headings, legends, titles)."""

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

# Rows of ``cell_frequency`` are shares of samples; allow rounding by whoever gathered them.
_ROW_SUM_TOLERANCE = 1e-3


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricsRow(_Frozen):
    """Metrics of one network on the test split (fractions in [0, 1])."""

    accuracy: Fraction
    mean_precision: Fraction
    mean_recall: Fraction
    miou: Fraction
    miou_plus: Fraction


class RewardPoint(_Frozen):
    """One controller step of a search: the rewards of the architectures sampled in it.

    ``step`` may count within the epoch (as the ``samples`` table does) or over the whole
    search; the reward-curve figure orders points by ``(epoch, step)`` and numbers them, so its
    x axis is the global controller step either way.
    """

    epoch: int = Field(ge=0)
    step: int = Field(ge=0)
    samples: int = Field(ge=1)
    mean_reward: Finite
    max_reward: Finite
    best_so_far: Finite


class RetrainedArch(_Frozen):
    """An architecture trained from scratch after the search and scored on the test split.

    Args:
        arch: one cell index per encoder layer.
        params: trainable parameters of the retrained network.
        test: its test-split metrics.
        shared_score: its validation score with the supernet's shared weights during the search
            (the search's reward), or None if it was never scored there (a random baseline
            usually is not).
        source: ``enas`` for an architecture the controller found, ``random`` for a baseline
            drawn uniformly from the search space, ``pareto`` for one spread along the
            search's size front (``segnas retrain --pareto``).
        flops: FLOPs of one forward pass of it on one image at the data set's size, as the
            search recorded them for its samples of it; None when it has none (a random
            baseline, or a search stored before FLOPs were recorded).
    """

    arch: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    params: int = Field(ge=0)
    test: MetricsRow
    shared_score: Finite | None = None
    source: Literal["enas", "random", "pareto"]
    flops: int | None = Field(None, ge=0)

    @property
    def arch_string(self) -> str:
        """The architecture as the paper writes it: ``"0 5 5 2 ..."``."""
        return format_arch(self.arch)


class SearchSummary(_Frozen):
    """One ENAS search and what was retrained from it: one column of Table 1.

    Args:
        search_id: the search's id.
        reward: the reward function the controller was trained with.
        dataset: the data set's name (``digits``, ``voc``, ...).
        cells: candidate cell names in index order.
        reductions: encoder layers followed by 2x2 pooling (increasing, distinct).
        best: the retrained best ENAS architecture (also one of ``retrained``).
        reward_curve: one point per controller step; stored in ``(epoch, step)`` order.
        cell_frequency: layers x cells; the share of the final policy's samples that chose each
            cell at each layer (each row sums to 1).
        retrained: every retrained architecture of this search, the best and any random
            baselines included.
        seconds: wall time of the search, if known.
    """

    search_id: str = Field(min_length=1)
    reward: RewardName
    dataset: str = Field(min_length=1)
    cells: list[str] = Field(min_length=1)
    reductions: list[int]
    best: RetrainedArch
    reward_curve: list[RewardPoint]
    cell_frequency: list[list[Fraction]]
    retrained: list[RetrainedArch] = Field(min_length=1)
    seconds: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None

    @field_validator("reward_curve")
    @classmethod
    def _order_curve(cls, points: list[RewardPoint]) -> list[RewardPoint]:
        keys = [(p.epoch, p.step) for p in points]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"reward_curve has two points for (epoch, step) = {dup}")
        return sorted(points, key=lambda p: (p.epoch, p.step))

    @model_validator(mode="after")
    def _check(self) -> SearchSummary:
        if len(set(self.cells)) != len(self.cells):
            raise ValueError(f"cells must be distinct, got {self.cells}")
        layers = len(self.best.arch)
        reds = self.reductions
        if reds != sorted(set(reds)) or any(not 0 <= r < layers for r in reds):
            raise ValueError(
                f"reductions must be distinct, increasing layer indices in [0, {layers - 1}],"
                f" got {reds}"
            )
        named = [("best", self.best)] + [
            (f"retrained[{k}]", r) for k, r in enumerate(self.retrained)
        ]
        for where, r in named:
            if len(r.arch) != layers:
                raise ValueError(
                    f"{where} has {len(r.arch)} layers, the best architecture has {layers}"
                )
            if max(r.arch) >= len(self.cells):
                raise ValueError(
                    f"{where} uses cell index {max(r.arch)}; there are {len(self.cells)} cells"
                )
        if self.best.source != "enas":
            raise ValueError("best must be an ENAS architecture (source='enas')")
        if self.best not in self.retrained:
            raise ValueError("best must also be listed in retrained")
        if len(self.cell_frequency) != layers:
            raise ValueError(
                f"cell_frequency has {len(self.cell_frequency)} rows, the network has "
                f"{layers} layers"
            )
        for i, row in enumerate(self.cell_frequency):
            if len(row) != len(self.cells):
                raise ValueError(
                    f"cell_frequency row {i} has {len(row)} values for {len(self.cells)} cells"
                )
            if not math.isclose(sum(row), 1.0, abs_tol=_ROW_SUM_TOLERANCE):
                raise ValueError(f"cell_frequency row {i} sums to {sum(row):.6g}, not 1")
        return self

    @property
    def layers(self) -> int:
        """Encoder layers of the search space."""
        return len(self.best.arch)

    @property
    def reward_label(self) -> str:
        """The reward function as the report writes it (``mIoU+`` for ``miou_plus``)."""
        return REWARD_LABELS[self.reward]


class Report(_Frozen):
    """A reproduction report: Table 1 and its evidence for a set of searches.

    ``quality`` (one :class:`~reports.stats.QualityLine` per search, in order) and
    ``pooled_quality`` (all searches pooled) are computed from the searches; they are written
    into ``report.json`` and ignored when it is read back, so they always follow the data.
    """

    title: str = Field(min_length=1)
    created_at: AwareDatetime
    command: str
    searches: list[SearchSummary] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("quality", "pooled_quality")}
        return data

    @model_validator(mode="after")
    def _check(self) -> Report:
        ids = [s.search_id for s in self.searches]
        if len(set(ids)) != len(ids):
            raise ValueError(f"search ids must be distinct, got {ids}")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def quality(self) -> list[QualityLine]:
        """The quality line of each search, in the order of ``searches``."""
        return [quality_line(s) for s in self.searches]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pooled_quality(self) -> QualityLine:
        """The quality line of all searches pooled."""
        return pooled_quality_line(self.searches)


def format_arch(arch: list[int] | tuple[int, ...]) -> str:
    """Format an architecture the way the paper writes it: ``"0 5 5 2 ..."``."""
    return " ".join(str(int(c)) for c in arch)
