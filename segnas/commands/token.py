"""``segnas token create|list|revoke``: API tokens. A token is printed once, when it is made;
the database keeps only its hash."""

from __future__ import annotations

import argparse

from segnas.commands.options import add_db_argument, add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="a new token for a user, printed once")
    create.add_argument("--user", required=True, metavar="NAME", help="whose token it is")
    create.add_argument("--name", metavar="LABEL", help="what it is for (shown by list)")
    listing = actions.add_parser("list", help="tokens (their ids, never the tokens)")
    listing.add_argument("--user", metavar="NAME", help="one user's only")
    revoke = actions.add_parser("revoke", help="revoke a token by its id (from list)")
    revoke.add_argument("id", help="the token's id")
    for sub in (create, listing, revoke):
        add_db_argument(sub)
        add_json_argument(sub)


def run(args: argparse.Namespace) -> int:
    from storage.accounts import open_accounts

    accounts = open_accounts(args.db)
    try:
        if args.action == "create":
            made = accounts.create_token(args.user, name=args.name)
            if args.json:
                print_json(made.model_dump(mode="json"))
            else:
                print(made.token)
                print(
                    f"(token {made.id} of {made.user}: shown this once; keep it in "
                    "SEGNAS_TOKEN or a file only you can read)"
                )
            return 0
        if args.action == "revoke":
            record = accounts.revoke(args.id)
            if args.json:
                print_json(record.model_dump(mode="json"))
            else:
                print(f"revoked token {record.id} of {record.user}")
            return 0
        tokens = accounts.tokens(args.user)
        if args.json:
            print_json({"tokens": [t.model_dump(mode="json") for t in tokens]})
        else:
            for t in tokens:
                state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
                print(f"{t.id}  {t.user:20} {state:18} {t.name or ''}")
        return 0
    finally:
        accounts.store.close()
