"""``segnas user add NAME [--admin]`` and ``segnas user list``: the service's accounts."""

from __future__ import annotations

import argparse

from segnas.commands.options import add_db_argument, add_json_argument, print_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user (then: segnas token create --user NAME)")
    add.add_argument("name", help="1-64 lower-case letters, digits, '.', '_' or '-'")
    add.add_argument("--admin", action="store_true", help="may see and act on every search")
    listing = actions.add_parser("list", help="the users")
    for sub in (add, listing):
        add_db_argument(sub)
        add_json_argument(sub)


def run(args: argparse.Namespace) -> int:
    from storage.accounts import open_accounts

    accounts = open_accounts(args.db)
    try:
        if args.action == "add":
            user = accounts.add_user(args.name, admin=args.admin)
            if args.json:
                print_json(user.model_dump(mode="json"))
            else:
                role = "an admin" if user.is_admin else "a user"
                print(f"added {user.name}, {role}; a token: segnas token create --user {user.name}")
            return 0
        users = accounts.users()
        if args.json:
            print_json({"users": [u.model_dump(mode="json") for u in users]})
        else:
            for u in users:
                print(f"{u.name:24} {'admin' if u.is_admin else 'user':6} {u.created_at:%Y-%m-%d}")
        return 0
    finally:
        accounts.store.close()
