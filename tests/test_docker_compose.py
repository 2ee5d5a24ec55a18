"""docker-compose.yml is wired right: services, URLs, start order, ports, GPU, commands.

No Docker engine runs here, so nothing is started: the file is read with PyYAML (merge keys
``<<`` included) and every reference in it is checked against the rest of the file and
against the code it starts. A ``segnas ...`` command must parse with ``segnas.cli``'s own
parser, a ``ray start ...`` command with Ray's own ``click`` command. Where the ``docker``
client has the ``compose`` plugin, ``docker compose config -q`` checks the file against the
Compose specification too (that needs no engine).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from segnas.cli import VERBS, build_parser

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
SEGNAS_IMAGE = "segnas:latest"
SERVICES = {
    "secrets", "postgres", "redis", "migrate", "api", "dispatcher", "ray-head", "ray-gpu-worker",
}  # fmt: skip
SECRETS = "/run/segnas-secrets"
SEGNAS_READERS = ("migrate", "api", "dispatcher", "ray-head", "ray-gpu-worker")
# Verbs the compose file runs that another change adds to segnas.cli.
PENDING_VERBS = {"serve", "worker"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def segnas_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == SEGNAS_IMAGE}


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose allows a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """target -> condition (the short list form means ``service_started``)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {target: spec["condition"] for target, spec in deps.items()}


def argv(service: dict[str, Any]) -> list[str]:
    """The service's command (empty: the image's own)."""
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(source, target, mode)`` of each short-syntax volume, ``${VAR:-default}`` read as its
    default (the ``:`` inside it is not a separator)."""
    mounts = []
    for entry in service.get("volumes", []):
        plain = re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(entry))
        source, target, *mode = plain.split(":")
        mounts.append((source, target, mode[0] if mode else "rw"))
    return mounts


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, from the short (``[IP:]HOST:CONTAINER[/proto]``) or the
    long (``{target, published}``) syntax."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
            continue
        *host, container = str(entry).split("/")[0].split(":")
        ports[int(container)] = int(host[-1]) if host else int(container)
    return ports


def test_every_service_is_there(services):
    assert set(services) >= SERVICES


def test_segnas_services_build_the_one_image(services):
    built = segnas_services(services)
    assert set(built) == SERVICES - {"postgres", "redis"}
    for name, service in built.items():
        build = service["build"]
        assert build["context"] == ".", name
        assert (REPO / build["dockerfile"]).is_file(), name


@pytest.mark.parametrize("name", SEGNAS_READERS)
def test_database_url_points_at_the_postgres_service(services, name):
    url = urlsplit(environment(services[name])["DATABASE_URL"])
    postgres = environment(services["postgres"])
    assert url.scheme.startswith("postgresql")
    assert (url.hostname, url.port or 5432) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password is None  # libpq reads it from PGPASSFILE
    assert url.path.lstrip("/") == postgres["POSTGRES_DB"]


def test_no_password_is_written_in_the_file():
    text = COMPOSE.read_text()
    assert "PGPASSWORD" not in text and "segnas:segnas@" not in text
    assert not re.search(r"^\s*POSTGRES_PASSWORD:", text, re.M)
    assert "--requirepass" not in text


@pytest.mark.parametrize("name", SEGNAS_READERS)
def test_every_segnas_service_reads_its_secrets_from_files(services, name):
    service = services[name]
    env = environment(service)
    mounts = {target: (source, mode) for source, target, mode in volumes(service)}
    assert mounts[SECRETS] == ("segnas-secrets", "ro")
    assert env["PGPASSFILE"] == f"{SECRETS}/pgpass"
    assert env["REDIS_PASSWORD_FILE"] == f"{SECRETS}/redis-password"
    # Ray's token authentication on every node and client: no Ray port runs a stranger's code.
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == f"{SECRETS}/ray-token"


def test_postgres_and_redis_take_their_passwords_from_the_secrets(services):
    postgres, redis = services["postgres"], services["redis"]
    assert environment(postgres)["POSTGRES_PASSWORD_FILE"] == f"{SECRETS}/postgres-password"
    assert argv(redis) == ["redis-server", f"{SECRETS}/redis.conf"]
    assert f"{SECRETS}/redis-password" in " ".join(redis["healthcheck"]["test"])
    for service in (postgres, redis):
        assert ("segnas-secrets", SECRETS, "ro") in volumes(service)
        assert depends_on(service) == {"secrets": "service_completed_successfully"}
    secrets = services["secrets"]
    assert argv(secrets) == ["python", "deploy/docker/make_secrets.py", SECRETS]
    assert ("segnas-secrets", SECRETS, "rw") in volumes(secrets)
    assert secrets["restart"] == "no" and str(secrets["user"]) == "0"


def test_the_secrets_are_made_once_and_agree(tmp_path, services):
    """deploy/docker/make_secrets.py, as the secrets service runs it (as root it gives each
    file to its reader's uid, which need not exist here; root still reads them)."""
    make = REPO / "deploy" / "docker" / "make_secrets.py"
    folder = tmp_path / "secrets"
    (folder).mkdir()
    (folder / "ray-token").write_text("the-operators-own\n")  # placed first: kept
    subprocess.run(["python3", str(make), str(folder)], check=True, capture_output=True)
    files = {p.name: p for p in folder.iterdir()}
    assert set(files) == {
        "postgres-password",
        "pgpass",
        "redis-password",
        "redis.conf",
        "ray-token",
    }
    assert all(p.stat().st_mode & 0o777 == 0o400 for n, p in files.items() if n != "ray-token")
    before = {n: p.read_text() for n, p in files.items()}
    assert before["ray-token"] == "the-operators-own\n"
    database = before["postgres-password"].strip()
    assert len(database) >= 32
    url = urlsplit(environment(services["api"])["DATABASE_URL"])
    pgpass = f"{url.hostname}:{url.port or 5432}:{url.path.lstrip('/')}:{url.username}:"
    assert before["pgpass"] == pgpass + database + "\n"
    config = before["redis.conf"].splitlines()
    assert f"requirepass {before['redis-password'].strip()}" in config
    assert {"appendonly yes", "dir /data", 'rename-command CONFIG ""'} <= set(config)
    assert before["redis-password"].strip() != database
    subprocess.run(["python3", str(make), str(folder)], check=True, capture_output=True)
    assert {n: p.read_text() for n, p in files.items()} == before  # a second up changes nothing


@pytest.mark.parametrize("name", ["api", "dispatcher"])
def test_redis_url_points_at_the_redis_service(services, name):
    url = urlsplit(environment(services[name])["REDIS_URL"])
    assert (url.scheme, url.hostname, url.port or 6379) == ("redis", "redis", 6379)


def test_dispatcher_submits_to_the_heads_jobs_api(services):
    url = urlsplit(environment(services["dispatcher"])["RAY_ADDRESS"])
    assert (url.scheme, url.hostname) == ("http", "ray-head")
    assert url.port == ray_start_params(services["ray-head"])["dashboard_port"]


@pytest.mark.parametrize("name", ["api", "migrate", "ray-head", "ray-gpu-worker"])
def test_only_the_dispatcher_names_a_ray_cluster(services, name):
    # The API imports no Ray; on the Ray nodes Ray itself sets RAY_ADDRESS for a job's driver.
    assert "RAY_ADDRESS" not in environment(services[name])


def test_api_limits_dataset_roots_to_the_mounted_data_folder(services):
    api = services["api"]
    roots = environment(api)["SEGNAS_DATA_ROOTS"].split(":")
    assert set(roots) <= {target for _, target, _ in volumes(api)}


def test_the_api_asks_for_tokens_and_keeps_the_first_in_the_data_volume(services):
    api = services["api"]
    assert environment(api)["SEGNAS_AUTH"] == "required"
    args = build_parser().parse_args(argv(api)[1:])
    assert args.auth == "required"
    token_file = Path(environment(api)["SEGNAS_ADMIN_TOKEN_FILE"])
    assert token_file.parent == Path(environment(api)["SEGNAS_DATA_DIR"])
    assert any(target == str(token_file.parent) for _, target, _ in volumes(api))
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    assert '"--auth", "required"' in dockerfile


def test_search_nodes_share_the_data_dir_and_datasets(services):
    for name in ("dispatcher", "ray-head", "ray-gpu-worker"):
        service = services[name]
        data_dir = environment(service)["SEGNAS_DATA_DIR"]
        mounts = volumes(service)
        sources = [source for source, target, _ in mounts if target == data_dir]
        assert sources == ["segnas-data"], name
        assert ("/data", "ro") in {(target, mode) for _, target, mode in mounts}, name


def test_start_order(services):
    assert depends_on(services["api"]) == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    assert depends_on(services["dispatcher"]) == {
        "migrate": "service_completed_successfully",
        "redis": "service_healthy",
        "ray-head": "service_healthy",
    }
    assert depends_on(services["ray-head"]) == {"secrets": "service_completed_successfully"}
    assert depends_on(services["ray-gpu-worker"]) == {"ray-head": "service_healthy"}
    assert "depends_on" not in services["secrets"]  # first of all


def test_every_dependency_can_be_waited_for(services):
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy; {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                # Restarted after it exits, it would never count as completed.
                assert services[target].get("restart") == "no", (name, target)


def test_healthchecks_ask_the_right_port(services):
    assert "pg_isready -U segnas" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    for name, url in (
        ("api", "http://localhost:8000/healthz"),
        ("ray-head", "http://localhost:8265/api/gcs_healthz"),  # Ray asks no token for it
    ):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name  # the image has no curl
        assert url in test[3], name
        compile(test[3], f"{name} healthcheck", "exec")


def test_published_ports(services):
    assert published_ports(services["api"]) == {8000: 8000}
    # The host's loopback unless the operator says otherwise; answering loopback names only.
    assert services["api"]["ports"] == ["${SEGNAS_API_BIND:-127.0.0.1}:8000:8000"]
    hosts = services["api"]["environment"]["SEGNAS_ALLOWED_HOSTS"]
    assert hosts == "${SEGNAS_ALLOWED_HOSTS:-localhost,127.0.0.1,::1}"
    assert published_ports(services["ray-head"]) == {8265: 8265}


def test_gpu_worker_reserves_an_nvidia_gpu(services):
    devices = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_redis_keeps_the_queue_on_disk(services):
    # appendonly yes and dir /data are in its redis.conf (test_the_secrets_are_made_once...)
    redis = services["redis"]
    assert ("redis-data", "/data", "rw") in volumes(redis)  # redis:7's folder


def test_named_volumes_are_declared(compose, services):
    for name, service in services.items():
        for source, _, _ in volumes(service):
            if not source.startswith((".", "/", "~")):  # a named volume, not a bind mount
                assert source in compose.get("volumes", {}), (name, source)


def test_migrate_upgrades_the_schema(services):
    assert argv(services["migrate"]) == ["segnas", "db", "upgrade"]


def segnas_commands(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Every ``segnas ...`` command the image runs: the services' and the Dockerfile's CMD."""
    commands = {name: argv(s) for name, s in services.items() if argv(s)[:1] == ["segnas"]}
    dockerfile = REPO / services["api"]["build"]["dockerfile"]
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", dockerfile.read_text(), re.MULTILINE)
    assert cmd, f"{dockerfile} has no exec-form CMD"
    commands["Dockerfile CMD"] = json.loads(cmd.group(1))
    return commands


def test_segnas_commands_parse(services):
    commands = segnas_commands(services)
    assert {"migrate", "api", "dispatcher", "Dockerfile CMD"} <= set(commands)
    missing = {command[1] for command in commands.values()} - set(VERBS)
    if missing and missing <= PENDING_VERBS:
        pytest.skip(f"segnas has no {', '.join(sorted(missing))} verb yet")
    assert not missing, f"segnas has no verb {missing}"
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.items():
        try:
            parser.parse_args(command[1:])
        except SystemExit as e:  # argparse's way to refuse, after printing why
            pytest.fail(f"{name}: {shlex.join(command)} does not parse ({e})")
        # argparse also takes a prefix of an option (--dispatcher for --dispatchers): not here.
        known = verbs.choices[command[1]]._option_string_actions
        flags = [arg.split("=")[0] for arg in command[2:] if arg.startswith("--")]
        assert all(flag in known for flag in flags), f"{name}: {flags} not all in {list(known)}"


def ray_start_params(service: dict[str, Any]) -> dict[str, Any]:
    ray_scripts = pytest.importorskip("ray.scripts.scripts")
    command = argv(service)
    assert command[:2] == ["ray", "start"]
    return ray_scripts.start.make_context("ray start", command[2:]).params


def test_ray_nodes(services):
    head = ray_start_params(services["ray-head"])
    worker = ray_start_params(services["ray-gpu-worker"])
    assert head["head"] and head["block"] and head["num_gpus"] == 0
    assert head["dashboard_host"] == "0.0.0.0"  # the jobs API, reached from the dispatcher
    assert worker["address"] == f"ray-head:{head['port']}" and worker["block"]
    for name in ("ray-head", "ray-gpu-worker"):
        assert services[name].get("shm_size"), f"{name}: Ray's object store needs /dev/shm"


def test_dockerfile_pins_the_makefiles_torch():
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.MULTILINE)
    assert spec
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    assert f"pip install {spec.group(1)}" in dockerfile


def compose_plugin() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60
    )
    return docker if version.returncode == 0 else None


def test_docker_compose_config_is_valid():
    docker = compose_plugin()
    if docker is None:
        pytest.skip("no docker client with the compose plugin")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
