"""The one entry point every way of running a search goes through: the CLI, the dispatcher,
``ray submit`` and ``ray job submit`` (``deploy/ray/submit.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from errors import ConfigError
from searchspec.spec import SearchSpec
from storage.engine import data_dir, make_engine
from storage.migrate import ensure_schema
from storage.searches import SearchStore
from workers.driver import SearchDriver, SearchOutcome, SearchProgress


def open_store(db_url: str | None = None) -> SearchStore:
    """The database, its schema created first if it is empty (a schema that is merely older is
    refused with the command that upgrades it)."""
    engine = make_engine(db_url)
    ensure_schema(engine)
    return SearchStore(engine=engine)


def default_checkpoint_dir() -> Path:
    return data_dir() / "checkpoints"


def run_search(
    spec: SearchSpec | None = None,
    *,
    resume: str | None = None,
    store: SearchStore,
    checkpoint_dir: Path | None = None,
    on_created: Callable[[str], None] | None = None,
    on_progress: Callable[[SearchProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    interrupted_status: str | None = "cancelled",
) -> SearchOutcome:
    """Run a new search for ``spec``, or resume the search ``resume`` from its last checkpoint.

    Args:
        spec: the spec of a new search (None when resuming: the stored spec is used).
        resume: id of a search to continue.
        store: the database.
        checkpoint_dir: checkpoint folder (default: ``checkpoints`` in the data folder).
        on_created: called with the search id as soon as its row exists.
        on_progress: progress callback (see ``SearchDriver``).
        should_stop: cancellation poll (see ``SearchDriver``).
        interrupted_status: see ``SearchDriver``.

    Raises:
        ConfigError: neither or both of ``spec`` and ``resume``; an unknown or finished search.
    """
    if (spec is None) == (resume is None):
        raise ConfigError("give either a spec for a new search or the id of one to resume")
    if spec is None:
        record = store.get(resume)
        if record.status == "succeeded":
            raise ConfigError(f"search {resume} has already succeeded: nothing to resume")
        spec = SearchSpec.model_validate(record.spec)
        search_id = record.id
    else:
        search_id = store.create(spec.model_dump(mode="json"), name=spec.name).id
    if on_created is not None:
        on_created(search_id)
    driver = SearchDriver(
        spec,
        store=store,
        checkpoint_dir=checkpoint_dir or default_checkpoint_dir(),
        on_progress=on_progress,
        should_stop=should_stop,
        interrupted_status=interrupted_status,
    )
    return driver.run(search_id)
