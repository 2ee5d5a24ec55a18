"""A search that died for memory fails at once, saying what it asked for, instead of being
retried: a replica's out-of-memory error in the driver, a SIGKILL'd driver in the dispatcher."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray
import torch
from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError

from errors import SearchFaultError
from jobqueue import JobQueue
from searchspec.spec import load_search_spec
from storage.searches import SearchStore
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.group import ReplicaLostError, gather
from workers.launchers import LocalProcess
from workers.memory import driver_killed, is_memory_error, killed_by_sigkill

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
ASKED = "it asked for 1 replica x (1 CPU), estimated 4.3 MiB per replica"


def task_error(cause: BaseException) -> RayTaskError:
    return RayTaskError("train_steps", "Traceback (most recent call last): ...", cause)


@pytest.mark.parametrize(
    ("error", "memory"),
    [
        (OutOfMemoryError("Task was killed due to the node running low on memory."), True),
        (task_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")), True),
        (task_error(MemoryError()), True),
        (RayActorError(error_msg="Worker exit type: NODE_OUT_OF_MEMORY Worker exit detail"), True),
        (RayActorError(error_msg="The actor died unexpectedly before finishing this task."), False),
        (task_error(ValueError("shapes do not match")), False),
    ],
)
def test_memory_errors_are_told_from_other_failures(error: BaseException, memory: bool) -> None:
    assert is_memory_error(error) is memory


def test_sigkill_is_recognised_as_subprocess_and_a_shell_report_it() -> None:
    assert killed_by_sigkill(-9) and killed_by_sigkill(137)
    assert not any(killed_by_sigkill(s) for s in (None, 0, 1, 3, -15))


def test_the_error_says_what_the_search_asked_for() -> None:
    error = driver_killed(load_search_spec(TINY).model_dump(mode="json"), -9)
    assert error.startswith("the driver was killed by SIGKILL (exit status -9)")
    assert ASKED in error and "not retried" in error and "\n" not in error


@ray.remote(num_cpus=0)
class Replica:
    def train(self, exhaust: bool) -> None:
        if exhaust:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.usefixtures("local_ray")
def test_a_replica_out_of_memory_fails_the_search_instead_of_a_recovery() -> None:
    spec = load_search_spec(TINY)
    replica = Replica.remote()  # type: ignore[attr-defined]
    with pytest.raises(SearchFaultError) as caught:
        gather([replica.train.remote(True)], spec)
    message = str(caught.value)
    assert message.startswith("a replica ran out of memory (")
    assert "CUDA out of memory" in message and ASKED in message
    ray.kill(replica)
    with pytest.raises(ReplicaLostError):  # a replica that merely died is still recovered
        gather([replica.train.remote(False)], spec)


class SigkilledDrivers:
    """Launches real processes that end as a driver the kernel's OOM killer ends: SIGKILL."""

    def __init__(self) -> None:
        self.launched = 0

    def launch(self, search_id: str, *_lease: Any) -> LocalProcess:
        self.launched += 1
        code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
        return LocalProcess(process, f"driver of {search_id} (pid {process.pid})")


@pytest.mark.parametrize(
    ("db_url", "redis_url"), [("sqlite", "embedded")], indirect=True, ids=["sqlite+embedded"]
)
def test_a_sigkilled_driver_fails_its_search_at_once(
    store: SearchStore, job_queue: JobQueue
) -> None:
    search_id = store.create(load_search_spec(TINY).model_dump(mode="json")).id
    job_queue.enqueue(search_id)
    launcher = SigkilledDrivers()
    dispatcher = Dispatcher(store, job_queue, launcher, DispatcherConfig(poll_ms=50))
    deadline = time.monotonic() + 120
    while store.get(search_id).status not in ("failed", "succeeded") or dispatcher.running:
        assert time.monotonic() < deadline, "the search did not end"
        dispatcher.turn()
    dispatcher.shutdown(grace_seconds=0)
    record = store.get(search_id)
    assert record.status == "failed" and launcher.launched == 1
    assert record.error is not None
    assert record.error.startswith("the driver was killed by SIGKILL") and ASKED in record.error
    assert job_queue.waiting() == []
