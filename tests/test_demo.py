"""``segnas demo`` (what ``make demo`` runs) end to end: the service on embedded defaults, a
search submitted through ``POST /searches``, its result and page printed, then exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_serves_submits_follows_and_prints_the_result(tmp_path: Path) -> None:
    env = {**os.environ, "SEGNAS_DATA_DIR": str(tmp_path / "data"), "RAY_AUTH_MODE": "disabled"}
    for name in ("DATABASE_URL", "REDIS_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "segnas.cli", "demo", "--exit", "--config", str(TINY),
         "--port", str(port)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("search ") and lines[0].endswith(" succeeded")
    search_id = lines[0].split()[1]
    assert any(line.startswith("best architecture") for line in lines)
    assert any(line.startswith("miou ") for line in lines)  # the validation metrics table
    assert lines[-1] == f"page: http://127.0.0.1:{port}/searches/{search_id}"
    assert f"search {search_id} queued" in done.stderr
    # Everything it kept is in the data folder: the database and Redis's files; no checkpoint
    # outlives a search that succeeded (checkpoints.keep_after_success is off by default).
    data = tmp_path / "data"
    assert (data / "segnas.db").is_file()
    assert not (data / "checkpoints" / search_id).exists()
