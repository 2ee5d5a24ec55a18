"""``SearchStore``: every read and write the search driver makes, one transaction each.

Records going in and out are pydantic models; ORM objects never leave this module.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import make_engine, session_scope
from storage.migrate import require_current
from storage.models import Checkpoint, Epoch, Result, Sample, Search, utcnow
from supernet.errors import SegnasError


class SearchNotFoundError(SegnasError):
    """No search has the id asked for."""


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class SearchRecord(_Record):
    id: str
    name: str | None
    spec: dict[str, Any]
    status: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None
    best_arch: list[int] | None
    best_reward: float | None


class SampleRecord(_Record):
    """A scored architecture; ``(phase, epoch, step, index)`` is its slot in the search."""

    phase: str
    epoch: int
    step: int
    index: int
    arch: list[int]
    reward: float
    accuracy: float
    mean_precision: float
    mean_recall: float
    miou: float
    miou_plus: float
    policy_version: int


class EpochRecord(_Record):
    epoch: int
    train_loss: float
    shared_steps: int
    lr: float
    controller_entropy: float | None
    mean_reward: float | None
    baseline: float | None
    seconds: float


class CheckpointRecord(_Record):
    epoch: int
    path: str
    bytes: int


class ResultRecord(_Record):
    arch: list[int]
    reward: float
    metrics: dict[str, Any]
    params: int


class SearchStore:
    """The searches database.

    Args:
        url: database URL; default ``DATABASE_URL`` or SQLite in the data folder.
        engine: an engine to use instead of building one from ``url``.
        check_schema: refuse a database whose schema is not at this code's migration.
    """

    def __init__(
        self, url: str | None = None, *, engine: Engine | None = None, check_schema: bool = True
    ) -> None:
        self.engine = engine if engine is not None else make_engine(url)
        if check_schema:
            require_current(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def _session(self):  # type: ignore[no-untyped-def]
        return session_scope(self._sessions)

    # searches

    def create(
        self, spec: dict[str, Any], *, name: str | None = None, status: str = "queued"
    ) -> SearchRecord:
        row = Search(id=uuid.uuid4().hex, name=name, spec=spec, status=status)
        with self._session() as s:
            s.add(row)
        return SearchRecord.model_validate(row)

    def get(self, search_id: str) -> SearchRecord:
        with self._session() as s:
            return SearchRecord.model_validate(_find(s, search_id))

    def mark_running(self, search_id: str) -> None:
        with self._session() as s:
            row = _find(s, search_id)
            row.status, row.error, row.finished_at = "running", None, None
            row.started_at = row.started_at or utcnow()

    def mark_finished(self, search_id: str, status: str, *, error: str | None = None) -> None:
        with self._session() as s:
            row = _find(s, search_id)
            row.status, row.error, row.finished_at = status, error, utcnow()

    def update_progress(
        self,
        search_id: str,
        progress: dict[str, Any],
        *,
        best_arch: list[int] | None = None,
        best_reward: float | None = None,
    ) -> None:
        values: dict[str, Any] = {"progress": progress, "updated_at": utcnow()}
        if best_arch is not None:
            values.update(best_arch=best_arch, best_reward=best_reward)
        with self._session() as s:
            result = s.execute(update(Search).where(Search.id == search_id).values(**values))
            if result.rowcount == 0:
                raise SearchNotFoundError(f"no search with id {search_id!r}")

    # samples, epochs, checkpoints, result

    def add_samples(self, search_id: str, samples: list[SampleRecord]) -> None:
        """Insert a batch in one statement and one transaction."""
        if not samples:
            return
        now = utcnow()
        rows = [{**r.model_dump(), "search_id": search_id, "created_at": now} for r in samples]
        with self._session() as s:
            s.execute(insert(Sample), rows)

    def samples(self, search_id: str, *, phase: str | None = None) -> list[SampleRecord]:
        """The search's samples in slot order."""
        query = select(Sample).where(Sample.search_id == search_id)
        if phase is not None:
            query = query.where(Sample.phase == phase)
        query = query.order_by(Sample.phase, Sample.epoch, Sample.step, Sample.index)
        with self._session() as s:
            return [SampleRecord.model_validate(r) for r in s.scalars(query)]

    def count_samples(self, search_id: str) -> int:
        with self._session() as s:
            query = select(func.count()).select_from(Sample).where(Sample.search_id == search_id)
            return int(s.execute(query).scalar_one())

    def add_epoch(self, search_id: str, record: EpochRecord) -> None:
        with self._session() as s:
            s.add(Epoch(search_id=search_id, **record.model_dump()))

    def epochs(self, search_id: str) -> list[EpochRecord]:
        query = select(Epoch).where(Epoch.search_id == search_id).order_by(Epoch.epoch)
        with self._session() as s:
            return [EpochRecord.model_validate(r) for r in s.scalars(query)]

    def add_checkpoint(self, search_id: str, record: CheckpointRecord) -> None:
        with self._session() as s:
            s.add(Checkpoint(search_id=search_id, **record.model_dump()))

    def last_checkpoint(self, search_id: str) -> CheckpointRecord | None:
        query = (
            select(Checkpoint)
            .where(Checkpoint.search_id == search_id)
            .order_by(Checkpoint.epoch.desc())
            .limit(1)
        )
        with self._session() as s:
            row = s.scalars(query).first()
            return None if row is None else CheckpointRecord.model_validate(row)

    def checkpoints(self, search_id: str) -> list[CheckpointRecord]:
        """The search's checkpoints, oldest first."""
        query = (
            select(Checkpoint).where(Checkpoint.search_id == search_id).order_by(Checkpoint.epoch)
        )
        with self._session() as s:
            return [CheckpointRecord.model_validate(r) for r in s.scalars(query)]

    def rewind(self, search_id: str, epoch: int) -> None:
        """Forget everything recorded after epoch ``epoch`` finished (-1: after the start), so
        that a resumed search writes those rows again exactly once."""
        with self._session() as s:
            s.execute(
                delete(Sample).where(
                    Sample.search_id == search_id,
                    (Sample.epoch > epoch) | (Sample.phase == "derive"),
                )
            )
            s.execute(delete(Epoch).where(Epoch.search_id == search_id, Epoch.epoch > epoch))
            s.execute(
                delete(Checkpoint).where(
                    Checkpoint.search_id == search_id, Checkpoint.epoch > epoch
                )
            )
            s.execute(delete(Result).where(Result.search_id == search_id))
            # What the row says about progress described rows that are gone now; the driver
            # reports the restored position and best as soon as it goes on.
            s.execute(
                update(Search)
                .where(Search.id == search_id)
                .values(progress=None, best_arch=None, best_reward=None, updated_at=utcnow())
            )

    def set_result(self, search_id: str, result: ResultRecord) -> None:
        with self._session() as s:
            s.merge(Result(search_id=search_id, **result.model_dump()))

    def result(self, search_id: str) -> ResultRecord | None:
        with self._session() as s:
            row = s.get(Result, search_id)
            return None if row is None else ResultRecord.model_validate(row)


def _find(session: Session, search_id: str) -> Search:
    row = session.get(Search, search_id)
    if row is None:
        raise SearchNotFoundError(f"no search with id {search_id!r}")
    return row
