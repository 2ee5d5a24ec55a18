"""``segnas remote``: a shared segnas server from the terminal, as ``det`` or ``nnictl`` are.

    segnas remote submit configs/shapes.yaml --follow
    segnas remote list
    segnas remote follow ID        # a progress bar until it ends
    segnas remote cancel ID
    segnas remote result ID
    segnas remote delete ID        # its rows, checkpoints and log (a running one stops first)

The server and token come from ``--server`` / ``--token`` or ``SEGNAS_SERVER`` /
``SEGNAS_TOKEN`` (``segnas token create`` makes one). Exit status 0 when the search (or the
call) succeeded, 1 when the search failed or was cancelled, 2 when the request was refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from segnas.commands.options import add_json_argument, print_json, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    submit = actions.add_parser("submit", help="queue a search from a config file")
    submit.add_argument("config", type=Path, help="a search spec (configs/*.yaml)")
    submit.add_argument("--follow", action="store_true", help="then follow it until it ends")
    submit.add_argument("--idempotency-key", help="retries with the same key: the same search")
    listing = actions.add_parser("list", help="your searches, newest first")
    listing.add_argument("--status", help="only those in this status (queued, running, ...)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    follow = actions.add_parser("follow", help="a progress bar until the search ends")
    cancel = actions.add_parser("cancel", help="cancel a search")
    result = actions.add_parser("result", help="the best architecture of a finished search")
    delete = actions.add_parser(
        "delete", help="remove a search, its checkpoints and log (a running one is stopped first)"
    )
    for sub in (follow, cancel, result, delete):
        sub.add_argument("id", help="the search's id")
    whoami = actions.add_parser("whoami", help="the user the token belongs to")
    for sub in (submit, listing, follow, cancel, result, delete, whoami):
        sub.add_argument("--server", help="the API's URL (SEGNAS_SERVER; http://127.0.0.1:8000)")
        sub.add_argument(
            "--token", help="an API token (SEGNAS_TOKEN; prefer the variable: ps shows options)"
        )
        add_json_argument(sub)


def run(args: argparse.Namespace) -> int:
    from segnas.client import Client

    with Client(args.server, args.token) as client:
        return ACTIONS[args.action](client, args)


def _submit(client: Any, args: argparse.Namespace) -> int:
    import yaml

    from searchspec.spec import load_search_spec

    load_search_spec(args.config)  # a bad file fails here, in one line, before the request
    spec = yaml.safe_load(args.config.read_text()) or {}
    search = client.submit(spec, idempotency_key=args.idempotency_key)
    if not args.follow:
        if args.json:
            print_json(search)
        else:
            print(
                f"search {search['id']} {search['status']}: {client.server}/searches/{search['id']}"
            )
        return 0
    print(f"segnas: search {search['id']} queued", file=sys.stderr)
    return follow_search(client, search["id"], as_json=args.json)


def _list(client: Any, args: argparse.Namespace) -> int:
    import itertools

    found = list(itertools.islice(client.searches(status=args.status), max(0, args.limit)))
    if args.json:
        print_json({"items": found})
        return 0
    rows = [
        [
            s["id"],
            s["status"],
            f"{round(100 * s['progress']['fraction'])}%" if s.get("progress") else "-",
            "-" if s.get("best") is None else f"{s['best']['reward']:.4f}",
            s["created_at"][:19].replace("T", " "),
            s.get("owner") or "",
            s.get("name") or "",
        ]
        for s in found
    ]
    print_table(rows, ["id", "status", "done", "best", "created (UTC)", "owner", "name"])
    return 0


def _follow(client: Any, args: argparse.Namespace) -> int:
    return follow_search(client, args.id, as_json=args.json)


def _cancel(client: Any, args: argparse.Namespace) -> int:
    search = client.cancel(args.id)
    if args.json:
        print_json(search)
    else:
        print(f"search {search['id']}: {search['status']}")
    return 0


def _result(client: Any, args: argparse.Namespace) -> int:
    search = client.search(args.id)
    result = client.result(args.id)
    if args.json:
        print_json(result)
    else:
        print_result(search, result, f"{client.server}/searches/{args.id}")
    return 0


def _delete(client: Any, args: argparse.Namespace) -> int:
    if not client.delete(args.id):
        print(f"segnas: search {args.id} is running: waiting for it to stop", file=sys.stderr)
        client.follow(args.id, lambda _: None)
        client.delete(args.id)
    if args.json:
        print_json({"deleted": args.id})
    else:
        print(f"deleted search {args.id}")
    return 0


def _whoami(client: Any, args: argparse.Namespace) -> int:
    me = client.me()
    if args.json:
        print_json(me)
    else:
        role = "admin" if me["admin"] else "user"
        print(f"{me['name']} ({role}) on {client.server}, authentication {me['auth']}")
    return 0


ACTIONS = {
    "submit": _submit,
    "list": _list,
    "follow": _follow,
    "cancel": _cancel,
    "result": _result,
    "delete": _delete,
    "whoami": _whoami,
}


def follow_search(client: Any, search_id: str, *, as_json: bool = False) -> int:
    """A progress bar until the search ends, then its result (or how it ended)."""
    from tqdm import tqdm

    with tqdm(total=100, desc="search", unit="%", file=sys.stderr, disable=None) as bar:
        search = client.follow(search_id, lambda s: show_progress(bar, s))
    url = f"{client.server}/searches/{search_id}"
    if search["status"] != "succeeded":
        if as_json:
            print_json(search)
        else:
            print(f"search {search_id} {search['status']}: {search['error'] or ''}")
        return 1
    result = client.result(search_id)
    if as_json:
        print_json({"search": search, "result": result})
    else:
        print_result(search, result, url)
    return 0


def show_progress(bar: Any, search: dict[str, Any]) -> None:
    progress = search.get("progress")
    if not progress:
        bar.set_postfix_str(search["status"])
        return
    bar.n = round(100 * progress["fraction"], 1)
    best = search.get("best")
    reward = "-" if best is None else f"{best['reward']:.3f}"
    final = search["status"] == "succeeded" or (
        progress["phase"] == "derive" and progress["step"] == progress["steps"]
    )
    where = "validation split" if final else "one minibatch"
    bar.set_postfix_str(
        f"epoch {min(progress['epoch'] + 1, progress['epochs'])}/{progress['epochs']} "
        f"{progress['phase']} {progress['step']}/{progress['steps']} best {reward} ({where})",
        refresh=False,
    )
    bar.refresh()


def print_result(search: dict[str, Any], result: dict[str, Any], url: str) -> None:
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
