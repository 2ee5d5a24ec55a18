"""``RetrainStore``: the architectures of a search retrained from scratch, and their test
metrics (``segnas retrain``, ``GET /searches/{id}/retrains``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, insert, select

from storage.models import Retrain, utcnow
from storage.searches import SearchStore

RetrainSource = Literal["enas", "random", "pareto"]
RetrainStatus = Literal["succeeded", "stopped", "failed"]


class RetrainRecord(BaseModel):
    """One retrained architecture. Test metrics are None for a trial that failed.

    ``status``: ``succeeded`` (trained all its epochs), ``stopped`` (ASHA ended it early; its
    metrics are those of the last epoch it trained) or ``failed`` (``error`` says why).
    """

    model_config = ConfigDict(from_attributes=True, frozen=True)

    source: RetrainSource
    rank: int
    arch: list[int]
    shared_score: float | None
    status: RetrainStatus
    epochs: int
    params: int | None
    accuracy: float | None
    mean_precision: float | None
    mean_recall: float | None
    miou: float | None
    miou_plus: float | None
    val: dict[str, Any] | None
    config: dict[str, Any]
    weights_path: str | None
    error: str | None
    seconds: float | None


class StoredRetrainRecord(RetrainRecord):
    id: int
    search_id: str
    created_at: datetime


def arch_key(arch: list[int]) -> str:
    return " ".join(str(i) for i in arch)


class RetrainStore:
    """Retrains of the searches in ``store``'s database.

    Args:
        store: the searches database.
    """

    def __init__(self, store: SearchStore) -> None:
        self.store = store

    def save(self, search_id: str, records: list[RetrainRecord]) -> None:
        """Store ``records`` in one transaction, replacing earlier rows of the same
        architectures (same source).

        Raises:
            SearchNotFoundError: no search has this id.
        """
        self.store.get(search_id)
        if not records:
            return
        now = utcnow()
        with self.store._session() as s:
            for source in {r.source for r in records}:
                keys = [arch_key(r.arch) for r in records if r.source == source]
                s.execute(
                    delete(Retrain).where(
                        Retrain.search_id == search_id,
                        Retrain.source == source,
                        Retrain.arch_key.in_(keys),
                    )
                )
            rows = [
                {
                    **r.model_dump(),
                    "search_id": search_id,
                    "arch_key": arch_key(r.arch),
                    "created_at": now,
                }
                for r in records
            ]
            s.execute(insert(Retrain), rows)

    def list(self, search_id: str) -> list[StoredRetrainRecord]:
        """The search's retrains: ENAS architectures by rank, then the random baselines.

        Raises:
            SearchNotFoundError: no search has this id.
        """
        self.store.get(search_id)
        query = (
            select(Retrain.__table__)
            .where(Retrain.search_id == search_id)
            .order_by(Retrain.source, Retrain.rank, Retrain.id)
        )
        rows = self.store._read(lambda c: c.execute(query).all())
        return [StoredRetrainRecord.model_validate(r, from_attributes=True) for r in rows]
