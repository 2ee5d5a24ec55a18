"""The ``segnas`` command line: one sub-command per verb, errors as one line.

Each verb lives in ``segnas.commands.<verb>``. Those modules import torch only inside
``run``, so building the parser stays light and a verb that needs no torch starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from segnas import __version__

# verb -> module under segnas.commands with add_arguments(parser) and run(args) -> int
VERBS: dict[str, tuple[str, str]] = {
    "arch": ("arch", "describe an architecture: per-layer table, parameters, FLOPs"),
    "cells": ("cells", "the candidate cells a space may name: the paper's six and more"),
    "data": ("data", "inspect a data set: split sizes, class histogram, preview"),
    "train": ("train", "train one architecture from scratch and report its test metrics"),
    "search": ("search", "run (or resume) an ENAS search and print the best architecture"),
    "retrain": ("retrain", "retrain a search's best architectures from scratch (Ray Tune)"),
    "export": ("export", "a retrained network as TorchScript, state_dict and model card"),
    "evaluate": ("evaluate", "the search phase against random search and controls, retrained"),
    "reproduce": ("reproduce", "the paper's Table 1: each reward searched, retrained, reported"),
    "report": ("report", "report.md, report.json and figures for finished searches"),
    "db": ("db", "database schema: upgrade, downgrade, current revision"),
    "user": ("user", "the service's accounts: add a user, list them"),
    "token": ("token", "API tokens: create (printed once), list, revoke"),
    "serve": ("serve", "the API, the web page and a dispatcher (embedded defaults)"),
    "worker": ("worker", "a dispatcher: takes search jobs from Redis and runs them"),
    "remote": ("remote", "a shared server: submit, list, follow, cancel, result"),
    "demo": ("demo", "serve, submit the default search through the API, show its progress"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segnas",
        description="ENAS neural architecture search for semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"segnas {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module, summary) in VERBS.items():
        sub = verbs.add_parser(verb, help=summary, description=summary)
        command = importlib.import_module(f"segnas.commands.{module}")
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segnas`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("segnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`segnas cells --json | head`): nothing to say, and nothing more
        # to write; stdout goes to /dev/null so that the interpreter's own flush at exit does
        # not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process killed by SIGPIPE
    except Exception as error:  # the edge where user errors become one line
        from segnas.commands.errors import user_error_message

        message = user_error_message(error)
        if message is None:
            raise
        print(f"segnas: error: {message}", file=sys.stderr)
        from errors import SearchFaultError

        return 1 if isinstance(error, SearchFaultError) else 2  # 2: change the input


if __name__ == "__main__":
    sys.exit(main())
