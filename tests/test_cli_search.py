"""``segnas search`` and ``segnas db`` as a user runs them: a separate process, real exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def segnas_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "SEGNAS_DATA_DIR": str(tmp_path / "data"),
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    return env


def segnas(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segnas.cli", *argv],
        cwd=tmp_path,
        env=segnas_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_search_json_reports_the_outcome_and_the_rows_are_in_the_data_folder(
    tmp_path: Path,
) -> None:
    done = segnas(tmp_path, "search", "--config", str(TINY), "--set", "epochs=1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "succeeded"
    assert outcome["reward"] == "miou"
    assert outcome["epochs"] == 1
    assert outcome["samples"] == 3 * 4 + 7  # 3 controller steps x 4, 6 derived + greedy
    assert all(isinstance(c, int) for c in outcome["best_arch"]) and len(outcome["best_arch"]) == 3
    assert 0 <= outcome["best_reward"] <= 1
    assert (tmp_path / "data" / "segnas.db").exists()
    # Retention at the defaults: a search that succeeded keeps no checkpoint (it is never resumed).
    assert not (tmp_path / "data" / "checkpoints" / outcome["search_id"]).exists()

    current = segnas(tmp_path, "db", "current", "--json")
    assert current.returncode == 0, current.stderr
    assert json.loads(current.stdout)["revision"] == json.loads(current.stdout)["head"]

    again = segnas(tmp_path, "search", "--resume", outcome["search_id"])
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"segnas: error: search {outcome['search_id']} has already succeeded: nothing to resume"
    )


def test_db_upgrade_then_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    up = segnas(tmp_path, "db", "upgrade", "--db", url, "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout.strip().splitlines()[-1])["revision"] is not None
    refused = segnas(tmp_path, "db", "downgrade", "--db", url)
    assert refused.returncode == 2 and "needs --revision" in refused.stderr
    down = segnas(tmp_path, "db", "downgrade", "--db", url, "--revision", "base", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout.strip().splitlines()[-1])["revision"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--config", "missing.yaml"], "cannot read config"),
        (["search", "--config", str(TINY), "--set", "shared.lrr=1"], "unknown field 'shared.lrr'"),
        (["search", "--config", str(TINY), "--set", "epochs=0"], "epochs"),
        (["search", "--config", str(TINY), "--set", "oops"], "expected KEY=VALUE"),
        (["search", "--resume", "abc", "--replicas", "2"], "--resume continues a search"),
        (["search", "--resume", "nosuchsearch"], "no search with id 'nosuchsearch'"),
        (["search", "--config", str(TINY), "--db", "not a url"], "is not a database URL"),
        (
            ["search", "--config", str(TINY), "--db", "postgresql://nobody@127.0.0.1:1/x"],
            "cannot use the database",
        ),
        (["db", "upgrade", "--revision", "nope"], "migration:"),
        (
            ["search", "--config", str(TINY), "--checkpoint-dir", str(TINY)],
            "cannot write checkpoints",
        ),
        (
            [
                "search",
                "--config",
                str(TINY),
                "--set",
                "resources.replicas=2",
                "--set",
                "resources.gpus_per_replica=0.5",
            ],
            "two nccl ranks",
        ),
        (
            ["search", "--config", str(TINY), "--set", "dataset={kind: voc, root: /no/such}"],
            "VOC root /no/such does not exist",
        ),
    ],
)
def test_search_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    done = segnas(tmp_path, *argv)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("segnas: error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


class SearchProcess:
    """``segnas search`` running in the background, its output going to files (a pipe nobody
    reads while the test waits could fill and stall it)."""

    def __init__(self, tmp_path: Path, *argv: str) -> None:
        self.db = tmp_path / "data" / "segnas.db"
        self._stderr_path = tmp_path / "search.stderr"
        with open(tmp_path / "search.stdout", "w") as out, open(self._stderr_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "segnas.cli", "search", *argv],
                cwd=tmp_path,
                env=segnas_env(tmp_path),
                stdout=out,
                stderr=err,
            )

    def stderr(self) -> str:
        return self._stderr_path.read_text()

    def query(self, sql: str) -> list[tuple]:
        """Rows of ``sql``, or none while the database or its tables do not exist yet."""
        if not self.db.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.OperationalError:
                return []  # tables not created yet (or the database is locked a moment)

    def wait_until(self, sql: str, what: str, bound_s: float = 300) -> None:
        """Wait for a state, not a time: until ``sql`` returns a row (bounded, as a safety net)."""
        deadline = time.monotonic() + bound_s
        while not self.query(sql):
            if self.process.poll() is not None:
                pytest.fail(f"search exited before {what}:\n{self.stderr()[-2000:]}")
            assert time.monotonic() < deadline, f"no {what} within {bound_s:g} s"
            time.sleep(0.1)

    def terminate_and_wait(self) -> str:
        """SIGTERM, then the exit: 130 with the resume hint, the search cancelled; its id."""
        assert self.process.poll() is None, self.stderr()[-2000:]
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)
        stderr = self.stderr()
        assert self.process.returncode == 130, stderr[-2000:]
        # The abseil failure-signal handler of Ray's core worker must not have taken SIGTERM
        # for a crash: it aborts the process (SIGABRT) 3 s later, whatever is still cleaning up.
        assert "SIGTERM received" not in stderr, stderr[-2000:]
        [(search_id, status, error)] = self.query("select id, status, error from searches")
        assert (status, error) == ("cancelled", "interrupted")
        assert f"continue with: segnas search --resume {search_id}" in stderr, stderr[-2000:]
        return search_id


@pytest.fixture
def start_search(tmp_path: Path) -> Iterator[Callable[..., SearchProcess]]:
    """Start ``segnas search`` in the background; one still running at the end is killed."""
    started: list[SearchProcess] = []

    def start(*argv: str) -> SearchProcess:
        started.append(SearchProcess(tmp_path, *argv))
        return started[-1]

    yield start
    for search in started:
        if search.process.poll() is None:
            search.process.kill()
            search.process.wait()


@pytest.mark.parametrize(
    ("epochs", "state", "what"),
    [
        # In the loop, once the first epoch is checkpointed. 10 epochs: the 9 after it are the
        # search's head start on the SIGTERM, and all the resumed search has to do (39 took the
        # resume past 600 s on a loaded machine).
        pytest.param(10, "select 1 from checkpoints", "first checkpoint row", id="mid-search"),
        # As soon as the search is running, that is while (or just before) the process starts
        # its local Ray.
        pytest.param(
            1,
            "select 1 from searches where status = 'running'",
            "running search",
            id="while-ray-starts",
        ),
    ],
)
def test_sigterm_marks_the_search_cancelled_and_it_resumes(
    tmp_path: Path,
    start_search: Callable[..., SearchProcess],
    epochs: int,
    state: str,
    what: str,
) -> None:
    """A search stopped by SIGTERM exits 130, cancelled and resumable, and resuming it
    finishes it."""
    search = start_search("--config", str(TINY), "--set", f"epochs={epochs}")
    search.wait_until(state, what)
    search_id = search.terminate_and_wait()

    resumed = segnas(tmp_path, "search", "--resume", search_id, "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["status"] == "succeeded"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost one
def test_a_sigterm_whose_exception_ray_init_loses_still_reaches_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """During ray.init, SIGTERM goes to Ray's handler (sys.exit), whose SystemExit is lost when
    it runs inside an at-fork hook: ensure_ray hands that SIGTERM to the handler it restores.
    And it switches off the crash handler that aborts a process 3 s after a SIGTERM."""
    import ray
    from ray._private import ray_constants

    from workers import runtime

    def ray_init(**kwargs: object) -> None:
        def ray_sigterm_handler(signum: int, frame: object) -> None:
            sys.exit(signum)

        signal.signal(signal.SIGTERM, ray_sigterm_handler)

        class AtFork:  # like an at-fork hook: Python ignores an exception raised in __del__
            def __del__(self) -> None:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs, in here, between two bytecodes
                    pass

        AtFork()
        assert ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER  # read by the core worker

    def callers_handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("caller's handler")

    monkeypatch.setattr(ray, "init", ray_init)
    monkeypatch.setattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", False)
    before = signal.signal(signal.SIGTERM, callers_handler)
    try:
        with pytest.raises(KeyboardInterrupt, match="caller's handler"):
            runtime._init(address="local")
        assert signal.getsignal(signal.SIGTERM) is callers_handler
        assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind
    finally:
        signal.signal(signal.SIGTERM, before)
