"""The accounts from the command line: ``segnas user``, ``segnas token``, ``segnas serve
--auth`` and the ``segnas remote`` client against a real ``segnas serve`` with accounts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from served import running_server, serve_env

from errors import ConfigError
from segnas.commands.serve import choose_auth, is_loopback
from storage.accounts import TOKEN_PREFIX, bootstrap_admin_token, open_accounts

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.mark.parametrize(
    ("host", "asked", "auth"),
    [("127.0.0.1", None, "off"), ("localhost", None, "off"), ("::1", None, "off"),
     ("127.0.0.1", "required", "required"), ("0.0.0.0", None, "required"),
     ("192.168.1.5", None, "required"), ("example.org", None, "required")],
)  # fmt: skip
def test_authentication_is_on_wherever_the_server_is_not_loopback(
    host: str, asked: str | None, auth: str
) -> None:
    assert choose_auth(host, asked) == auth


def test_auth_off_off_loopback_is_refused() -> None:
    assert is_loopback("[::1]") and not is_loopback("10.0.0.1")
    with pytest.raises(ConfigError, match="--auth required"):
        choose_auth("0.0.0.0", "off")


def test_the_first_admin_token_goes_to_a_file_only_its_user_reads(tmp_path: Path) -> None:
    accounts = open_accounts(f"sqlite:///{tmp_path / 'segnas.db'}")
    try:
        path = tmp_path / "secrets" / "admin-token"
        said = bootstrap_admin_token(accounts, path)
        assert str(path) in said
        token = path.read_text().strip()
        assert token.startswith(TOKEN_PREFIX) and token not in said
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        who = accounts.authenticate(token)
        assert who is not None and who.is_admin
        # Again: the file's token is known, nothing new is made.
        assert "is valid" in bootstrap_admin_token(accounts, path)
        assert len(accounts.tokens()) == 1
        # A secret the operator mounted is registered as it is.
        mounted = tmp_path / "mounted"
        mounted.write_text(TOKEN_PREFIX + "m" * 43 + "\n")
        assert "is registered" in bootstrap_admin_token(accounts, mounted)
        assert accounts.authenticate(TOKEN_PREFIX + "m" * 43) is not None
    finally:
        accounts.store.close()


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "segnas.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def last_json(done: subprocess.CompletedProcess) -> Any:
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``segnas serve --auth required --dispatchers 0`` on a free port; yields the CLI's
    environment for that server (no token in it)."""
    folder = tmp_path_factory.mktemp("served")
    options = ("--auth", "required", "--dispatchers", "0")
    with running_server(folder, *options) as server:
        yield {**serve_env(folder), "SEGNAS_SERVER": server.base}
    output = server.log_path.read_text()
    assert "authentication required" in output.splitlines()[0]
    assert "segnas_" not in output  # the admin token went to its file, not the log


def test_a_user_and_a_token_drive_the_shared_server_from_the_terminal(
    served: dict[str, str],
) -> None:
    cli(served, "user", "add", "ada")
    made = last_json(cli(served, "token", "create", "--user", "ada", "--name", "laptop", "--json"))
    ada = {**served, "SEGNAS_TOKEN": made["token"]}

    refused = cli(served, "remote", "list", check=False)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "401" in line and "SEGNAS_TOKEN" in line

    assert last_json(cli(ada, "remote", "whoami", "--json"))["name"] == "ada"
    search = last_json(cli(ada, "remote", "submit", str(TINY), "--json"))
    assert search["status"] == "queued"
    listed = last_json(cli(ada, "remote", "list", "--json"))["items"]
    assert [s["id"] for s in listed] == [search["id"]]
    table = cli(ada, "remote", "list").stdout
    assert search["id"] in table and "queued" in table

    no_result = cli(ada, "remote", "result", search["id"], check=False)
    assert no_result.returncode == 2 and "409" in no_result.stderr
    assert last_json(cli(ada, "remote", "cancel", search["id"], "--json"))["status"] == "cancelled"
    ended = cli(ada, "remote", "follow", search["id"], check=False)
    assert ended.returncode == 1 and "cancelled" in ended.stdout
    other = last_json(cli(ada, "remote", "submit", str(TINY), "--json"))
    assert last_json(cli(ada, "remote", "delete", other["id"], "--json")) == {
        "deleted": other["id"]
    }
    assert [s["id"] for s in last_json(cli(ada, "remote", "list", "--json"))["items"]] == [
        search["id"]
    ]

    # The admin's token is in its file under the data folder; the admin sees ada's search.
    admin_token = (Path(served["SEGNAS_DATA_DIR"]) / "admin-token").read_text().strip()
    admin = {**served, "SEGNAS_TOKEN": admin_token}
    [row] = [
        line for line in cli(admin, "remote", "list").stdout.splitlines() if search["id"] in line
    ]
    assert row.split()[-2:] == ["ada", "tiny"]  # whose, then its name
    # What the service wrote is its user's only.
    folder = Path(served["SEGNAS_DATA_DIR"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("segnas.db", "admin-token"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    # Revoked, ada's token stops working at once.
    cli(served, "token", "revoke", made["id"])
    assert cli(ada, "remote", "list", check=False).returncode == 2


def test_auth_off_is_refused_off_loopback(tmp_path: Path) -> None:
    env = {**os.environ, "SEGNAS_DATA_DIR": str(tmp_path)}
    done = cli(env, "serve", "--host", "0.0.0.0", "--auth", "off", check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "segnas: error: --auth off on 0.0.0.0 would let anyone who reaches it act as the "
        "admin: use --auth required (the default there), or listen on 127.0.0.1"
    ]
