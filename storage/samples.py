"""Which samples of a search a page holds: filters, sort order, keyset cursor, folding.

``SearchStore.sample_page`` runs the statement built here. Pages are keyset pages: the cursor
is the sort value and row id of the last row of the previous page, so a page costs the same
however deep it is and rows stored meanwhile neither repeat nor vanish.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ColumnElement, Select, Text, and_, cast, false, func, literal, or_, select

from storage.models import Sample

SampleSort = Literal[
    "id",
    "reward",
    "accuracy",
    "mean_precision",
    "mean_recall",
    "miou",
    "miou_plus",
    "params",
    "flops",
]

MAX_LAYER = 1023
"""More layers than any spec may ask for (the spec's limit is far below)."""
MAX_CELL = 255
"""More cells than any space has."""
MAX_EPOCH = 1_000_000
"""More epochs than any spec may ask for."""


class SampleQuery(BaseModel):
    """Which samples, in what order.

    Attributes:
        sort: the column the page is ordered by (ties broken by row id, in the same direction);
            ``params`` and ``flops`` leave out the rows stored without them (before migrations
            0007 and 0009).
        descending: largest first (for ``id``: newest first).
        phase, epoch: only samples of that phase, of that epoch (0-based, as stored).
        cell, layer: only architectures with cell index ``cell`` at layer ``layer`` (0-based);
            ``cell`` alone: at any of the first ``layers`` layers.
        layers: the search's layer count (what "any layer" means).
        fold: one row per distinct architecture, the first sample of it, with the number of
            samples it stands for (the derive phase scores duplicates of the likeliest ones).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sort: SampleSort = "id"
    descending: bool = False
    phase: Literal["controller", "derive"] | None = None
    epoch: int | None = Field(None, ge=0, le=MAX_EPOCH)
    cell: int | None = Field(None, ge=0, le=MAX_CELL)
    layer: int | None = Field(None, ge=0, le=MAX_LAYER)
    layers: int = Field(0, ge=0, le=MAX_LAYER + 1)
    fold: bool = False

    @model_validator(mode="after")
    def _check(self) -> SampleQuery:
        if self.layer is not None and self.cell is None:
            raise ValueError("layer needs a cell to look for")
        return self


_COLUMNS = tuple(Sample.__table__.columns)
"""The columns a page reads, as plain rows: building ORM objects cost most of a 1,000-row page."""

SampleCursor = tuple[float, int]
"""The sort value and row id of the last row of the previous page (for ``id``: the id twice)."""


def sample_page_statement(
    search_id: str, query: SampleQuery, after: SampleCursor | None, limit: int
) -> Select:
    """Rows of the samples' columns and ``count`` for one page, ``count`` being 1 unless
    ``query.fold``."""
    conditions = [Sample.search_id == search_id, *_filters(query)]
    if query.sort in ("params", "flops"):
        conditions.append(getattr(Sample, query.sort).is_not(None))
    if query.fold:
        groups = (
            select(func.min(Sample.id).label("first"), func.count().label("count"))
            .where(*conditions)
            .group_by(cast(Sample.arch, Text))
            .subquery()
        )
        statement = select(*_COLUMNS, groups.c["count"]).join(groups, Sample.id == groups.c.first)
    else:
        statement = select(*_COLUMNS, literal(1).label("count")).where(*conditions)
    column = getattr(Sample, query.sort)
    if after is not None:
        statement = statement.where(_after(column, after, query))
    if query.descending:
        order = (column.desc(), Sample.id.desc()) if query.sort != "id" else (Sample.id.desc(),)
    else:
        order = (column, Sample.id) if query.sort != "id" else (Sample.id,)
    return statement.order_by(*order).limit(limit)


def cursor_of(row: Mapping[str, Any], sort: str) -> SampleCursor:
    """The cursor that starts the page after ``row`` (a row of ``SearchStore.sample_page``)."""
    return float(row[sort]), int(row["id"])


def _filters(query: SampleQuery) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if query.phase is not None:
        found.append(Sample.phase == query.phase)
    if query.epoch is not None:
        found.append(Sample.epoch == query.epoch)
    if query.cell is not None:
        layers = [query.layer] if query.layer is not None else range(query.layers)
        # arch[i]: JSON_EXTRACT on SQLite, ->> on PostgreSQL; a layer past the end is NULL.
        matches = [Sample.arch[i].as_integer() == query.cell for i in layers]
        found.append(or_(*matches) if matches else false())
    return found


def _after(column: ColumnElement, after: SampleCursor, query: SampleQuery) -> ColumnElement[bool]:
    value, row_id = after
    if query.sort == "id":
        return Sample.id < row_id if query.descending else Sample.id > row_id
    if query.descending:
        return or_(column < value, and_(column == value, Sample.id < row_id))
    return or_(column > value, and_(column == value, Sample.id > row_id))
