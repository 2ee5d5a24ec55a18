"""``segnas serve``: the API, the web page and a dispatcher, on embedded defaults.

Nothing set: SQLite, an embedded Redis and a local Ray per search, all under
``SEGNAS_DATA_DIR`` (default ``.segnas``). ``DATABASE_URL``, ``REDIS_URL`` and ``RAY_ADDRESS``
switch to PostgreSQL, a Redis server and a Ray cluster.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument(
        "--auth",
        choices=("required", "off"),
        help="required: every API call needs a token (the default on any address but "
        "loopback; the first admin token is written to SEGNAS_ADMIN_TOKEN_FILE, default "
        "DATA_DIR/admin-token); off: no accounts, for a server on loopback only (the default "
        "on 127.0.0.1)",
    )


def check_port(host: str, port: int) -> None:
    """Raises ``ConfigError`` when ``host:port`` cannot be listened on."""
    from errors import ConfigError

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            message = f"cannot listen on {host}:{port} ({e.strerror}); pass --port"
            raise ConfigError(message) from None


def check_counts(args: argparse.Namespace) -> None:
    from errors import ConfigError

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


def expect_dispatchers(count: int) -> None:
    """With dispatchers started here, the API's ``/healthz`` is degraded while none of them
    has a live heartbeat (unless ``SEGNAS_EXPECT_DISPATCHERS`` says otherwise)."""
    import os

    from service.settings import EXPECT_DISPATCHERS_ENV

    if count > 0:
        os.environ.setdefault(EXPECT_DISPATCHERS_ENV, "1")


def is_loopback(host: str) -> bool:
    import ipaddress

    name = host.lower().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def choose_auth(host: str, asked: str | None) -> str:
    """``required`` unless the server listens on loopback only; ``off`` is refused anywhere
    else (anyone who reaches the port would act as the admin).

    Raises:
        ConfigError: ``--auth off`` on an address that is not loopback.
    """
    from errors import ConfigError

    if asked == "off" and not is_loopback(host):
        raise ConfigError(
            f"--auth off on {host} would let anyone who reaches it act as the admin: "
            "use --auth required (the default there), or listen on 127.0.0.1"
        )
    return asked or ("off" if is_loopback(host) else "required")


def auth_line(auth: str) -> str:
    if auth == "off":
        return (
            "authentication off (loopback only: anyone on this machine acts as the admin; "
            "--auth required turns it on)"
        )
    return "authentication required (Authorization: Bearer TOKEN)"


def bootstrap_token() -> str:
    """The first admin token, in its file (``storage.accounts.bootstrap_admin_token``)."""
    from pathlib import Path

    from storage.accounts import ADMIN_TOKEN_FILE_ENV, bootstrap_admin_token, open_accounts
    from storage.engine import data_dir

    path = Path(os.environ.get(ADMIN_TOKEN_FILE_ENV) or data_dir() / "admin-token")
    accounts = open_accounts()
    try:
        return bootstrap_admin_token(accounts, path)
    finally:
        accounts.store.close()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from segnas.stack import LocalStack
    from segnas.supervisor import supervised
    from service.settings import AUTH_ENV
    from workers.ray_auth import check_ray_auth

    check_counts(args)
    auth = choose_auth(args.host, args.auth)
    if args.dispatchers:  # its searches' Ray: refused now rather than each search failing
        check_ray_auth(os.environ.get("RAY_ADDRESS"))
    check_port(args.host, args.port)
    hosts_note = allow_listen_host(args.host)
    expect_dispatchers(args.dispatchers)
    # The supervisor restarts a dispatcher that exits; it stops before the stack stops them.
    with (
        LocalStack(dispatchers=args.dispatchers, max_concurrent=args.max_concurrent) as stack,
        supervised(stack.workers),
    ):
        os.environ[AUTH_ENV] = auth  # the API's workers read it
        print(
            f"segnas: serving on http://{args.host}:{args.port}/ with {auth_line(auth)}  "
            "(Ctrl-C to stop)",
            flush=True,
        )
        if auth == "required":
            print(f"segnas: {bootstrap_token()}", flush=True)
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
