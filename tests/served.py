"""A real ``segnas serve`` for the tests that need one (the browser tests, the command-line
client), and the polling they wait with. Imported by test modules as ``served``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

SERVER_START_S = 120

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    """Poll ``probe`` every second until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(1)


@dataclass(frozen=True)
class Server:
    base: str
    log_path: Path

    def print_output(self) -> None:
        _print_log(self.log_path)


def serve_env(data_dir: Path) -> dict[str, str]:
    """This environment with everything embedded in ``data_dir``: no server, token or
    authentication setting of the caller's."""
    env = {**os.environ, "SEGNAS_DATA_DIR": str(data_dir), "RAY_AUTH_MODE": "disabled"}
    for name in ("DATABASE_URL", "REDIS_URL", "RAY_ADDRESS", "SEGNAS_AUTH", "SEGNAS_TOKEN"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def running_server(data_dir: Path, *options: str) -> Iterator[Server]:
    """``segnas serve --host 127.0.0.1 OPTIONS`` on a free port over ``data_dir``, healthy
    before the block runs, stopped (with whatever it started) after it; its output in
    ``data_dir/serve.log``."""
    log_path = data_dir / "serve.log"
    port = free_port()
    command = [sys.executable, "-m", "segnas.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), *options]
    with log_path.open("wb") as log:
        # Its own session: teardown can end whatever the server left behind, and only that.
        process = subprocess.Popen(
            command,
            cwd=data_dir,
            env=serve_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(base, process, log_path)
        yield Server(base, log_path)
    finally:
        _stop(process)


def _wait_until_healthy(base: str, process: subprocess.Popen, log_path: Path) -> None:
    try:
        wait_until("GET /healthz to answer 200", lambda: _healthy(base, process), SERVER_START_S)
    except BaseException:
        _print_log(log_path)
        raise


def _healthy(base: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        pytest.fail(f"segnas serve exited with status {process.returncode}", pytrace=False)
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived the server


def _print_log(log_path: Path) -> None:
    text = log_path.read_text(errors="replace") if log_path.exists() else "(no output)"
    print(f"--- segnas serve output ({log_path}) ---\n{text[-20_000:]}", file=sys.stderr)
