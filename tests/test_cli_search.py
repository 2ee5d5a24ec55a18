"""``segnas search`` and ``segnas db`` as a user runs them: a separate process, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def segnas(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SEGNAS_DATA_DIR": str(tmp_path / "data"),
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "segnas.cli", *argv],
        cwd=tmp_path,
        env=env,
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
    assert (tmp_path / "data" / "checkpoints" / outcome["search_id"] / "epoch-00000.pt").exists()

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


def test_sigterm_marks_the_search_cancelled_and_it_resumes(tmp_path: Path) -> None:
    """A search stopped by SIGTERM is left resumable, and resuming it finishes it."""
    import signal
    import sqlite3
    import time

    env = {
        **os.environ,
        "SEGNAS_DATA_DIR": str(tmp_path / "data"),
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("DATABASE_URL", None)
    env.pop("RAY_ADDRESS", None)
    search = subprocess.Popen(
        [sys.executable, "-m", "segnas.cli", "search", "--config", str(TINY), "--set", "epochs=40"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "data" / "segnas.db"
    # Wait for a state, not a time: the first epoch's checkpoint row exists.
    deadline = 300
    for _ in range(deadline * 10):
        if search.poll() is not None:
            break
        if db.exists():
            with sqlite3.connect(db) as conn:
                try:
                    if conn.execute("select count(*) from checkpoints").fetchone()[0]:
                        break
                except sqlite3.OperationalError:
                    pass  # tables not created yet
        time.sleep(0.1)
    assert search.poll() is None, search.stderr.read()[-2000:] if search.stderr else ""
    search.send_signal(signal.SIGTERM)
    _, stderr = search.communicate(timeout=120)
    assert search.returncode == 130, stderr[-2000:]
    assert "segnas search --resume" in stderr
    with sqlite3.connect(db) as conn:
        search_id, status = conn.execute("select id, status from searches").fetchone()
    assert status == "cancelled"

    resumed = segnas(tmp_path, "search", "--resume", search_id, "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["status"] == "succeeded"
