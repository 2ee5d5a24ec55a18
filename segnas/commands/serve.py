"""``segnas serve``: the API, the web page and a dispatcher, on embedded defaults.

Nothing set: SQLite, an embedded Redis and a local Ray per search, all under
``SEGNAS_DATA_DIR`` (default ``.segnas``). ``DATABASE_URL``, ``REDIS_URL`` and ``RAY_ADDRESS``
switch to PostgreSQL, a Redis server and a Ray cluster.
"""

from __future__ import annotations

import argparse
import socket


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000)")
    parser.add_argument(
        "--dispatchers",
        type=int,
        default=1,
        metavar="N",
        help="dispatcher processes to start with the API (1; 0: the API only)",
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=1, metavar="N", help="searches per dispatcher (1)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="API worker processes (1)"
    )


def check_port(host: str, port: int) -> None:
    """Raises ``ConfigError`` when ``host:port`` cannot be listened on."""
    from supernet.errors import ConfigError

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            message = f"cannot listen on {host}:{port} ({e.strerror}); pass --port"
            raise ConfigError(message) from None


def check_counts(args: argparse.Namespace) -> None:
    from supernet.errors import ConfigError

    if args.dispatchers < 0 or args.max_concurrent < 1 or args.workers < 1:
        raise ConfigError("--dispatchers must be >= 0, --max-concurrent and --workers >= 1")


WILDCARDS = ("0.0.0.0", "::", "")


def allow_listen_host(host: str) -> str | None:
    """Unless ``SEGNAS_ALLOWED_HOSTS`` is set, let the API answer to the address it listens
    on besides the loopback names (its workers read the environment). Returns a note when
    the address is a wildcard, whose requests must name an allowed host."""
    import os

    from service.settings import ALLOWED_HOSTS_ENV, LOOPBACK_HOSTS

    if os.environ.get(ALLOWED_HOSTS_ENV):
        return None
    if host in WILDCARDS:
        return (
            f"listening on every interface, but answering only requests for "
            f"{', '.join(LOOPBACK_HOSTS)}: set {ALLOWED_HOSTS_ENV} to the names clients use"
        )
    if host.lower().strip("[]") not in LOOPBACK_HOSTS:
        os.environ[ALLOWED_HOSTS_ENV] = ",".join((*LOOPBACK_HOSTS, host.strip("[]")))
    return None


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from segnas.stack import LocalStack

    check_counts(args)
    check_port(args.host, args.port)
    hosts_note = allow_listen_host(args.host)
    with LocalStack(dispatchers=args.dispatchers, max_concurrent=args.max_concurrent):
        print(f"segnas: serving on http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
        if hosts_note:
            print(f"segnas: {hosts_note}", flush=True)
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="warning",
        )
    return 0
