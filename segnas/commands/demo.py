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
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


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

    from segnas.commands.serve import check_port
    from segnas.spec import load_search_spec
    from segnas.stack import LocalStack
    from service.app import create_app
    from storage.engine import data_dir

    body: dict = {}  # the default search
    if args.config is not None:
        load_search_spec(args.config)  # a bad file fails here, in one line, before anything
        body = yaml.safe_load(args.config.read_text()) or {}
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
            print(f"segnas: service on {base}/ (logs in {logs})", file=sys.stderr)
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

    from supernet.errors import SegnasError

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
    """POST the spec, follow the search with a progress bar, print how it ended."""
    import httpx
    from tqdm import tqdm

    from supernet.errors import SegnasError

    with httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post("/searches", json=spec, headers={"Idempotency-Key": uuid.uuid4().hex})
        if answer.status_code not in (200, 201):
            raise SegnasError(f"POST /searches answered {answer.status_code}: {answer.text}")
        search = answer.json()
        url = f"{base}{search['links']['page']}"
        print(f"segnas: search {search['id']} queued; its page: {url}", file=sys.stderr)
        etag = None
        with tqdm(total=100, desc="search", unit="%", file=sys.stderr, disable=None) as bar:
            while search["status"] not in TERMINAL:
                time.sleep(0.5)
                reply = client.get(
                    f"/searches/{search['id']}", headers={"If-None-Match": etag} if etag else {}
                )
                if reply.status_code == 304:
                    continue
                reply.raise_for_status()
                search, etag = reply.json(), reply.headers.get("ETag")
                _show(bar, search)
        if search["status"] != "succeeded":
            print(f"search {search['id']} {search['status']}: {search['error'] or ''}")
            return str(search["status"])
        result = client.get(f"/searches/{search['id']}/result").json()
    _print_result(search, result, url)
    return "succeeded"


def _show(bar: Any, search: dict[str, Any]) -> None:
    progress = search.get("progress")
    if not progress:
        bar.set_postfix_str(search["status"])
        return
    bar.n = round(100 * progress["fraction"], 1)
    best = search.get("best")
    reward = "-" if best is None else f"{best['reward']:.3f}"
    bar.set_postfix_str(
        f"epoch {min(progress['epoch'] + 1, progress['epochs'])}/{progress['epochs']} "
        f"{progress['phase']} {progress['step']}/{progress['steps']} best {reward}",
        refresh=False,
    )
    bar.refresh()


def _print_result(search: dict[str, Any], result: dict[str, Any], url: str) -> None:
    from segnas.commands.options import print_table

    arch = " ".join(str(i) for i in result["arch"])
    cells = search["spec"]["space"]["cells"]
    print(f"search {search['id']} succeeded")
    print(f"best architecture  {arch}   ({', '.join(cells[i] for i in result['arch'])})")
    print(f"parameters         {result['params']:,}")
    rows = [[name, f"{value:.4f}"] for name, value in result["metrics"].items()]
    print_table(rows, ["validation metric", "value"])
    if result.get("candidates"):
        print(f"(the best of {result['candidates']} derived architectures on the validation split)")
    print(f"page: {url}")


logging.getLogger("httpx").setLevel(logging.WARNING)
