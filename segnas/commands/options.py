"""Command-line options shared by several verbs: data set selection and JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from errors import ConfigError

DEFAULT_DATASET = "shapes"
"""The data set kind of ``--dataset`` when none is given: the default search's task."""


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data set")
    group.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        metavar="KIND",
        help="shapes (embedded, the default), digits (embedded), voc (PASCAL VOC 2012) or "
        "folder (your own data)",
    )
    group.add_argument("--root", help="data set folder (voc, folder)")
    group.add_argument("--size", type=int, help="side of the square images fed to the network")
    group.add_argument("--data-seed", type=int, help="seed of the 7:2:1 split and generation")
    group.add_argument(
        "-D",
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other field of the data set spec, e.g. -D images=500 -D void_as_class=true",
    )


def parse_key_values(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=[1, 2]"]`` -> ``{"a": 1, "b": [1, 2]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"{pair!r}: the value is not valid YAML") from None
    return out


def dataset_spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The data set spec the options describe, as a plain dict (validated by the data module)."""
    spec: dict[str, Any] = {"kind": args.dataset}
    for field, value in (("root", args.root), ("size", args.size), ("seed", args.data_seed)):
        if value is not None:
            spec[field] = value
    spec.update(parse_key_values(args.data_option))
    return spec


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default: DATABASE_URL, else SQLite in the data folder "
        "SEGNAS_DATA_DIR, default .segnas/)",
    )


def add_overrides_argument(parser: argparse.ArgumentParser, *, what: str = "a spec field") -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, dotted for sections: --set epochs=3 --set shared.lr=0.01",
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of tables"
    )


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    """A plain left-aligned text table."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
