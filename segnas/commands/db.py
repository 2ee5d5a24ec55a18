"""``segnas db upgrade|downgrade|current``: the database schema, through Alembic."""

from __future__ import annotations

import argparse

from segnas.commands.options import add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("upgrade", "downgrade", "current"),
        help="upgrade: apply the migrations; downgrade: undo them down to --revision (give "
        "'base' to drop every table); current: print the schema revision",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default: DATABASE_URL, else SQLite in the data folder)",
    )
    parser.add_argument(
        "--revision", help="target revision (default head for upgrade; downgrade needs it)"
    )
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from errors import ConfigError
    from storage.engine import database_url, make_engine
    from storage.migrate import current_revision, downgrade, head_revision, upgrade

    url = database_url(args.db)
    if args.action == "upgrade":
        upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise ConfigError(
                "downgrade needs --revision: a revision to go back to, or 'base' to drop "
                "every segnas table and its data"
            )
        downgrade(url, args.revision)
    engine = make_engine(url)
    try:
        revision = current_revision(engine)
        where = engine.url.render_as_string(hide_password=True)
    finally:
        engine.dispose()
    if args.json:
        print_json({"database": where, "revision": revision, "head": head_revision()})
    else:
        print(f"{where}: schema revision {revision or 'none'} (this segnas: {head_revision()})")
    return 0
