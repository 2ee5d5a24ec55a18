"""``EvaluationStore``: the rows of ``segnas evaluate``, so an interrupted evaluation goes on
where it stopped: its plan and searches, the retrained architectures (one row per training
seed) and their scores under each supernet's shared weights."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from storage.models import Evaluation, EvaluationScore, EvaluationTraining, Search, utcnow
from storage.retrains import arch_key
from storage.searches import SearchStore

EvaluationStatus = Literal["running", "succeeded", "failed"]


class EvaluationRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: str
    spec: dict[str, Any]
    settings: dict[str, Any]
    status: EvaluationStatus
    searches: dict[str, str]
    summary: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class TrainingRecord(BaseModel):
    """One architecture trained from scratch with one training seed; metrics on the test
    split (None where the training failed: ``error`` says why)."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    arch: list[int]
    train_seed: int
    status: str
    channels: int | None = None  # None: trained at its space's channels
    params: int | None
    accuracy: float | None
    mean_precision: float | None
    mean_recall: float | None
    miou: float | None
    miou_plus: float | None
    error: str | None = None
    seconds: float | None = None


class ScoreRecord(BaseModel):
    """One architecture's metrics under one supernet's shared weights (validation split)."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    search_id: str
    arch: list[int]
    metrics: dict[str, float]


def training_key(arch: list[int], channels: int | None) -> str:
    """Names one network of an evaluation: its architecture, and its channels where they are
    not the space's."""
    return arch_key(arch) if channels is None else f"{arch_key(arch)}@{channels}"


class EvaluationStore:
    """Evaluations in ``store``'s database.

    Args:
        store: the searches database (the evaluations' searches are ordinary searches).
    """

    def __init__(self, store: SearchStore) -> None:
        self.store = store

    def open(
        self, evaluation_id: str, *, spec: dict[str, Any], settings: dict[str, Any]
    ) -> tuple[EvaluationRecord, bool]:
        """The evaluation ``evaluation_id``, created (status running) if it does not exist.

        Returns:
            The row, and whether this call created it.
        """
        existing = self.get(evaluation_id)
        if existing is not None:
            return existing, False
        row = Evaluation(
            id=evaluation_id,
            spec=spec,
            settings=settings,
            status="running",
            searches={},
            summary=None,
        )
        try:
            with self.store._session() as s:
                s.add(row)
        except IntegrityError:  # another process opened it first
            found = self.get(evaluation_id)
            if found is None:
                raise
            return found, False
        return EvaluationRecord.model_validate(row), True

    def get(self, evaluation_id: str) -> EvaluationRecord | None:
        query = select(Evaluation.__table__).where(Evaluation.id == evaluation_id)
        row = self.store._read(lambda c: c.execute(query).first())
        return None if row is None else EvaluationRecord.model_validate(row, from_attributes=True)

    def latest(self, limit: int = 20) -> list[EvaluationRecord]:
        """The ``limit`` newest evaluations, newest first."""
        query = (
            select(Evaluation.__table__)
            .order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
            .limit(limit)
        )
        rows = self.store._read(lambda c: c.execute(query).all())
        return [EvaluationRecord.model_validate(r, from_attributes=True) for r in rows]

    def trainings_stored(self, evaluation_id: str) -> int:
        """How many (network, training seed) rows the evaluation has stored."""
        return self.trainings_counts([evaluation_id])[evaluation_id]

    def trainings_counts(self, evaluation_ids: list[str]) -> dict[str, int]:
        """``trainings_stored`` of each evaluation, in one statement."""
        query = (
            select(EvaluationTraining.evaluation_id, func.count())
            .where(EvaluationTraining.evaluation_id.in_(evaluation_ids))
            .group_by(EvaluationTraining.evaluation_id)
        )
        counts = dict(self.store._read(lambda c: c.execute(query).all()))
        return {e: int(counts.get(e, 0)) for e in evaluation_ids}

    def search_statuses(self, records: list[EvaluationRecord]) -> dict[str, str]:
        """The status of every search of ``records``, in one statement (a search deleted
        since is missing)."""
        ids = sorted({sid for r in records for sid in r.searches.values()})
        if not ids:
            return {}
        table = Search.__table__
        query = select(table.c.id, table.c.status).where(table.c.id.in_(ids))
        return dict(self.store._read(lambda c: c.execute(query).all()))

    def add_search(self, evaluation_id: str, slot: str, search_id: str) -> None:
        """Record that the evaluation's search ``slot`` (``SEED/METHOD``) is ``search_id``."""
        with self.store._session() as s:
            row = s.get(Evaluation, evaluation_id, with_for_update=True)
            if row is None:
                raise KeyError(evaluation_id)
            row.searches = {**row.searches, slot: search_id}

    def finish(
        self,
        evaluation_id: str,
        status: EvaluationStatus,
        *,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        with self.store._session() as s:
            s.execute(
                update(Evaluation)
                .where(Evaluation.id == evaluation_id)
                .values(status=status, summary=summary, error=error, updated_at=utcnow())
            )

    def mark_running(self, evaluation_id: str) -> None:
        with self.store._session() as s:
            s.execute(
                update(Evaluation)
                .where(Evaluation.id == evaluation_id)
                .values(status="running", error=None, updated_at=utcnow())
            )

    # trainings

    def add_trainings(self, evaluation_id: str, records: list[TrainingRecord]) -> None:
        """Store trained architectures; a (architecture, channels, seed) stored before is
        replaced."""
        if not records:
            return
        with self.store._session() as s:
            for r in records:
                key = training_key(r.arch, r.channels)
                old = s.scalars(
                    select(EvaluationTraining).where(
                        EvaluationTraining.evaluation_id == evaluation_id,
                        EvaluationTraining.arch_key == key,
                        EvaluationTraining.train_seed == r.train_seed,
                    )
                ).first()
                if old is not None:
                    s.delete(old)
                    s.flush()
                s.add(
                    EvaluationTraining(**r.model_dump(), evaluation_id=evaluation_id, arch_key=key)
                )

    def trainings(self, evaluation_id: str) -> list[TrainingRecord]:
        query = (
            select(EvaluationTraining.__table__)
            .where(EvaluationTraining.evaluation_id == evaluation_id)
            .order_by(EvaluationTraining.id)
        )
        rows = self.store._read(lambda c: c.execute(query).all())
        return [TrainingRecord.model_validate(r, from_attributes=True) for r in rows]

    # shared-weight scores

    def add_scores(self, evaluation_id: str, records: list[ScoreRecord]) -> None:
        """Store shared-weight scores; one stored before for the same supernet and
        architecture is kept (the same weights give the same score)."""
        if not records:
            return
        done = {(r.search_id, arch_key(r.arch)) for r in self.scores(evaluation_id)}
        rows = [
            EvaluationScore(
                evaluation_id=evaluation_id,
                search_id=r.search_id,
                arch=r.arch,
                arch_key=arch_key(r.arch),
                metrics=r.metrics,
            )
            for r in records
            if (r.search_id, arch_key(r.arch)) not in done
        ]
        with self.store._session() as s:
            s.add_all(rows)

    def scores(self, evaluation_id: str) -> list[ScoreRecord]:
        query = (
            select(EvaluationScore.__table__)
            .where(EvaluationScore.evaluation_id == evaluation_id)
            .order_by(EvaluationScore.id)
        )
        rows = self.store._read(lambda c: c.execute(query).all())
        return [ScoreRecord.model_validate(r, from_attributes=True) for r in rows]
