"""The SQL schema, as SQLAlchemy 2.0 models. Alembic migrations in ``migrations/`` create it.

Unique constraints make the rows that resume and fault recovery rewrite impossible to
duplicate: a sample is keyed by (search, phase, epoch, step, index), an epoch by (search,
epoch), a checkpoint by (search, epoch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    literal_column,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

SEARCH_STATUSES = ("queued", "running", "succeeded", "failed", "cancelling", "cancelled")
SAMPLE_PHASES = ("controller", "derive")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend: SQLite stores no zone, so what comes
    back from it is marked UTC again (PostgreSQL's ``timestamptz`` keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: store timezone-aware UTC times")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[int]: JSON}


LOCAL_ADMIN = "admin"
"""The admin account the accounts migration creates: it owns the searches made before it and
those made without a signed-in user (the command line, a server with ``--auth off``)."""


class User(Base):
    """An account of the service. Admins see and act on every search."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A bearer token of a user. Only its SHA-256 is kept: the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Search(Base):
    """One search: its spec, where it stands, and its best architecture so far."""

    __tablename__ = "searches"
    __table_args__ = (
        Index("ix_searches_created_at_id", "created_at", "id"),
        Index("ix_searches_owner_created_at_id", "owner_id", "created_at", "id"),
        # A retried POST /searches with the same key finds its search: keys are the owner's.
        UniqueConstraint("owner_id", "idempotency_key", name="uq_searches_owner_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Where the loop is: {"epoch", "epochs", "phase", "step", "steps", "samples"}.
    progress: Mapped[dict[str, Any] | None]
    best_arch: Mapped[list[int] | None]
    best_reward: Mapped[float | None] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # The dispatcher lease: who runs the search and when it last said it still does.
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Counts the changes to the row, in the database (``revision + 1`` in every UPDATE), so
    # that it changes with each write whatever the writers' clocks say: the API's ETag.
    revision: Mapped[int] = mapped_column(
        Integer, default=1, server_default="1", onupdate=literal_column("revision") + 1
    )
    # The owner's name, read with the row (a correlated subquery): what an admin's list shows.
    owner_name: Mapped[str] = column_property(
        select(User.name).where(User.id == owner_id).correlate_except(User).scalar_subquery()
    )

    # Read back what the database computed (the revision) in the flush that wrote it.
    __mapper_args__: ClassVar[dict[str, Any]] = {"eager_defaults": True}


class Sample(Base):
    """One scored architecture: a controller-phase sample or a derive-phase candidate."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("search_id", "phase", "epoch", "step", "index", name="uq_samples_slot"),
        Index("ix_samples_search_id_id", "search_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(12))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    arch: Mapped[list[int]]
    reward: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    mean_precision: Mapped[float] = mapped_column(Float)
    mean_recall: Mapped[float] = mapped_column(Float)
    miou: Mapped[float] = mapped_column(Float)
    miou_plus: Mapped[float] = mapped_column(Float)
    policy_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Parameters of the architecture as a stand-alone network (NULL: stored before 0007).
    params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Its FLOPs, one forward pass at the data set's size (NULL: stored before 0009).
    flops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RewardStep(Base):
    """One controller step's rewards, summed as its samples are written: the reward curve is
    read from these (one row per step) instead of grouping the samples."""

    __tablename__ = "reward_steps"

    search_id: Mapped[str] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    reward_sum: Mapped[float] = mapped_column(Float)
    max_reward: Mapped[float] = mapped_column(Float)


class Epoch(Base):
    """One finished ENAS epoch."""

    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("search_id", "epoch", name="uq_epochs_search_epoch"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    shared_steps: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Float)
    controller_entropy: Mapped[float | None] = mapped_column(Float)
    mean_reward: Mapped[float | None] = mapped_column(Float)
    baseline: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Checkpoint(Base):
    """A checkpoint file written after an epoch."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("search_id", "epoch", name="uq_checkpoints_search_epoch"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Result(Base):
    """The search's answer: the best derived architecture."""

    __tablename__ = "results"

    search_id: Mapped[str] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), primary_key=True
    )
    arch: Mapped[list[int]]
    reward: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    params: Mapped[int] = mapped_column(BigInteger)
    # How many distinct architectures the derive phase scored on the validation split: the
    # metrics are those of the best of them (None for results stored before it was kept).
    candidates: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Retrain(Base):
    """An architecture of a search trained from scratch (a Ray Tune trial) and tested.

    ``source`` says where the architecture came from: ``enas`` (the search's derive phase,
    ``rank`` 0 its best), ``random`` (a uniformly random baseline under the same budget) or
    ``pareto`` (spread along the search's size front, ``rank`` 0 its smallest).
    Retraining the same architecture of a search again replaces its row.
    """

    __tablename__ = "retrains"
    __table_args__ = (
        UniqueConstraint("search_id", "source", "arch_key", name="uq_retrains_search_arch"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(12))
    rank: Mapped[int] = mapped_column(Integer)
    arch: Mapped[list[int]]
    # The architecture as "0 5 5 2": JSON columns cannot be part of a unique key.
    arch_key: Mapped[str] = mapped_column(String(400))
    # Its score under the search's shared weights (derive phase, validation split).
    shared_score: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(12))  # succeeded | stopped | failed
    epochs: Mapped[int] = mapped_column(Integer)  # epochs trained (ASHA may stop early)
    params: Mapped[int | None] = mapped_column(BigInteger)
    accuracy: Mapped[float | None] = mapped_column(Float)
    mean_precision: Mapped[float | None] = mapped_column(Float)
    mean_recall: Mapped[float | None] = mapped_column(Float)
    miou: Mapped[float | None] = mapped_column(Float)
    miou_plus: Mapped[float | None] = mapped_column(Float)
    val: Mapped[dict[str, Any] | None]  # the last validation metrics
    config: Mapped[dict[str, Any]]  # the training config the trial ran with
    weights_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Evaluation(Base):
    """One search-phase evaluation (``segnas evaluate``): its plan, its searches, its summary.

    The id is a digest of the base spec and the settings, so running the same evaluation again
    finds this row and goes on where it stopped.
    """

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[dict[str, Any]]
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))
    # {"SEED/METHOD": search id} for the searches of the evaluation, as they are created.
    searches: Mapped[dict[str, Any]]
    summary: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class EvaluationTraining(Base):
    """One architecture of an evaluation trained from scratch with one training seed, tested."""

    __tablename__ = "evaluation_trainings"
    __table_args__ = (
        UniqueConstraint(
            "evaluation_id", "arch_key", "train_seed", name="uq_evaluation_trainings_arch_seed"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[str] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    arch: Mapped[list[int]]
    arch_key: Mapped[str] = mapped_column(String(400))  # with "@channels" where ``channels`` is set
    train_seed: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)  # None: the space's
    status: Mapped[str] = mapped_column(String(12))
    params: Mapped[int | None] = mapped_column(BigInteger)
    accuracy: Mapped[float | None] = mapped_column(Float)
    mean_precision: Mapped[float | None] = mapped_column(Float)
    mean_recall: Mapped[float | None] = mapped_column(Float)
    miou: Mapped[float | None] = mapped_column(Float)
    miou_plus: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EvaluationScore(Base):
    """One architecture scored under the shared weights of one of the evaluation's supernets
    (the last checkpoint of one of its searches), on the whole validation split."""

    __tablename__ = "evaluation_scores"
    __table_args__ = (
        UniqueConstraint(
            "evaluation_id", "search_id", "arch_key", name="uq_evaluation_scores_search_arch"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[str] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    arch: Mapped[list[int]]
    arch_key: Mapped[str] = mapped_column(String(400))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
