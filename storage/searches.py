"""``SearchStore``: every read and write the search driver makes, one transaction each.

Records going in and out are pydantic models; ORM objects never leave this module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from errors import SegnasError
from storage.engine import make_engine, session_scope
from storage.fencing import Fence, fence_conditions, hold, lease_lost
from storage.fronts import SizeCost, SizeFront, read_front
from storage.migrate import require_current
from storage.models import (
    LOCAL_ADMIN,
    Checkpoint,
    Epoch,
    Result,
    RewardStep,
    Sample,
    Search,
    User,
    utcnow,
)
from storage.rewards import Curve, add_step_rewards, curve_counts, read_curve
from storage.samples import SampleCursor, SampleQuery, sample_page_statement


class SearchNotFoundError(SegnasError):
    """No search has the id asked for."""


class IdempotencyConflictError(SegnasError):
    """An idempotency key already names a search made from another spec."""


T = TypeVar("T")

ACTIVE_STATUSES = ("queued", "running", "cancelling")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


# The polled read, built once: a statement made per call costs a third of the read's CPU
# (constructing the clause and its cache key), more than the round trip through psycopg.
# The table's columns and the owner's name (a correlated subquery, ``Search.owner_name``).
_SEARCH_COLUMNS = (Search.__table__, Search.owner_name.label("owner_name"))
_GET_SEARCH = select(*_SEARCH_COLUMNS).where(Search.__table__.c.id == bindparam("id"))
_GET_REVISION = select(Search.__table__.c.revision, Search.__table__.c.owner_id).where(
    Search.__table__.c.id == bindparam("id")
)
_LOCAL_ADMIN_ID = select(User.id).where(User.name == LOCAL_ADMIN)


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class SearchRecord(_Record):
    id: str
    owner_id: int
    owner_name: str
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
    updated_at: datetime
    worker: str | None = None
    heartbeat_at: datetime | None = None
    attempts: int = 0
    revision: int = 1


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
    params: int | None = None  # the architecture's as a stand-alone network
    flops: int | None = None  # and one forward pass of it at the data set's size


class StoredSampleRecord(SampleRecord):
    """A sample as read back: with its row id (the cursor of paging) and time."""

    id: int
    created_at: datetime


class RewardPoint(_Record):
    """One controller step of the reward curve, with the best reward of the search so far."""

    epoch: int
    step: int
    samples: int
    mean_reward: float
    max_reward: float
    best_so_far: float


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
    candidates: int | None = None


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
        # Reads of one statement need no transaction: in autocommit mode they cost one round
        # trip (no BEGIN, no COMMIT). Same pool as the engine.
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._local_admin_id: int | None = None

    def close(self) -> None:
        self.engine.dispose()

    def _session(self):  # type: ignore[no-untyped-def]
        return session_scope(self._sessions)

    def _read(self, read: Callable[[Connection], T]) -> T:
        """Run one read; a connection the server dropped is replaced and the read tried once
        more (reads are safe to repeat; an engine without pre-ping relies on this)."""
        try:
            with self._reader.connect() as connection:
                return read(connection)
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise
        with self._reader.connect() as connection:
            return read(connection)

    # searches

    def local_admin_id(self) -> int:
        """The id of the admin account the accounts migration made (``LOCAL_ADMIN``): the
        owner of searches made without a signed-in user."""
        if self._local_admin_id is None:
            found = self._read(lambda c: c.execute(_LOCAL_ADMIN_ID).scalar())
            if found is None:
                raise SegnasError(f"the database has no {LOCAL_ADMIN!r} account")
            self._local_admin_id = int(found)
        return self._local_admin_id

    def create(
        self,
        spec: dict[str, Any],
        *,
        name: str | None = None,
        status: str = "queued",
        owner_id: int | None = None,
    ) -> SearchRecord:
        return self.submit(spec, name=name, status=status, owner_id=owner_id)[0]

    def submit(
        self,
        spec: dict[str, Any],
        *,
        name: str | None = None,
        status: str = "queued",
        idempotency_key: str | None = None,
        owner_id: int | None = None,
    ) -> tuple[SearchRecord, bool]:
        """Insert a search; with ``idempotency_key``, the search that key made already for
        the same owner, if any.

        Args:
            owner_id: the user it belongs to (default: the local admin, ``LOCAL_ADMIN``).

        Returns:
            The search, and whether this call created it.

        Raises:
            IdempotencyConflictError: the key made a search from a different spec.
        """
        owner = owner_id if owner_id is not None else self.local_admin_id()
        if idempotency_key is not None:
            existing = self._by_idempotency_key(owner, idempotency_key, spec)
            if existing is not None:
                return existing, False
        row = Search(
            id=uuid.uuid4().hex,
            owner_id=owner,
            name=name,
            spec=spec,
            status=status,
            idempotency_key=idempotency_key,
        )
        try:
            with self._session() as s:
                s.add(row)
        except IntegrityError:
            # Two retries raced past the lookup and the unique key let one in: answer with it.
            if idempotency_key is None:
                raise
            existing = self._by_idempotency_key(owner, idempotency_key, spec)
            if existing is None:
                raise
            return existing, False
        return self.get(row.id), True  # with what the database computed (the owner's name)

    def replay(self, owner_id: int, key: str, spec: dict[str, Any]) -> SearchRecord | None:
        """The search ``key`` made already for this owner, if any.

        Raises:
            IdempotencyConflictError: the key made a search from a different spec.
        """
        return self._by_idempotency_key(owner_id, key, spec)

    def delete(self, search_id: str) -> list[str]:
        """Remove a search and every row of it (samples, epochs, checkpoints, result,
        retrains, evaluation scores: the foreign keys cascade). The caller removes the files.

        Returns:
            The paths of its checkpoint files and retrained weights.

        Raises:
            SearchNotFoundError: no search has this id.
        """
        from storage.models import Retrain  # the retrains table is storage.retrains's

        with self._session() as s:
            paths = list(
                s.scalars(select(Checkpoint.path).where(Checkpoint.search_id == search_id))
            )
            paths += [
                p
                for p in s.scalars(
                    select(Retrain.weights_path).where(Retrain.search_id == search_id)
                )
                if p
            ]
            if s.execute(delete(Search).where(Search.id == search_id)).rowcount == 0:
                raise SearchNotFoundError(f"no search with id {search_id!r}")
        return paths

    def count_active(self, owner_id: int) -> int:
        """The owner's searches that are queued, running or cancelling."""
        query = select(func.count()).where(
            Search.owner_id == owner_id, Search.status.in_(ACTIVE_STATUSES)
        )
        return int(self._read(lambda c: c.execute(query).scalar_one()))

    def _by_idempotency_key(
        self, owner_id: int, key: str, spec: dict[str, Any]
    ) -> SearchRecord | None:
        with self._session() as s:
            row = s.scalars(
                select(Search).where(Search.owner_id == owner_id, Search.idempotency_key == key)
            ).first()
            if row is None:
                return None
            if row.spec != spec:
                raise IdempotencyConflictError(
                    f"Idempotency-Key {key!r} was used for search {row.id} with another spec; "
                    "use a new key for a new search"
                )
            return SearchRecord.model_validate(row)

    def get(self, search_id: str) -> SearchRecord:
        """One search; the polled read, so one statement over the table (no ORM session).

        Raises:
            SearchNotFoundError: no search has this id.
        """
        return SearchRecord.model_validate(self._row(_GET_SEARCH, search_id), from_attributes=True)

    def revision(self, search_id: str) -> int:
        """How many times the search's row changed.

        Raises:
            SearchNotFoundError: no search has this id.
        """
        return self.revision_and_owner(search_id)[0]

    def revision_and_owner(self, search_id: str) -> tuple[int, int]:
        """The revision and the owner: all that a poll which knows the ETag asks for.

        Raises:
            SearchNotFoundError: no search has this id.
        """
        row = self._row(_GET_REVISION, search_id)
        return row.revision, row.owner_id

    def _row(self, query: Select[Any], search_id: str) -> Row[Any]:
        """The row ``query`` (one of the prebuilt reads, bound by ``id``) finds for the search.

        Raises:
            SearchNotFoundError: no search has this id.
        """
        row = self._read(lambda c: c.execute(query, {"id": search_id}).first())
        if row is None:
            raise SearchNotFoundError(f"no search with id {search_id!r}")
        return row

    # The driver's writes. With ``fence`` (a driver a dispatcher launched), each one checks
    # first that the lease is still the driver's, in the same transaction (storage.fencing):
    # LeaseLostError, and nothing written, once another dispatcher has taken the search over.

    def mark_running(self, search_id: str, *, fence: Fence | None = None) -> None:
        """The driver starts (or resumes) the search. A cancel asked for in the meantime
        (``cancelling``) stays: the driver's first step boundary then stops it."""
        with self._session() as s:
            hold(s, search_id, fence)
            row = _find(s, search_id)
            if row.status != "cancelling":
                row.status, row.error, row.finished_at = "running", None, None
            row.started_at = row.started_at or utcnow()

    def mark_finished(
        self, search_id: str, status: str, *, error: str | None = None, fence: Fence | None = None
    ) -> None:
        with self._session() as s:
            hold(s, search_id, fence)
            row = _find(s, search_id)
            row.status, row.error, row.finished_at = status, error, utcnow()

    def update_progress(
        self,
        search_id: str,
        progress: dict[str, Any],
        *,
        best_arch: list[int] | None = None,
        best_reward: float | None = None,
        fence: Fence | None = None,
    ) -> None:
        values: dict[str, Any] = {"progress": progress, "updated_at": utcnow()}
        if best_arch is not None:
            values.update(best_arch=best_arch, best_reward=best_reward)
        where = (Search.id == search_id,) if fence is None else fence_conditions(search_id, fence)
        with self._session() as s:
            result = s.execute(update(Search).where(*where).values(**values))
            if result.rowcount == 0:
                if fence is not None and s.get(Search, search_id) is not None:
                    raise lease_lost(search_id, fence)
                raise SearchNotFoundError(f"no search with id {search_id!r}")

    def page(
        self,
        *,
        status: str | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 20,
        owner_id: int | None = None,
        name_contains: str | None = None,
    ) -> list[SearchRecord]:
        """Searches newest first; ``before`` is the ``(created_at, id)`` of the last one of the
        previous page (the keyset cursor, served by ``ix_searches_created_at_id``, or with
        ``owner_id`` by ``ix_searches_owner_created_at_id``); ``owner_id``: that user's only;
        ``name_contains``: those whose name holds it, in any case (``%`` and ``_`` literal)."""
        query = select(*_SEARCH_COLUMNS)
        if owner_id is not None:
            query = query.where(Search.owner_id == owner_id)
        if status is not None:
            query = query.where(Search.status == status)
        if name_contains:
            literal = re.sub(r"([\\%_])", r"\\\1", name_contains)
            query = query.where(Search.name.ilike(f"%{literal}%", escape="\\"))
        if before is not None:
            created_at, search_id = before
            query = query.where(
                (Search.created_at < created_at)
                | ((Search.created_at == created_at) & (Search.id < search_id))
            )
        query = query.order_by(Search.created_at.desc(), Search.id.desc()).limit(limit)
        rows = self._read(lambda c: c.execute(query).all())
        return [SearchRecord.model_validate(r, from_attributes=True) for r in rows]

    # samples, epochs, checkpoints, result

    def add_samples(
        self, search_id: str, samples: list[SampleRecord], *, fence: Fence | None = None
    ) -> None:
        """Insert a batch in one statement and one transaction."""
        if not samples:
            return
        now = utcnow()
        rows = [{**r.model_dump(), "search_id": search_id, "created_at": now} for r in samples]
        with self._session() as s:
            hold(s, search_id, fence)
            s.execute(insert(Sample), rows)
            add_step_rewards(s, search_id, samples)

    def samples(self, search_id: str, *, phase: str | None = None) -> list[SampleRecord]:
        """The search's samples in slot order."""
        query = select(Sample).where(Sample.search_id == search_id)
        if phase is not None:
            query = query.where(Sample.phase == phase)
        query = query.order_by(Sample.phase, Sample.epoch, Sample.step, Sample.index)
        with self._session() as s:
            return [SampleRecord.model_validate(r) for r in s.scalars(query)]

    def sample_page(
        self,
        search_id: str,
        *,
        after: SampleCursor | None = None,
        limit: int = 100,
        query: SampleQuery | None = None,
    ) -> list[dict[str, Any]]:
        """One page of samples as ``query`` selects and orders them (default: in the order
        they were stored): each a dict of the sample's columns (``StoredSampleRecord``'s
        fields, and ``search_id``) and ``count``, the samples it stands for (1 unless
        folded); ``after`` is ``storage.samples.cursor_of`` the last row of the previous page.

        Plain dicts, not records: the caller validates a page once, into the model it answers
        with (a record per row first cost two thirds of a 1,000-row page).
        """
        statement = sample_page_statement(search_id, query or SampleQuery(), after, limit)
        with self._session() as s:
            result = s.execute(statement)
            keys = list(result.keys())
            return [dict(zip(keys, row, strict=True)) for row in result]

    def size_front(
        self, search_id: str, *, cost: SizeCost = "params", phase: str | None = None
    ) -> SizeFront:
        """The samples no other beats on both reward and size (``storage.fronts``)."""
        return self._read(lambda c: read_front(c, search_id, cost=cost, phase=phase))

    def cell_counts(self, search_id: str, num_cells: int) -> dict[int, list[list[int]]]:
        """What the policy sampled: for each epoch of the controller phase, how many of its
        samples chose each of the space's ``num_cells`` cells at each layer
        (``[layer][cell]``). Reads only the epoch and architecture of each row."""
        query = select(Sample.epoch, Sample.arch).where(
            Sample.search_id == search_id, Sample.phase == "controller"
        )
        rows = self._read(lambda c: c.execute(query).all())
        counts: dict[int, list[list[int]]] = {}
        for epoch, arch in rows:
            grid = counts.setdefault(epoch, [[0] * num_cells for _ in arch])
            for layer, cell in enumerate(arch):
                grid[layer][cell] += 1
        return dict(sorted(counts.items()))

    def reward_curve(self, search_id: str) -> list[RewardPoint]:
        """Mean and max reward of each controller step, in step order."""
        with self._session() as s:
            curve = read_curve(s, search_id)
        return [RewardPoint(**p.model_dump(exclude={"index"})) for p in curve.points]

    def reward_steps(
        self, search_id: str, *, after: tuple[int, int] | None = None, max_points: int | None
    ) -> Curve:
        """The curve from the step after ``after`` on, in at most ``max_points`` points
        (``storage.rewards.read_curve``): what the page polls."""
        with self._session() as s:
            return read_curve(s, search_id, after=after, max_points=max_points)

    def reward_counts(self, search_id: str) -> tuple[int, int]:
        """The search's controller steps and their samples: whether its curve changed
        (``storage.rewards.curve_counts``)."""
        with self._session() as s:
            return curve_counts(s, search_id)

    def count_samples(self, search_id: str) -> int:
        with self._session() as s:
            query = select(func.count()).select_from(Sample).where(Sample.search_id == search_id)
            return int(s.execute(query).scalar_one())

    def add_epoch(self, search_id: str, record: EpochRecord, *, fence: Fence | None = None) -> None:
        with self._session() as s:
            hold(s, search_id, fence)
            s.add(Epoch(search_id=search_id, **record.model_dump()))

    def epochs(self, search_id: str) -> list[EpochRecord]:
        query = select(Epoch).where(Epoch.search_id == search_id).order_by(Epoch.epoch)
        with self._session() as s:
            return [EpochRecord.model_validate(r) for r in s.scalars(query)]

    def add_checkpoint(
        self, search_id: str, record: CheckpointRecord, *, fence: Fence | None = None
    ) -> None:
        with self._session() as s:
            hold(s, search_id, fence)
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

    def prune_checkpoints(
        self, search_id: str, *, keep: int, fence: Fence | None = None
    ) -> list[str]:
        """Forget all but the newest ``keep`` checkpoints (0: all of them).

        Returns:
            The paths of the forgotten ones' files, for the caller to delete.
        """
        with self._session() as s:
            hold(s, search_id, fence)
            rows = list(
                s.scalars(
                    select(Checkpoint)
                    .where(Checkpoint.search_id == search_id)
                    .order_by(Checkpoint.epoch.desc())
                    .offset(keep)
                )
            )
            if rows:
                s.execute(delete(Checkpoint).where(Checkpoint.id.in_([r.id for r in rows])))
            return [r.path for r in rows]

    def rewind(self, search_id: str, epoch: int, *, fence: Fence | None = None) -> None:
        """Forget everything recorded after epoch ``epoch`` finished (-1: after the start), so
        that a resumed search writes those rows again exactly once."""
        with self._session() as s:
            hold(s, search_id, fence)
            s.execute(
                delete(Sample).where(
                    Sample.search_id == search_id,
                    (Sample.epoch > epoch) | (Sample.phase == "derive"),
                )
            )
            s.execute(
                delete(RewardStep).where(
                    RewardStep.search_id == search_id, RewardStep.epoch > epoch
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

    def set_result(
        self, search_id: str, result: ResultRecord, *, fence: Fence | None = None
    ) -> None:
        with self._session() as s:
            hold(s, search_id, fence)
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
