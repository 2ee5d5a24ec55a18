"""Keeps ``segnas serve``'s dispatcher processes running: one that exits is started again.

A dispatcher survives the errors of its own loop (``workers.dispatcher``); this covers what
ends the process anyway (a kill, the out-of-memory killer, an error at start-up). A process
that exits soon after it started is restarted after a pause that doubles with each quick exit
(a crash loop does not spin); one that ran a while is restarted at once.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from workers.processes import die_with_parent

log = logging.getLogger("segnas.supervisor")

Process = subprocess.Popen[bytes]


def restart(process: Process) -> Process:
    """The same command again, as ``LocalStack`` starts a dispatcher (output inherited)."""
    return subprocess.Popen(process.args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())


@dataclass
class _Life:
    started: float
    pause: float = 0.0  # before the next restart, once it has exited
    exited: float | None = None


class Supervisor:
    """Watches ``processes`` (a list it changes in place: a restarted one takes the dead
    one's place, so whoever stops them later stops the new one).

    Args:
        processes: the child processes.
        start: how a dead one is started again.
        clock: monotonic seconds (tests step it).
        quick_seconds: an exit sooner than this after the start counts as a crash.
        max_pause_seconds: the longest pause before a restart.
    """

    def __init__(
        self,
        processes: list[Process],
        *,
        start: Callable[[Process], Process] = restart,
        clock: Callable[[], float] = time.monotonic,
        quick_seconds: float = 60.0,
        max_pause_seconds: float = 60.0,
    ) -> None:
        self.processes = processes
        self.start = start
        self.clock = clock
        self.quick_seconds = quick_seconds
        self.max_pause_seconds = max_pause_seconds
        self.restarts = 0
        self._lives = [_Life(clock()) for _ in processes]

    def check(self) -> int:
        """Restart the processes that exited and whose pause is over; returns how many."""
        now = self.clock()
        restarted = 0
        for i, process in enumerate(self.processes):
            status = process.poll()
            if status is None:
                continue
            life = self._lives[i]
            if life.exited is None:
                life.exited = now
                quick = now - life.started < self.quick_seconds
                life.pause = min(self.max_pause_seconds, max(1.0, 2 * life.pause)) if quick else 0
                log.warning(
                    "dispatcher pid %d exited with %s; starting another in %.0f s",
                    process.pid,
                    status,
                    life.pause,
                )
            if now - life.exited < life.pause:
                continue
            self.processes[i] = self.start(process)
            self._lives[i] = _Life(now, pause=life.pause)
            self.restarts += 1
            restarted += 1
            log.info("dispatcher restarted: pid %d", self.processes[i].pid)
        return restarted

    def run(self, stop: threading.Event, every_seconds: float = 1.0) -> None:
        """Check every ``every_seconds`` until ``stop`` is set."""
        while not stop.wait(every_seconds):
            try:
                self.check()
            except Exception:
                log.exception("supervisor: cannot restart a dispatcher; trying again")


@contextmanager
def supervised(processes: list[Process]) -> Iterator[Supervisor]:
    """A ``Supervisor`` over ``processes`` in a thread, for the block's duration; it is
    stopped first on the way out, so that the processes can then be stopped for good."""
    supervisor = Supervisor(processes)
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield supervisor
    finally:
        stop.set()
        thread.join()
