"""``segnas report``: Table 1, quality lines and figures for retrained searches."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from segnas.commands.options import add_db_argument, add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--searches",
        required=True,
        metavar="ID,ID,...",
        help="retrained searches, one Table 1 column each, in this order",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the report")
    parser.add_argument("--title", help="the report's title")
    add_db_argument(parser)
    add_json_argument(parser)


def search_ids(text: str) -> list[str]:
    from errors import ConfigError

    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise ConfigError("--searches needs at least one search id (comma-separated)")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--searches names a search twice: {text}")
    return ids


def write(store: Any, ids: list[str], out: Path, *, command: str, title: str | None) -> Any:
    """Gather and write the report; returns (report, files)."""
    from reports.gather import build_report
    from reports.render import write_report

    report = build_report(store, ids, command=command, title=title)
    return report, write_report(report, out)


def print_summary(report: Any, files: Any, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "out": str(files.markdown.parent.resolve()),
                "files": [str(p) for p in files.all],
                "report": report.model_dump(mode="json"),
            }
        )
        return
    from reports.render import table_one

    print(table_one(report))
    print(f"\nreport: {files.markdown}")


def run(args: argparse.Namespace) -> int:
    from workers.entry import open_store

    ids = search_ids(args.searches)
    store = open_store(args.db)
    try:
        command = shlex.join(["segnas", *sys.argv[1:]]) if sys.argv[1:] else "segnas report"
        report, files = write(store, ids, args.out, command=command, title=args.title)
    finally:
        store.close()
    print_summary(report, files, args.json)
    return 0
