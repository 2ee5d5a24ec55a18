"""``segnas serve``'s supervisor restarts a dispatcher process that exits: real processes, a
clock the test steps."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from segnas.supervisor import Supervisor, restart

IDLE = [sys.executable, "-c", "import time; time.sleep(3600)"]


class StepClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Children:
    """Two idle child processes, and every one started in their place (killed at the end)."""

    def __init__(self) -> None:
        self.processes = [subprocess.Popen(IDLE), subprocess.Popen(IDLE)]
        self.started = list(self.processes)

    def start(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.started.append(restart(process))
        return self.started[-1]


@pytest.fixture
def children() -> Iterator[Children]:
    children = Children()
    yield children
    for process in children.started:
        process.kill()
        process.wait()


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def test_a_dispatcher_that_dies_is_started_again_in_its_place(
    children: Children,
) -> None:
    clock = StepClock()
    processes = children.processes
    supervisor = Supervisor(processes, start=children.start, clock=clock)
    first, second = processes
    assert supervisor.check() == 0
    clock.now = 600.0  # it ran a while: restarted at once
    kill(first)
    assert supervisor.check() == 1
    assert processes[0] is not first and processes[1] is second
    assert processes[0].poll() is None and processes[0].args == first.args


def test_a_dispatcher_that_keeps_dying_is_restarted_after_a_doubling_pause(
    children: Children,
) -> None:
    clock = StepClock()
    processes = children.processes
    supervisor = Supervisor(processes, start=children.start, clock=clock)
    pauses = []
    for _ in range(4):
        kill(processes[0])  # dies at once after each start
        died = clock.now
        assert supervisor.check() == 0
        while supervisor.check() == 0:
            clock.now += 0.5
        pauses.append(clock.now - died)
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    assert supervisor.restarts == 4 and processes[1].poll() is None
