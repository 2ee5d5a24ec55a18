"""Ray without token authentication is refused where others could reach it (issue 13, §5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from errors import ConfigError
from workers.ray_auth import UNAUTHENTICATED_RAY_ENV, check_ray_auth

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv(UNAUTHENTICATED_RAY_ENV, raising=False)


@pytest.mark.parametrize(
    "address",
    [None, "auto", "10.0.0.7:6379", "ray://head.example:10001", "http://ray-head:8265",
     "[2001:db8::1]:6379", "0.0.0.0:6379"],
)  # fmt: skip
def test_disabled_auth_is_refused_where_others_reach_the_ray(
    disabled: None, address: str | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_ray_auth(address)
    message = str(caught.value)
    assert message.startswith("RAY_AUTH_MODE=disabled, and ")
    assert (address or "the local Ray listens on every interface") in message
    assert UNAUTHENTICATED_RAY_ENV in message


@pytest.mark.parametrize(
    "address", ["127.0.0.1:6379", "localhost:6379", "http://127.0.0.1:8265", "[::1]:6379"]
)
def test_a_cluster_on_loopback_is_its_starters_to_guard(disabled: None, address: str) -> None:
    check_ray_auth(address)


def test_token_auth_or_an_explicit_allowance_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNAUTHENTICATED_RAY_ENV, raising=False)
    for mode in (None, "token"):
        if mode is None:
            monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        else:
            monkeypatch.setenv("RAY_AUTH_MODE", mode)
        check_ray_auth(None)
        check_ray_auth("10.0.0.7:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "DISABLED")
    monkeypatch.setenv(UNAUTHENTICATED_RAY_ENV, "1")
    check_ray_auth(None)


@pytest.mark.parametrize(
    "argv",
    [["search", "--config", str(ROOT / "configs" / "tiny.yaml")], ["worker"]],
)
def test_the_command_line_refuses_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    env = {**os.environ, "SEGNAS_DATA_DIR": str(tmp_path / "data"), "RAY_AUTH_MODE": "disabled"}
    env.pop(UNAUTHENTICATED_RAY_ENV, None)
    env.pop("DATABASE_URL", None)
    env["RAY_ADDRESS"] = "http://10.0.0.7:8265"
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # never reached: refused before
    done = subprocess.run(
        [sys.executable, "-m", "segnas.cli", *argv],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("segnas: error: RAY_AUTH_MODE=disabled, and the Ray cluster at")
