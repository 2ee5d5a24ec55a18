"""The dispatcher (``segnas worker``): takes search jobs from the Redis stream and runs them.

One loop, one thread, each turn:

1. reap drivers that ended, and settle their searches (a driver that died with its search
   still active gets it re-enqueued, up to ``max_attempts``);
2. heartbeat: renew the database leases of the searches it runs and the idle time of their
   stream entries; stop a driver whose lease another dispatcher took over; kill a driver that
   ignores a cancel past its grace;
3. reconcile: enqueue every active search that nobody holds a live lease on and that has no
   live stream entry (an insert whose enqueue never happened, a Redis that restarted empty,
   a search whose dispatcher died);
4. with free slots: claim entries whose consumer went silent (``XAUTOCLAIM``), then read new
   ones, take each search's lease in the database and launch its driver.

The database lease is the fence: a stream entry delivered twice, or to two dispatchers,
launches at most one driver. Redis being down pauses step 4 only; drivers go on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError

from jobqueue import Job, JobQueue, QueueUnavailableError
from storage.leases import Claim, SearchLeases
from storage.searches import ACTIVE_STATUSES, SearchStore
from workers.launchers import Launched, Launcher
from workers.memory import driver_killed, killed_by_sigkill

log = logging.getLogger("segnas.dispatcher")


class DispatcherConfig(BaseModel):
    """How a dispatcher behaves.

    Args:
        name: consumer name in the group and lease holder name (default: host-pid-random).
        max_concurrent: searches run at once.
        lease_seconds: a dispatcher silent this long is taken to be dead.
        heartbeat_seconds: how often it renews its leases (well under ``lease_seconds``).
        reconcile_seconds: how often it re-enqueues orphaned searches.
        cancel_grace_seconds: a driver that ignores a cancel (or a stop) this long is killed.
        max_attempts: drivers started for one search before it is marked failed.
        poll_ms: longest wait for a new entry in one turn.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    max_concurrent: int = Field(1, ge=1, le=1024)
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    reconcile_seconds: float = Field(15.0, gt=0)
    cancel_grace_seconds: float = Field(60.0, ge=0)
    max_attempts: int = Field(3, ge=1)
    poll_ms: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DispatcherConfig:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("heartbeat_seconds must be at most half of lease_seconds")
        return self


@dataclass
class _Running:
    job: Job
    driver: Launched
    stopping: bool = False  # stopped by this dispatcher: a stuck cancel, a lost lease, shutdown
    lost: bool = False  # another dispatcher holds the lease now: leave the row alone
    cancel_deadline: float | None = None  # a cancel is pending; kill the driver after this


@dataclass
class _Clock:
    every: float
    last: float = field(default=float("-inf"))

    def due(self, now: float) -> bool:
        if now - self.last >= self.every:
            self.last = now
            return True
        return False


class Dispatcher:
    """Runs search jobs from ``queue`` with ``launcher``, keeping ``store``'s leases."""

    def __init__(
        self,
        store: SearchStore,
        queue: JobQueue,
        launcher: Launcher,
        config: DispatcherConfig | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.launcher = launcher
        self.config = config or DispatcherConfig()
        self.leases = SearchLeases(store, lease_seconds=self.config.lease_seconds)
        self.running: dict[str, _Running] = {}
        self._heartbeat = _Clock(self.config.heartbeat_seconds)
        self._reconcile = _Clock(self.config.reconcile_seconds)

    @property
    def name(self) -> str:
        return self.config.name

    # the loop

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set, then stop the drivers it runs and give their
        searches back (they stay active: the next dispatcher resumes them)."""
        log.info("dispatcher %s: up to %d searches at once", self.name, self.config.max_concurrent)
        try:
            while not stop.is_set():
                try:
                    self.turn()
                except (QueueUnavailableError, SQLAlchemyError) as e:
                    log.warning("dispatcher %s: %s; retrying", self.name, _first_line(e))
                    self._reconcile.last = float("-inf")  # Redis may have lost the stream
                    stop.wait(1.0)
        finally:
            self.shutdown()

    def turn(self) -> None:
        """One pass of the loop (the tests drive it turn by turn)."""
        now = time.monotonic()
        self._reap()
        if self._heartbeat.due(now):
            self._beat()
        if self._reconcile.due(now):
            self.reconcile()
        free = self.config.max_concurrent - len(self.running)
        if free <= 0:
            time.sleep(min(1.0, self.config.poll_ms / 1000))
            return
        min_idle_ms = int(self.config.lease_seconds * 1000)
        jobs = self.queue.claim_stale(self.name, min_idle_ms=min_idle_ms, count=free)
        if not jobs:
            jobs = self.queue.read(self.name, free, block_ms=self.config.poll_ms)
        for job in jobs:
            self._start(job)

    def reconcile(self) -> int:
        """Enqueue the active searches that nobody holds; returns how many got an entry."""
        added = sum(self.queue.enqueue(search_id) for search_id in self.leases.orphans())
        if added:
            log.info("dispatcher %s: re-enqueued %d orphaned searches", self.name, added)
        return added

    def shutdown(self, grace_seconds: float | None = None) -> None:
        """Stop every driver, wait for them, give their leases back."""
        grace = self.config.cancel_grace_seconds if grace_seconds is None else grace_seconds
        for item in self.running.values():
            item.stopping = True
            item.driver.stop(grace)
        while self.running:
            for search_id, item in list(self.running.items()):
                status = item.driver.exit_status()
                if status is not None:
                    del self.running[search_id]
                    if not item.lost:
                        self._give_back(search_id, item, status)
            time.sleep(0.1)

    # steps

    def _start(self, job: Job) -> None:
        if job.search_id in self.running:
            return  # a second entry for a search this dispatcher runs already
        claim = self.leases.claim(job.search_id, self.name)
        if claim is not Claim.TAKEN:
            log.info("dispatcher %s: search %s %s", self.name, job.search_id, claim.value)
            self.queue.ack(job)
            return
        attempt = self.store.get(job.search_id).attempts
        try:
            driver = self.launcher.launch(job.search_id, attempt)
        except Exception as e:
            self.store.mark_finished(job.search_id, "failed", error=f"cannot launch: {e}")
            self.leases.release(job.search_id, self.name)
            self.queue.ack(job)
            log.exception("dispatcher %s: cannot launch search %s", self.name, job.search_id)
            return
        log.info("dispatcher %s: search %s -> %s", self.name, job.search_id, driver.description)
        self.running[job.search_id] = _Running(job, driver)

    def _reap(self) -> None:
        for search_id, item in list(self.running.items()):
            status = item.driver.exit_status()
            if status is None:
                continue
            del self.running[search_id]
            log.info("dispatcher %s: %s exited with %d", self.name, item.driver.description, status)
            if not item.lost:
                self._settle(search_id, item, status, failure=not item.stopping)

    def _settle(self, search_id: str, item: _Running, status: int, *, failure: bool) -> None:
        """After a driver exits: the row says how the search ended. One it left active is
        cancelled (a cancel was pending), failed (``failure`` and attempts used up), or queued
        again with a fresh entry, to resume from its last checkpoint."""
        record = self.store.get(search_id)
        if record.status == "cancelling":
            self.store.mark_finished(search_id, "cancelled")
        elif failure and record.status in ACTIVE_STATUSES and killed_by_sigkill(status):
            error = driver_killed(record.spec, status)  # for memory: it would be again
            self.store.mark_finished(search_id, "failed", error=error)
        elif (
            failure
            and record.status in ACTIVE_STATUSES
            and record.attempts >= self.config.max_attempts
        ):
            self.store.mark_finished(
                search_id,
                "failed",
                error=f"the driver exited with status {status} on all {record.attempts} attempts",
            )
        self.leases.release(search_id, self.name)
        self.queue.ack(item.job)
        if self.store.get(search_id).status in ACTIVE_STATUSES:
            self.queue.enqueue(search_id)

    def _beat(self) -> None:
        ids = list(self.running)
        held = set(self.leases.heartbeat(self.name, ids))
        self.queue.touch(self.name, [item.job for item in self.running.values()])
        for search_id, item in self.running.items():
            if search_id not in held and not item.lost:
                log.warning("dispatcher %s: lost the lease of %s", self.name, search_id)
                item.lost = item.stopping = True
                item.driver.stop(self.config.cancel_grace_seconds)
            elif not item.stopping and self.leases.is_cancelling(search_id):
                # The driver stops by itself at its next step; the grace covers a stuck one.
                now = time.monotonic()
                if item.cancel_deadline is None:
                    item.cancel_deadline = now + self.config.cancel_grace_seconds
                elif now > item.cancel_deadline:
                    log.warning("dispatcher %s: %s ignores its cancel", self.name, search_id)
                    item.stopping = True
                    item.driver.stop(grace_seconds=10.0)

    def _give_back(self, search_id: str, item: _Running, status: int) -> None:
        """Settle a search this dispatcher stopped on shutdown; if Redis or the database is
        down now, the lease runs out and another dispatcher's reconciliation takes it."""
        try:
            self._settle(search_id, item, status, failure=False)
        except (QueueUnavailableError, SQLAlchemyError) as e:
            log.warning("dispatcher %s: cannot hand back %s: %s", self.name, search_id, e)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
