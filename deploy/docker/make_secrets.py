"""The secrets of docker-compose.yml, made once in its secrets volume (run as root by the
``secrets`` service before anything else starts; a file already there is kept, so an operator
may place their own first).

- ``postgres-password``: read by the postgres image (``POSTGRES_PASSWORD_FILE``) as root;
- ``pgpass``: the same password for libpq (``PGPASSFILE``), so that no ``DATABASE_URL`` and no
  Ray Job's environment carries it;
- ``redis.conf``: the Redis server's configuration, its password (``requirepass``) and the
  administrative commands switched off; read by the server as the redis image's user;
- ``redis-password``: the same password for segnas (``REDIS_PASSWORD_FILE``);
- ``ray-token``: Ray's token authentication (``RAY_AUTH_TOKEN_PATH``) on every node and client.

Every file is mode 0400 and belongs to the one user that reads it: segnas's (uid 10001, the
Dockerfile's), or the postgres and redis images' (uid 999).

    python deploy/docker/make_secrets.py /run/segnas-secrets
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SEGNAS_UID = 10001  # deploy/docker/Dockerfile's segnas user
IMAGE_UID = 999  # the postgres and redis images' own users
DISABLED_COMMANDS = (
    "CONFIG", "SAVE", "BGSAVE", "BGREWRITEAOF", "DEBUG", "MODULE", "SHUTDOWN", "REPLICAOF",
    "SLAVEOF", "MIGRATE", "FLUSHALL", "FLUSHDB", "ACL",
)  # fmt: skip


def write_once(path: Path, text: str, uid: int) -> None:
    """``text`` to ``path`` (0400, owned by ``uid``) unless the file is already there."""
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)


def read_or_make(path: Path, uid: int) -> str:
    write_once(path, secrets.token_urlsafe(32) + "\n", uid)
    return path.read_text().strip()


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # entered by three users; every file in it is its reader's only
    database = read_or_make(folder / "postgres-password", 0)
    write_once(folder / "pgpass", f"postgres:5432:segnas:segnas:{database}\n", SEGNAS_UID)
    redis = read_or_make(folder / "redis-password", SEGNAS_UID)
    config = ["appendonly yes", "dir /data", f"requirepass {redis}"]
    config += [f'rename-command {command} ""' for command in DISABLED_COMMANDS]
    write_once(folder / "redis.conf", "\n".join(config) + "\n", IMAGE_UID)
    write_once(folder / "ray-token", secrets.token_hex(32) + "\n", SEGNAS_UID)
    print(f"secrets in {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_secrets.py FOLDER")
    main(Path(sys.argv[1]))
