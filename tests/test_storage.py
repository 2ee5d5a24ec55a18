"""The searches database on every backend: migrations, schema check, ``SearchStore``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, func, inspect, select
from sqlalchemy.exc import IntegrityError

from errors import ConfigError
from storage.accounts import AccountStore
from storage.engine import make_engine, normalise_url
from storage.migrate import current_revision, downgrade, head_revision, require_current, upgrade
from storage.models import LOCAL_ADMIN, Base, Checkpoint, Epoch, Result, Sample, Search
from storage.searches import (
    CheckpointRecord,
    EpochRecord,
    ResultRecord,
    SampleRecord,
    SearchNotFoundError,
    SearchStore,
)

TABLES = {
    "searches",
    "samples",
    "epochs",
    "checkpoints",
    "results",
    "retrains",
    "evaluations",
    "evaluation_trainings",
    "evaluation_scores",
    "users",
    "api_tokens",
    "reward_steps",
}
ACCOUNT_TABLES = {"users", "api_tokens"}
CURVE_TABLES = {"reward_steps"}  # migration 0008
SPEC = {"space": {"layers": 12}, "epochs": 3}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def sample(
    epoch: int, step: int, index: int, *, phase: str = "controller", reward: float = 0.5
) -> SampleRecord:
    return SampleRecord(
        phase=phase,
        epoch=epoch,
        step=step,
        index=index,
        arch=[epoch, step, index, 5],
        reward=reward,
        accuracy=0.9,
        mean_precision=0.8,
        mean_recall=0.7,
        miou=reward,
        miou_plus=reward + 0.1,
        policy_version=epoch * 10 + step,
    )


def epoch_record(epoch: int) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        train_loss=1.0 / (epoch + 1),
        shared_steps=100,
        lr=0.05,
        controller_entropy=12.5,
        mean_reward=0.25,
        baseline=0.2,
        seconds=60.0,
    )


def checkpoint(epoch: int) -> CheckpointRecord:
    return CheckpointRecord(epoch=epoch, path=f"/ckpt/epoch-{epoch}.pt", bytes=123_456_789_012)


def result(reward: float) -> ResultRecord:
    return ResultRecord(
        arch=[2] * 12, reward=reward, metrics={"miou": reward}, params=3_000_000_000
    )


def slots(records: list[SampleRecord]) -> list[tuple[str, int, int, int]]:
    return [(r.phase, r.epoch, r.step, r.index) for r in records]


# migrations


def test_upgrade_downgrade_upgrade(db_url: str, engine: Engine) -> None:
    assert tables(engine) == set()
    assert current_revision(engine) is None

    upgrade(db_url)
    assert tables(engine) == TABLES
    assert current_revision(engine) == head_revision()

    downgrade(db_url)
    assert tables(engine) == set()
    assert current_revision(engine) is None

    upgrade(db_url)
    assert tables(engine) == TABLES
    assert current_revision(engine) == head_revision()


def test_retrains_come_and_go_with_their_migration(db_url: str, engine: Engine) -> None:
    upgrade(db_url, "0002")
    assert "retrains" not in tables(engine)
    upgrade(db_url)
    assert "retrains" in tables(engine)
    downgrade(db_url, "0002")
    assert tables(engine) == TABLES - {
        "retrains",
        *EVALUATION_TABLES,
        *ACCOUNT_TABLES,
        *CURVE_TABLES,
    }
    assert current_revision(engine) == "0002"


EVALUATION_TABLES = {"evaluations", "evaluation_trainings", "evaluation_scores"}


def test_evaluations_come_and_go_with_their_migration(db_url: str, engine: Engine) -> None:
    upgrade(db_url, "0004")
    assert not EVALUATION_TABLES & tables(engine)
    upgrade(db_url)
    assert tables(engine) >= EVALUATION_TABLES
    downgrade(db_url, "0004")
    assert tables(engine) == TABLES - EVALUATION_TABLES - ACCOUNT_TABLES - CURVE_TABLES
    assert current_revision(engine) == "0004"


def test_sample_sizes_come_and_go_with_their_migration(db_url: str, engine: Engine) -> None:
    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("samples")}

    upgrade(db_url, "0006")
    assert "params" not in columns()
    upgrade(db_url)
    assert "params" in columns()
    downgrade(db_url, "0006")
    assert "params" not in columns() and current_revision(engine) == "0006"


def test_the_accounts_migration_gives_older_searches_to_the_admin_it_makes(
    db_url: str, engine: Engine
) -> None:
    upgrade(db_url, "0005")
    searches = sa.table(
        "searches", sa.column("id"), sa.column("spec", sa.JSON()), sa.column("status"),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)), sa.column("idempotency_key"),
    )  # fmt: skip
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for k in range(2):
            connection.execute(
                searches.insert().values(
                    id=f"{k:032d}",
                    spec=SPEC,
                    status="queued",
                    created_at=now,
                    updated_at=now,
                    idempotency_key=f"key-{k}",
                )
            )
    upgrade(db_url)
    store = SearchStore(engine=engine)
    admin = AccountStore(store).user(LOCAL_ADMIN)
    assert admin.is_admin
    assert {store.get(f"{k:032d}").owner_id for k in range(2)} == {admin.id}
    # Keys are the owner's now: another user may reuse one, the admin gets its own search.
    other = AccountStore(store).add_user("ada")
    again, created = store.submit(SPEC, idempotency_key="key-0")
    assert (again.id, created) == ("0" * 32, False)
    theirs, created = store.submit(SPEC, idempotency_key="key-0", owner_id=other.id)
    assert created and theirs.owner_id == other.id
    store.close()
    downgrade(db_url, "0005")
    assert tables(engine) == TABLES - ACCOUNT_TABLES - CURVE_TABLES


def test_require_current_refuses_an_empty_database_and_passes_at_head(
    db_url: str, engine: Engine
) -> None:
    with pytest.raises(ConfigError, match="segnas db upgrade"):
        require_current(engine)
    with pytest.raises(ConfigError, match="segnas db upgrade"):
        SearchStore(engine=engine)

    upgrade(db_url)
    require_current(engine)

    downgrade(db_url)
    with pytest.raises(ConfigError, match="segnas db upgrade"):
        require_current(engine)


def test_models_match_the_migrations(db_url: str, engine: Engine) -> None:
    # Neither backend needed an exclusion: any diff reported here is drift between
    # storage/models.py and migrations/ (a model changed without a migration, or the reverse).
    upgrade(db_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


# URLs


def test_plain_postgresql_urls_use_psycopg() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert (
        normalise_url("postgres://u:p%40ss@h:5433/db") == "postgresql+psycopg://u:p%40ss@h:5433/db"
    )
    assert normalise_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("url", ["not a url", "localhost:5432/segnas", ""])
def test_garbage_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="not a database URL"):
        normalise_url(url)


# searches


def test_create_and_get(store: SearchStore) -> None:
    created = store.create(SPEC, name="voc small")
    assert created.status == "queued"
    assert created.created_at is not None
    fetched = store.get(created.id)
    assert (fetched.id, fetched.name, fetched.spec, fetched.status) == (
        created.id,
        "voc small",
        SPEC,
        "queued",
    )
    assert (fetched.started_at, fetched.finished_at, fetched.error) == (None, None, None)
    assert (fetched.progress, fetched.best_arch, fetched.best_reward) == (None, None, None)
    assert store.create(SPEC).id != created.id


def test_unknown_search_is_not_found(store: SearchStore) -> None:
    with pytest.raises(SearchNotFoundError, match="nosuchid"):
        store.get("nosuchid")
    with pytest.raises(SearchNotFoundError):
        store.mark_running("nosuchid")
    with pytest.raises(SearchNotFoundError):
        store.mark_finished("nosuchid", "failed")


def test_mark_running_then_finished_then_running_again(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    store.mark_running(search_id)
    running = store.get(search_id)
    assert running.status == "running"
    assert running.started_at is not None
    assert running.finished_at is None

    store.mark_finished(search_id, "failed", error="replica lost")
    failed = store.get(search_id)
    assert (failed.status, failed.error) == ("failed", "replica lost")
    assert failed.finished_at is not None
    assert failed.started_at == running.started_at

    # A retry clears the failure but keeps when the search first started.
    store.mark_running(search_id)
    retried = store.get(search_id)
    assert (retried.status, retried.error, retried.finished_at) == ("running", None, None)
    assert retried.started_at == running.started_at

    store.mark_finished(search_id, "succeeded")
    assert store.get(search_id).status == "succeeded"


def test_update_progress_keeps_the_best_until_a_new_one(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    store.update_progress(search_id, {"epoch": 0, "phase": "shared"})
    assert store.get(search_id).progress == {"epoch": 0, "phase": "shared"}
    assert store.get(search_id).best_arch is None

    store.update_progress(search_id, {"epoch": 1}, best_arch=[1, 2, 3], best_reward=0.4)
    store.update_progress(search_id, {"epoch": 2})
    got = store.get(search_id)
    assert (got.progress, got.best_arch, got.best_reward) == ({"epoch": 2}, [1, 2, 3], 0.4)


# samples


def test_add_samples_returns_them_in_slot_order(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    other_id = store.create(SPEC).id
    # Inserted out of slot order, across phases, epochs and steps.
    batch = [sample(1, 0, 1), sample(0, 1, 0), sample(0, 0, 1), sample(0, 0, 0)]
    store.add_samples(search_id, batch)
    store.add_samples(search_id, [sample(0, 0, 0, phase="derive", reward=0.9)])
    store.add_samples(search_id, [])
    store.add_samples(other_id, [sample(0, 0, 0)])

    assert slots(store.samples(search_id)) == [
        ("controller", 0, 0, 0),
        ("controller", 0, 0, 1),
        ("controller", 0, 1, 0),
        ("controller", 1, 0, 1),
        ("derive", 0, 0, 0),
    ]
    assert store.samples(search_id, phase="derive") == [sample(0, 0, 0, phase="derive", reward=0.9)]
    assert store.samples(search_id, phase="controller")[3] == sample(1, 0, 1)
    assert store.count_samples(search_id) == 5
    assert store.count_samples(other_id) == 1
    assert store.count_samples("nosuchid") == 0


def test_a_duplicate_slot_is_refused_and_keeps_what_was_stored(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    first = [sample(0, 0, 0), sample(0, 0, 1)]
    store.add_samples(search_id, first)

    # The second batch holds one new slot and one taken slot (with another reward).
    with pytest.raises(IntegrityError):
        store.add_samples(search_id, [sample(0, 1, 0), sample(0, 0, 1, reward=0.99)])
    assert store.samples(search_id) == first

    # The same slot in another phase or another search is a different slot.
    store.add_samples(search_id, [sample(0, 0, 1, phase="derive")])
    store.add_samples(store.create(SPEC).id, [sample(0, 0, 1)])
    assert store.count_samples(search_id) == 3


# epochs, checkpoints, result


def test_pruning_keeps_the_newest_checkpoints_and_names_the_files_of_the_rest(
    store: SearchStore,
) -> None:
    search_id = store.create(SPEC).id
    for epoch in range(4):
        store.add_checkpoint(search_id, checkpoint(epoch))
    assert store.prune_checkpoints(search_id, keep=2) == [checkpoint(1).path, checkpoint(0).path]
    assert store.checkpoints(search_id) == [checkpoint(2), checkpoint(3)]
    assert store.prune_checkpoints(search_id, keep=2) == []
    assert sorted(store.prune_checkpoints(search_id, keep=0)) == [
        checkpoint(2).path, checkpoint(3).path
    ]  # fmt: skip
    assert store.checkpoints(search_id) == []


def test_epochs_and_checkpoints(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    assert store.epochs(search_id) == []
    assert store.last_checkpoint(search_id) is None

    for epoch in (1, 0, 2):
        store.add_epoch(search_id, epoch_record(epoch))
        store.add_checkpoint(search_id, checkpoint(epoch))
    assert store.epochs(search_id) == [epoch_record(0), epoch_record(1), epoch_record(2)]
    assert store.last_checkpoint(search_id) == checkpoint(2)

    with pytest.raises(IntegrityError):
        store.add_epoch(search_id, epoch_record(1))
    with pytest.raises(IntegrityError):
        store.add_checkpoint(search_id, checkpoint(1))
    assert len(store.epochs(search_id)) == 3


def test_set_result_twice_keeps_the_second(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    assert store.result(search_id) is None
    store.set_result(search_id, result(0.3))
    store.set_result(search_id, result(0.6))
    assert store.result(search_id) == result(0.6)


# rewind and delete


def fill(store: SearchStore, search_id: str, epochs: int = 3) -> None:
    """Rows of a search that ran ``epochs`` epochs and derived a result."""
    for epoch in range(epochs):
        store.add_samples(
            search_id, [sample(epoch, step, i) for step in range(2) for i in range(2)]
        )
        store.add_epoch(search_id, epoch_record(epoch))
        store.add_checkpoint(search_id, checkpoint(epoch))
    store.add_samples(search_id, [sample(epochs - 1, 0, i, phase="derive") for i in range(3)])
    store.set_result(search_id, result(0.5))


def test_rewind_forgets_exactly_what_came_after_the_epoch(store: SearchStore) -> None:
    search_id, other_id = store.create(SPEC).id, store.create(SPEC).id
    fill(store, search_id)
    fill(store, other_id)
    other_before = (store.samples(other_id), store.epochs(other_id), store.result(other_id))

    store.rewind(search_id, 1)

    kept = store.samples(search_id)
    assert slots(kept) == [("controller", e, s, i) for e in (0, 1) for s in (0, 1) for i in (0, 1)]
    assert [e.epoch for e in store.epochs(search_id)] == [0, 1]
    assert store.last_checkpoint(search_id) == checkpoint(1)
    assert store.result(search_id) is None
    assert (store.samples(other_id), store.epochs(other_id), store.result(other_id)) == (
        other_before
    )

    # The rewound slots can be written again, exactly once.
    store.add_samples(search_id, [sample(2, 0, 0)])
    store.add_epoch(search_id, epoch_record(2))
    store.add_checkpoint(search_id, checkpoint(2))
    assert store.last_checkpoint(search_id) == checkpoint(2)


def test_rewind_to_the_start_forgets_everything(store: SearchStore) -> None:
    search_id = store.create(SPEC).id
    fill(store, search_id)
    store.rewind(search_id, -1)
    assert store.count_samples(search_id) == 0
    assert store.epochs(search_id) == []
    assert store.last_checkpoint(search_id) is None
    assert store.result(search_id) is None
    assert store.get(search_id).spec == SPEC


def test_deleting_a_search_cascades(store: SearchStore) -> None:
    search_id, other_id = store.create(SPEC).id, store.create(SPEC).id
    fill(store, search_id)
    fill(store, other_id)

    with store.engine.begin() as connection:
        connection.execute(delete(Search).where(Search.id == search_id))

    with store.engine.connect() as connection:
        for model in (Sample, Epoch, Checkpoint, Result):
            count = select(func.count()).select_from(model)
            assert connection.execute(count.where(model.search_id == search_id)).scalar() == 0
            assert connection.execute(count.where(model.search_id == other_id)).scalar() > 0
    with pytest.raises(SearchNotFoundError):
        store.get(search_id)
    assert store.count_samples(other_id) == 2 * 2 * 3 + 3


def test_timestamps_come_back_timezone_aware_on_every_backend(store: SearchStore) -> None:
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    search_id = store.create({"seed": 0}).id
    store.mark_running(search_id)
    record = store.get(search_id)
    for stamp in (record.created_at, record.started_at):
        assert stamp is not None and stamp.utcoffset() is not None
        assert abs((stamp - before).total_seconds()) < 3600  # comparable, and in UTC


def test_progress_of_an_unknown_search_is_not_found(store: SearchStore) -> None:
    with pytest.raises(SearchNotFoundError):
        store.update_progress("nope", {"epoch": 0})


def test_a_read_survives_a_connection_the_server_dropped(
    db_url: str, postgres_admin: Engine | str
) -> None:
    """The API's engine has no pre-ping: a pooled connection that PostgreSQL closed (a restart,
    an idle timeout) must cost a retry, not a failed poll."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    upgrade(db_url)
    store = SearchStore(engine=make_engine(db_url, pre_ping=False, pool_size=1, max_overflow=0))
    try:
        search = store.create(SPEC)
        with store.engine.connect() as connection:  # the pool's one connection, back after
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        assert isinstance(postgres_admin, Engine)
        with postgres_admin.connect() as admin:
            assert admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
        assert store.get(search.id).id == search.id
        assert [r.id for r in store.page()] == [search.id]
    finally:
        store.close()
