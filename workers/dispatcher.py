"""The dispatcher (``segnas worker``): takes search jobs from the Redis stream and runs them.

One loop, one thread, each turn:

1. reap drivers that ended, and settle their searches (a driver that died with its search
   still active gets it re-enqueued, up to ``max_attempts``);
2. heartbeat: renew the database leases of the searches it runs and the idle time of their
   stream entries; stop a driver whose lease another dispatcher took over; kill a driver that
   ignores a cancel past its grace;
3. reconcile: enqueue every active search that nobody holds a live lease on and that has no
   live stream entry (an insert whose enqueue never happened, a Redis that restarted empty,
   a search whose dispatcher died, an entry lost while its id stayed in the id set);
4. with free slots: claim entries whose consumer went silent (``XAUTOCLAIM``), then read new
   ones, take each search's lease in the database and launch its driver;
5. record its own heartbeat in Redis, for ``/healthz`` (``jobqueue.heartbeats``).

The database lease is the fence: a stream entry delivered twice, or to two dispatchers,
launches at most one driver, and a driver started under a lease that another dispatcher has
taken over since writes nothing more (``storage.fencing``). A turn that fails, whatever the
error (Redis or the database down, the Ray Jobs API unreachable, a bug), is logged and the
next one comes after a pause that doubles with each failure in a row, never longer than the
heartbeat interval. Shutting down, it keeps renewing the leases of the drivers it waits for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError

from jobqueue import DispatcherHeartbeats, Job, JobQueue, QueueUnavailableError
from storage.leases import Claim, Fence, LeaseLostError, SearchLeases
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
        backoff_seconds: pause after a failed turn; it doubles with each failure in a row, up
            to ``heartbeat_seconds``.
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
    backoff_seconds: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _check(self) -> DispatcherConfig:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("heartbeat_seconds must be at most half of lease_seconds")
        return self


SHUTDOWN_MARGIN_SECONDS = 10.0  # past the grace, how long shutdown waits for stopped drivers


@dataclass
class _Running:
    job: Job
    driver: Launched
    fence: Fence  # the lease the driver was launched under
    stopping: bool = False  # stopped by this dispatcher: a stuck cancel, a lost lease, shutdown
    stop_sent: bool = False  # the stop reached the driver (a Ray Jobs API may be down)
    stop_grace: float = 0.0
    lost: bool = False  # another dispatcher holds the lease now: leave the row alone
    cancel_deadline: float | None = None  # a cancel is pending; kill the driver after this
    unreachable: bool = False  # its status could not be read last time (logged once)


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
    """Runs search jobs from ``queue`` with ``launcher``, keeping ``store``'s leases.

    Args:
        clock: monotonic seconds, for the heartbeat and reconcile intervals (tests step it).
    """

    def __init__(
        self,
        store: SearchStore,
        queue: JobQueue,
        launcher: Launcher,
        config: DispatcherConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.queue = queue
        self.launcher = launcher
        self.config = config or DispatcherConfig()
        self.leases = SearchLeases(store, lease_seconds=self.config.lease_seconds)
        self.heartbeats = DispatcherHeartbeats(queue)
        self.running: dict[str, _Running] = {}
        self._clock = clock
        self._heartbeat = _Clock(self.config.heartbeat_seconds)
        self._reconcile = _Clock(self.config.reconcile_seconds)
        self._failures = 0
        self._shutdown_deadline = float("inf")

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
                stop.wait(self.safe_turn())
        finally:
            self.shutdown()

    def safe_turn(self) -> float:
        """One turn that survives any error; returns the pause before the next one (seconds):
        none after a turn that worked, else one that doubles with each failure in a row, up
        to the heartbeat interval (leases are renewed in time once the database answers)."""
        try:
            self.turn()
        except Exception as e:
            self._failures += 1
            self._reconcile.last = float("-inf")  # Redis may have lost the stream
            doubling = self.config.backoff_seconds * 2 ** min(self._failures - 1, 16)
            pause = min(self.config.heartbeat_seconds, doubling)
            if isinstance(e, (QueueUnavailableError, SQLAlchemyError)):
                log.warning("dispatcher %s: %s; again in %.1f s", self.name, _first_line(e), pause)
            else:
                log.exception("dispatcher %s: the turn failed; again in %.1f s", self.name, pause)
            return pause
        self._failures = 0
        return 0.0

    def turn(self) -> None:
        """One pass of the loop (the tests drive it turn by turn)."""
        now = self._clock()
        self._reap()
        if self._heartbeat.due(now):
            self._beat()
        if self._reconcile.due(now):
            self.reconcile()
        free = self.config.max_concurrent - len(self.running)
        if free > 0:
            min_idle_ms = int(self.config.lease_seconds * 1000)
            jobs = self.queue.claim_stale(self.name, min_idle_ms=min_idle_ms, count=free)
            if not jobs:
                jobs = self.queue.read(self.name, free, block_ms=self.config.poll_ms)
            for job in jobs:
                self._start(job)
        else:
            time.sleep(min(1.0, self.config.poll_ms / 1000))
        self.heartbeats.beat(self.name, ttl_seconds=self.config.lease_seconds)

    def reconcile(self) -> int:
        """Enqueue the active searches that nobody holds, healing lost entries; returns how
        many got an entry."""
        added = self.queue.enqueue_all(self.leases.orphans())
        if added:
            log.info("dispatcher %s: re-enqueued %d orphaned searches", self.name, added)
        return added

    def shutdown(self, grace_seconds: float | None = None) -> None:
        """Stop every driver, wait for them (renewing their leases), give their leases back."""
        self.begin_shutdown(grace_seconds)
        while not self.shutdown_turn():
            time.sleep(0.1)
        with contextlib.suppress(QueueUnavailableError):  # else the key lapses by itself
            self.heartbeats.forget(self.name)

    def begin_shutdown(self, grace_seconds: float | None = None) -> None:
        """Ask every driver to stop within ``grace_seconds`` (default: the cancel grace)."""
        grace = self.config.cancel_grace_seconds if grace_seconds is None else grace_seconds
        for item in self.running.values():
            self._stop(item, grace)
        self._shutdown_deadline = self._clock() + grace + SHUTDOWN_MARGIN_SECONDS

    def shutdown_turn(self) -> bool:
        """One pass of the shutdown: hand back the searches whose drivers stopped, renew the
        leases of the others; True when none is left, or past the deadline (a driver whose
        status cannot be read: its lease lapses, and its successor stops it)."""
        for search_id, item in list(self.running.items()):
            if not item.stop_sent:
                self._stop(item, item.stop_grace)
            status = self._exit_status(item)
            if status is not None:
                del self.running[search_id]
                if not item.lost:
                    self._give_back(search_id, item, status)
        if not self.running:
            return True
        now = self._clock()
        if self._heartbeat.due(now):
            try:
                self._beat()
            except Exception as e:
                log.warning("dispatcher %s: heartbeat: %s", self.name, _first_line(e))
        if now > self._shutdown_deadline:
            log.warning(
                "dispatcher %s: %d drivers did not stop; their leases lapse",
                self.name,
                len(self.running),
            )
            return True
        return False

    # steps

    def _start(self, job: Job) -> None:
        if job.search_id in self.running:
            return  # a second entry for a search this dispatcher runs already
        claim = self.leases.claim(job.search_id, self.name)
        if claim is not Claim.TAKEN:
            log.info("dispatcher %s: search %s %s", self.name, job.search_id, claim.value)
            self.queue.ack(job)
            return
        fence = Fence(self.name, self.store.get(job.search_id).attempts)
        try:
            driver = self.launcher.launch(job.search_id, fence)
        except Exception as e:
            self._launch_failed(job, fence, e)
            return
        log.info("dispatcher %s: search %s -> %s", self.name, job.search_id, driver.description)
        self.running[job.search_id] = _Running(job, driver, fence)

    def _launch_failed(self, job: Job, fence: Fence, error: Exception) -> None:
        """The last attempt fails the search; an earlier one gives the lease back and leaves
        the entry pending: it is claimed again once idle a lease long (the pause before the
        next try)."""
        log.exception("dispatcher %s: cannot launch search %s", self.name, job.search_id)
        if fence.attempt >= self.config.max_attempts:
            try:
                message = f"cannot launch: {_first_line(error)}"
                self.store.mark_finished(job.search_id, "failed", error=message, fence=fence)
            except LeaseLostError:
                return
            self.queue.ack(job)
        self.leases.release(job.search_id, self.name, attempt=fence.attempt)

    def _reap(self) -> None:
        for search_id, item in list(self.running.items()):
            status = self._exit_status(item)
            if status is None:
                continue
            if not item.lost:
                try:
                    self._settle(search_id, item, status, failure=not item.stopping)
                except Exception as e:
                    log.warning("dispatcher %s: cannot settle %s yet: %s", self.name, search_id, e)
                    continue
            del self.running[search_id]
            log.info("dispatcher %s: %s exited with %d", self.name, item.driver.description, status)

    def _exit_status(self, item: _Running) -> int | None:
        """The driver's exit status; None while it runs, or when it cannot be asked now."""
        try:
            status = item.driver.exit_status()
        except Exception as e:
            if not item.unreachable:
                log.warning("dispatcher %s: %s: %s", self.name, item.driver.description, e)
            item.unreachable = True
            return None
        item.unreachable = False
        return status

    def _stop(self, item: _Running, grace: float) -> None:
        """Stop the driver; one that cannot be reached now is tried again at the next beat."""
        item.stopping, item.stop_grace = True, grace
        try:
            item.driver.stop(grace)
        except Exception as e:
            log.warning("dispatcher %s: cannot stop %s: %s", self.name, item.driver.description, e)
            return
        item.stop_sent = True

    def _settle(self, search_id: str, item: _Running, status: int, *, failure: bool) -> None:
        """After a driver exits: the row says how the search ended. One it left active is
        cancelled (a cancel was pending), failed (``failure`` and attempts used up), or queued
        again with a fresh entry, to resume from its last checkpoint. A search whose lease
        moved on (this dispatcher went silent too long) is its new holder's: left alone."""
        record = self.store.get(search_id)
        fence = item.fence
        if (record.worker, record.attempts) != (fence.worker, fence.attempt):
            log.info("dispatcher %s: %s has another lease now", self.name, search_id)
            return
        try:
            if record.status == "cancelling":
                self.store.mark_finished(search_id, "cancelled", fence=fence)
            elif failure and record.status in ACTIVE_STATUSES and killed_by_sigkill(status):
                error = driver_killed(record.spec, status)  # for memory: it would be again
                self.store.mark_finished(search_id, "failed", error=error, fence=fence)
            elif (
                failure
                and record.status in ACTIVE_STATUSES
                and record.attempts >= self.config.max_attempts
            ):
                error = f"the driver exited with status {status} on all {record.attempts} attempts"
                self.store.mark_finished(search_id, "failed", error=error, fence=fence)
        except LeaseLostError:
            log.info("dispatcher %s: %s has another lease now", self.name, search_id)
            return
        self.leases.release(search_id, self.name, attempt=fence.attempt)
        self.queue.ack(item.job)
        if self.store.get(search_id).status in ACTIVE_STATUSES:
            self.queue.enqueue(search_id)

    def _beat(self) -> None:
        live = {k: v for k, v in self.running.items() if not v.lost}
        held = set(self.leases.heartbeat(self.name, list(live)))
        # Never the entries of lost searches: XCLAIM would take them back from their holder.
        self.queue.touch(self.name, [item.job for item in live.values()])
        grace = self.config.cancel_grace_seconds
        for search_id, item in self.running.items():
            if item.stopping and not item.stop_sent:
                self._stop(item, item.stop_grace)
            if item.lost or item.stopping:
                continue
            if search_id not in held:
                log.warning("dispatcher %s: lost the lease of %s", self.name, search_id)
                item.lost = True
                self._stop(item, grace)
            elif self.leases.is_cancelling(search_id):
                # The driver stops by itself at its next step; the grace covers a stuck one.
                now = self._clock()
                if item.cancel_deadline is None:
                    item.cancel_deadline = now + grace
                elif now > item.cancel_deadline:
                    log.warning("dispatcher %s: %s ignores its cancel", self.name, search_id)
                    self._stop(item, 10.0)

    def _give_back(self, search_id: str, item: _Running, status: int) -> None:
        """Settle a search this dispatcher stopped on shutdown; if Redis or the database is
        down now, the lease runs out and another dispatcher's reconciliation takes it."""
        try:
            self._settle(search_id, item, status, failure=False)
        except Exception as e:
            log.warning("dispatcher %s: cannot hand back %s: %s", self.name, search_id, e)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
