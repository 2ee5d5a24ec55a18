"""``ray job submit`` against a real local Ray head: the cluster path of a search."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.searches import SearchStore

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = BIN / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, str]]:
    """A Ray head started with ``ray start --head --block`` in its own process group, so that
    stopping it ends exactly its processes (``ray stop`` would end every Ray on the machine).
    Its dashboard agent, which runs the submitted jobs, gets a free port too: at its default
    (52365) it would share with any other Ray on the machine, and an agent that cannot bind
    stays up without the HTTP service, so the head never has an agent to submit to."""
    if not RAY.exists():
        pytest.skip(f"no ray command next to {sys.executable}")
    # Every port a head binds by default to a fixed number gets a free one, so that two test
    # modules' heads can run at once (pytest-xdist): the Ray client server's 10001 too.
    port, dashboard, agent, client, metrics = (free_port() for _ in range(5))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # explicit, as Ray warns otherwise and CI must not guess
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # A short folder of its own: Ray's unix sockets live under it, and a socket path has at
    # most 107 bytes (under pytest-xdist, the test folders' paths are longer).
    temp_dir = Path(tempfile.mkdtemp(prefix="segnas-ray-"))
    log = temp_dir / "head.log"  # what it said, for the failure message
    head = subprocess.Popen(
        [
            str(RAY), "start", "--head", "--block", f"--port={port}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
            f"--ray-client-server-port={client}", f"--metrics-export-port={metrics}",
            "--num-cpus=2", f"--temp-dir={temp_dir}",
            "--object-store-memory=200000000", "--disable-usage-stats",
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_jobs_api(address, env, head, log)
        yield {**env, "RAY_ADDRESS": address}
    finally:
        # A graceful stop of `ray start --block` takes 30 to 60 s here; every process of the
        # head is in its session, so after a short grace the group is simply killed.
        with contextlib.suppress(ProcessLookupError):  # it may have exited by itself
            os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(
    address: str, env: dict[str, str], head: subprocess.Popen, log: Path
) -> None:
    """Poll ``ray job list`` until the head's Jobs API answers (a state, bounded at 120 s).

    The head serves ``ray job list`` itself; a submission also needs the head node's dashboard
    agent, which may register later: ``submit_job`` waits for that."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            said = log.read_text(errors="replace").strip().splitlines()[-15:]
            pytest.fail(f"ray start --head exited with {head.returncode}:\n" + "\n".join(said))
        probe = subprocess.run(
            [str(RAY), "job", "list", "--address", address],
            env=env,
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            return
        time.sleep(1)
    pytest.fail("the Ray head's Jobs API did not answer within 120 s")


# The head's answer (HTTP 500) to a submission while its node's dashboard agent has not
# registered yet (Ray's job_head.py); no job is created.
NO_AGENT = "No available agent to submit job"


def submit_job(env: dict[str, str], *entrypoint: str) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` to ``RAY_ADDRESS``, waiting for the job's end.

    The head takes jobs only once its node's dashboard agent has registered with the GCS,
    which under load comes after the Jobs API answers; until then it waits 10 s for the agent
    and refuses with ``NO_AGENT`` ("please try again later"). The submission is retried on
    exactly that refusal, for up to 120 s; any other outcome is returned."""
    deadline = time.monotonic() + 120
    while True:
        job = subprocess.run(
            [str(RAY), "job", "submit", "--address", env["RAY_ADDRESS"], "--", *entrypoint],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        refused = (
            job.returncode != 0
            and NO_AGENT in job.stderr + job.stdout
            and "submitted successfully" not in job.stdout
        )
        if not refused:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"the Ray head still had no job agent after 120 s: {job.stderr[-2000:]}")
        time.sleep(1)


def test_a_search_submitted_as_a_ray_job_writes_its_rows(
    ray_head: dict[str, str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'segnas.db'}"
    job = submit_job(
        ray_head,
        sys.executable, str(ROOT / "deploy" / "ray" / "submit.py"),
        "--config", str(ROOT / "configs" / "tiny.yaml"), "--set", "epochs=1",
        "--db", db, "--checkpoint-dir", str(tmp_path / "checkpoints"), "--json",
    )  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    outcome = json.loads(
        next(line for line in job.stdout.splitlines() if line.startswith('{"search_id"'))
    )
    assert outcome["status"] == "succeeded"

    store = SearchStore(db)
    try:
        search = store.get(outcome["search_id"])
        assert search.status == "succeeded"
        samples = store.samples(outcome["search_id"])
        assert len(samples) == outcome["samples"] > 0
        assert store.result(outcome["search_id"]).arch == outcome["best_arch"]
        assert store.last_checkpoint(outcome["search_id"]) is None  # none kept after success
    finally:
        store.close()
