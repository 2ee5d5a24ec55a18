"""How a dispatcher starts a search driver: a local child process, or a Ray Job on a cluster.

Both hand back a ``Launched`` handle that the dispatcher polls (``exit_status``) and stops
(``stop``): SIGTERM first, so the driver releases its Ray resources, a kill after a grace.
The driver is told the lease it runs under (``--worker``, ``--attempt``): its fence.

A local driver dies with its dispatcher; a Ray Job outlives it. So before a search's Ray Job
is submitted, the search's earlier jobs still running (found by their metadata) are stopped.
Every call to the Ray Jobs API has a timeout: Ray's client has none, and a head that accepts
connections but does not answer would hold the dispatcher's loop forever.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from storage.fencing import Fence
from workers.memory import killed_by_sigkill
from workers.processes import die_with_parent
from workers.ray_auth import check_ray_auth

log = logging.getLogger(__name__)

JOB_MODULE = "workers.job"
SEARCH_METADATA = "segnas_search_id"  # the Ray Job metadata that names the job's search
RAY_API_TIMEOUT_SECONDS = 30.0


class Launched(Protocol):
    """A running search driver."""

    description: str

    def exit_status(self) -> int | None:
        """None while it runs; then its exit status (0 ended, 1 failed, other: interrupted)."""
        ...

    def stop(self, grace_seconds: float) -> None:
        """Ask it to stop; ``exit_status`` kills it if it is still there after the grace."""
        ...


class Launcher(Protocol):
    def launch(self, search_id: str, fence: Fence) -> Launched: ...


def job_arguments(search_id: str, fence: Fence) -> list[str]:
    """The driver's command line after the interpreter: the search and the lease it runs under."""
    return ["-m", JOB_MODULE, search_id, "--worker", fence.worker, "--attempt", str(fence.attempt)]


class LocalProcess:
    def __init__(self, process: subprocess.Popen[bytes], description: str) -> None:
        self.process = process
        self.description = description
        self._kill_at: float | None = None

    def exit_status(self) -> int | None:
        status = self.process.poll()
        if status is None and self._kill_at is not None and time.monotonic() > self._kill_at:
            log.warning("%s did not stop in time: killing it", self.description)
            self.process.kill()
            status = self.process.wait()
        return status

    def stop(self, grace_seconds: float) -> None:
        if self.process.poll() is None and self._kill_at is None:
            self.process.send_signal(signal.SIGTERM)
            self._kill_at = time.monotonic() + grace_seconds


class LocalLauncher:
    """Each search in a child process of its own, with its own local Ray.

    Args:
        log_dir: the driver's output goes to ``log_dir/<search id>.log``.
        env: extra environment for the child (the dispatcher's database, data folder).
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = env or {}

    def launch(self, search_id: str, fence: Fence) -> LocalProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        env.pop("RAY_ADDRESS", None)  # a local Ray of its own, never somebody's cluster
        log_path = self.log_dir / f"{search_id}.log"
        with open(log_path, "ab") as out:
            out.write(f"--- attempt {fence.attempt} ---\n".encode())
            out.flush()
            process = subprocess.Popen(
                [sys.executable, *job_arguments(search_id, fence)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the dispatcher only
                preexec_fn=die_with_parent(),
            )
        return LocalProcess(process, f"driver of {search_id} (pid {process.pid}, log {log_path})")


_RAY_JOB_EXIT = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 3}


class RayJob:
    def __init__(self, client: Any, submission_id: str) -> None:
        self.client = client
        self.submission_id = submission_id
        self.description = f"Ray Job {submission_id}"

    def exit_status(self) -> int | None:
        status = str(self.client.get_job_status(self.submission_id)).rsplit(".", 1)[-1]
        if status == "FAILED":  # the driver's own status: a SIGKILL (OOM) is not retried
            code = self.client.get_job_info(self.submission_id).driver_exit_code
            return code if killed_by_sigkill(code) else 1
        return _RAY_JOB_EXIT.get(status)

    def stop(self, grace_seconds: float) -> None:
        # Ray Jobs sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S.
        self.client.stop_job(self.submission_id)


class RayJobLauncher:
    """Each search as a Ray Job on the cluster at ``address`` (its dashboard, e.g.
    ``http://ray-head:8265``). The driver runs on the head node and reaches the database and
    the checkpoint folder through ``env`` (DATABASE_URL, SEGNAS_DATA_DIR).

    Args:
        timeout_seconds: longest wait for any one answer of the Jobs API.
    """

    def __init__(
        self,
        address: str,
        env: dict[str, str] | None = None,
        *,
        timeout_seconds: float = RAY_API_TIMEOUT_SECONDS,
    ) -> None:
        self.client = jobs_client(address, timeout_seconds)
        # The operator's placement timeout (workers.placement) reaches the cluster's drivers.
        timeout = {k: v for k, v in os.environ.items() if k == "SEGNAS_PLACEMENT_TIMEOUT_S"}
        self.env = {**timeout, **(env or {})}

    def launch(self, search_id: str, fence: Fence) -> RayJob:
        self.stop_earlier(search_id)
        submission_id = f"segnas-{search_id}-{fence.attempt}"
        self.client.submit_job(
            entrypoint=shlex.join(["python", *job_arguments(search_id, fence)]),
            submission_id=submission_id,
            runtime_env={"env_vars": self.env} if self.env else None,
            metadata={
                SEARCH_METADATA: search_id,
                "segnas_worker": fence.worker,
                "segnas_attempt": str(fence.attempt),
            },
        )
        return RayJob(self.client, submission_id)

    def stop_earlier(self, search_id: str) -> list[str]:
        """Stop the search's Ray Jobs that still run (a dispatcher that died left them);
        returns their submission ids. Their fence stops their writes already; this frees
        their resources for the new driver."""
        stopped = []
        for job in self.client.list_jobs():
            if (job.metadata or {}).get(SEARCH_METADATA) != search_id or job.status.is_terminal():
                continue
            log.warning("stopping %s, an earlier driver of search %s", job.submission_id, search_id)
            self.client.stop_job(job.submission_id)
            stopped.append(job.submission_id)
        return stopped


def jobs_client(address: str, timeout_seconds: float) -> Any:
    """A Ray ``JobSubmissionClient`` for ``address`` whose every HTTP request (the version
    check in its constructor too) gives up after ``timeout_seconds``. Ray's public methods
    take no timeout; they all go through ``_do_request``, which hands its keyword arguments
    to ``requests``."""
    from ray.job_submission import JobSubmissionClient

    check_ray_auth(address)

    class TimedClient(JobSubmissionClient):  # type: ignore[misc]
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_seconds)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedClient(address)


def jobs_address(ray_address: str) -> str:
    """The Ray Jobs API address for ``RAY_ADDRESS``: an ``http(s)://`` address as it is;
    a GCS address ``host:port`` becomes the dashboard on the same host, ``http://host:8265``."""
    if ray_address.startswith(("http://", "https://")):
        return ray_address
    host = ray_address.removeprefix("ray://").split(":")[0] or "127.0.0.1"
    return f"http://{host}:8265"
