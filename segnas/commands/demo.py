"""``segnas demo``: the service on embedded defaults, one search submitted through its API.

Starts what ``segnas serve`` starts, POSTs the default search (an empty body: the search of
``configs/shapes.yaml``) or ``--config`` to ``/searches``, shows a progress bar while polling
the search, then prints the best architecture, its metrics and the
URL of its page. In a terminal it keeps serving until Ctrl-C (open the page); with ``--exit``,
or when not run from a terminal, it ends after printing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="search spec (default: the default search, configs/shapes.yaml)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000)")
    parser.add_argument(
        "--exit", action="store_true", help="end after printing the result (for scripts)"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn
    import yaml

    from errors import SegnasError
    from searchspec.spec import load_search_spec
    from segnas.commands.serve import auth_line, check_port, choose_auth
    from segnas.stack import LocalStack
    from service.app import create_app
    from service.settings import AUTH_ENV
    from storage.engine import data_dir

    body: dict = {}  # the default search
    if args.config is not None:
        load_search_spec(args.config)  # a bad file fails here, in one line, before anything
        body = yaml.safe_load(args.config.read_text()) or {}
    auth = choose_auth(args.host, None)
    if auth != "off":
        raise SegnasError(
            f"segnas demo runs without accounts, on loopback only: {args.host} is not; "
            "use segnas serve there"
        )
    os.environ[AUTH_ENV] = auth
    check_port(args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    logs = data_dir().resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (
        open(logs / "demo-dispatcher.log", "a") as worker_log,
        LocalStack(dispatchers=1, worker_output=worker_log),
    ):
        config = uvicorn.Config(create_app(), host=args.host, port=args.port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        try:
            _wait_until_up(base, thread)
            print(f"segnas: service on {base}/ with {auth_line(auth)}", file=sys.stderr)
            print(f"segnas: logs in {logs}", file=sys.stderr)
            status = _submit_and_follow(base, body)
            if args.exit or not sys.stdin.isatty():
                return 0 if status == "succeeded" else 1
            print("segnas: still serving the page; Ctrl-C to stop", file=sys.stderr)
            while thread.is_alive():
                thread.join(1.0)
            return 0
        except KeyboardInterrupt:
            return 130
        finally:
            server.should_exit = True
            thread.join(30)


def _wait_until_up(base: str, thread: threading.Thread) -> None:
    import httpx

    from errors import SegnasError

    for _ in range(600):
        if not thread.is_alive():
            raise SegnasError("the API server stopped while starting")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SegnasError(f"the API at {base} did not come up")


def _submit_and_follow(base: str, spec: dict[str, Any]) -> str:
    """Submit the spec through the API's client, follow the search with a progress bar, print
    how it ended (``segnas remote submit --follow``)."""
    from segnas.client import Client
    from segnas.commands.remote import follow_search

    with Client(base) as client:
        search = client.submit(spec)
        print(
            f"segnas: search {search['id']} queued; its page: {base}{search['links']['page']}",
            file=sys.stderr,
        )
        status = follow_search(client, search["id"])
    return "succeeded" if status == 0 else "failed"


logging.getLogger("httpx").setLevel(logging.WARNING)
