"""The Ray cluster launcher configs in deploy/ray/ pass Ray's own validation, offline.

`ray up CLUSTER.yaml` reaches ``ray.autoscaler._private.commands._bootstrap_config``, which
does, in order:

1. ``prepare_config(config)`` (``ray.autoscaler._private.util``): merges the config over the
   provider's ``defaults.yaml`` shipped inside Ray (``fillout_defaults``), prepends
   ``setup_commands`` to ``head_setup_commands`` and ``worker_setup_commands``
   (``merge_setup_commands``), checks the docker section and fills per-type min/max workers.
   It only reads files from the Ray package: no cloud SDK, no credentials, no network.
2. imports the provider's node provider (``boto3`` for aws, ``googleapiclient`` for gcp) and
   on aws asks EC2 for the node types' CPUs and GPUs: needs the SDK, credentials and the
   network. Skipped here. The configs declare every node type's resources themselves: the
   schema of step 3 requires them (so this test is stricter than `ray up` on aws), and on aws
   the declared values override what EC2 reports.
3. ``validate_config(config)`` (same module): the JSON schema ``ray/autoscaler/ray-schema.json``
   (unknown keys rejected at the top level and in every node type), head type among the node
   types, sum of ``min_workers`` not above ``max_workers``. Pure.
4. ``provider_cls.bootstrap_config(config)``: creates key pairs, IAM roles, firewall rules in
   the cloud. Skipped (network and credentials).

So these tests call steps 1 and 3 exactly as the launcher does, with the network blocked, and
then check what segnas needs on top of a valid config: segnas installed on every node, GPU
workers that declare their GPU, workers started against the head.
"""

from __future__ import annotations

import copy
import importlib
import re
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "ray"
CONFIGS = sorted(DEPLOY.glob("*.yaml"))

# Without Ray (and the jsonschema that ray[default] brings) there is no validator to run.
pytest.importorskip("ray", reason="the cluster configs are validated by Ray's own code")
pytest.importorskip("jsonschema", reason="Ray validates cluster configs with jsonschema")


def _offline_connect(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"test_deploy_configs tried to open a network connection: {args}")


@pytest.fixture
def ray_validation(monkeypatch: pytest.MonkeyPatch):
    """Ray's prepare_config and validate_config, imported and run with the network blocked."""
    monkeypatch.setattr(socket.socket, "connect", _offline_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _offline_connect)
    monkeypatch.setattr(socket, "create_connection", _offline_connect)
    util = importlib.import_module("ray.autoscaler._private.util")
    return util.prepare_config, util.validate_config


def _load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict), f"{path.name} is not a YAML mapping"
    return config


def _launcher_view(config: dict[str, Any], ray_validation) -> dict[str, Any]:
    """The config as `ray up` sees it before contacting the cloud (steps 1 and 3 above)."""
    prepare_config, validate_config = ray_validation
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"]
    }


def _has_gpu_hardware(provider: str, node_config: dict[str, Any]) -> bool:
    """Whether a node type's machine has GPUs, from its provider-specific node_config."""
    if provider == "aws":
        # EC2 GPU families: g4dn, g5, g6, p3, p4d, p5, ...
        return re.match(r"^[gp]\d", node_config.get("InstanceType", "")) is not None
    if provider == "gcp":
        accelerators = node_config.get("guestAccelerators") or []
        built_in = re.match(r"^(a2|a3|g2)-", node_config.get("machineType", "")) is not None
        return bool(accelerators) or built_in
    raise AssertionError(f"no GPU rule for provider {provider!r}")


def _checkouts(config: dict[str, Any]) -> set[str]:
    """Remote paths that file_mounts fill with this repository (local paths are relative to the
    directory `ray up` runs in, the repository root)."""
    return {
        remote.rstrip("/")
        for remote, local in config.get("file_mounts", {}).items()
        if (REPO / local).resolve() == REPO
    }


def _installs_segnas(commands: list[str], checkouts: set[str]) -> bool:
    """Some command pip-installs segnas: by name (`segnas @ git+...`) or from the checkout."""
    for command in commands:
        _, found, arguments = command.partition("pip install")
        if not found:
            continue
        for argument in shlex.split(arguments):
            if argument.rstrip("/") in checkouts:
                return True
            if re.match(r"segnas(\[[^]]*\])?\s*(@|==|>=|~=|$)", argument):
                return True
    return False


def test_there_is_a_config_for_each_cloud():
    providers = {_load(path)["provider"]["type"] for path in CONFIGS}
    assert {"aws", "gcp"} <= providers, f"configs in {DEPLOY}: {[p.name for p in CONFIGS]}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_ray_accepts_the_config(path: Path, ray_validation):
    prepared = _launcher_view(_load(path), ray_validation)
    assert prepared["cluster_name"] == "segnas-voc"
    assert prepared["available_node_types"], "no node types"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_node_installs_segnas(path: Path, ray_validation):
    config = _load(path)
    checkouts = _checkouts(config)
    assert checkouts, "file_mounts copy no checkout of this repository"
    assert _installs_segnas(config["setup_commands"], checkouts), "setup_commands miss segnas"

    # What each node actually runs, as the launcher (head) and autoscaler (workers) pick it: a
    # node type's own worker_setup_commands replace the merged global ones.
    prepared = _launcher_view(config, ray_validation)
    assert _installs_segnas(prepared["head_setup_commands"], checkouts), "head lacks segnas"
    for name, node_type in _worker_types(prepared).items():
        commands = node_type.get("worker_setup_commands", prepared["worker_setup_commands"])
        assert _installs_segnas(commands, checkouts), f"worker type {name} lacks segnas"

    # Local virtual environments and search data stay home.
    assert {".venv", ".segnas", ".git"} <= set(config["rsync_exclude"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_checkout_does_not_shadow_the_installed_packages(path: Path):
    """`ray submit` runs `python ~/SCRIPT.py`, so ~ comes first on sys.path: a folder ~/segnas
    (or ~/supernet, ...) would be imported as an empty namespace package instead of the
    installed one."""
    top_level = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert "segnas" in top_level
    for remote in _load(path).get("file_mounts", {}):
        parent, _, name = remote.rstrip("/").rpartition("/")
        if parent in ("~", "$HOME"):
            assert name not in top_level, f"file_mounts target {remote} shadows package {name}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_gpu_workers_declare_their_gpus(path: Path, ray_validation):
    prepared = _launcher_view(_load(path), ray_validation)
    provider = prepared["provider"]["type"]
    gpu_workers = {
        name: node_type
        for name, node_type in _worker_types(prepared).items()
        if _has_gpu_hardware(provider, node_type["node_config"])
    }
    assert gpu_workers, "no GPU worker node type"
    for name, node_type in gpu_workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, f"{name} declares no GPU"
        assert node_type["max_workers"] >= 1, f"{name} can never be launched"
        if provider == "gcp":
            accelerators = node_type["node_config"].get("guestAccelerators", [])
            attached = sum(a["acceleratorCount"] for a in accelerators)
            assert node_type["resources"]["GPU"] == attached, f"{name}: GPU vs guestAccelerators"
            # GPU VMs cannot live-migrate; the API wants an object here, not a list.
            scheduling = node_type["node_config"].get("scheduling")
            assert isinstance(scheduling, dict), f"{name}: scheduling must be a mapping"
            assert scheduling.get("onHostMaintenance") == "TERMINATE"
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert not _has_gpu_hardware(provider, head["node_config"]), "the head is meant to be CPU-only"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_workers_join_the_head(path: Path, ray_validation):
    prepared = _launcher_view(_load(path), ray_validation)
    head_starts = [c for c in prepared["head_start_ray_commands"] if "ray start" in c]
    worker_starts = [c for c in prepared["worker_start_ray_commands"] if "ray start" in c]
    assert len(head_starts) == 1 and len(worker_starts) == 1
    assert prepared["head_start_ray_commands"][0].strip() == "ray stop"
    assert prepared["worker_start_ray_commands"][0].strip() == "ray stop"

    head = head_starts[0]
    assert "--head" in head
    # Without it the head starts no autoscaler and never launches a worker (Ray only warns).
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    port = re.search(r"--port[= ](\d+)", head)
    assert port, "head start command sets no --port"
    # $RAY_HEAD_IP is set by the autoscaler on every worker it starts.
    address = re.search(r"--address[= ]\$RAY_HEAD_IP:(\d+)", worker_starts[0])
    assert address, "workers do not start against $RAY_HEAD_IP"
    assert address.group(1) == port.group(1)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_the_validation_rejects_an_unknown_key(path: Path, ray_validation):
    """The check above can fail: a misspelt top-level key is refused by the same calls."""
    jsonschema = pytest.importorskip("jsonschema")
    config = _load(path)
    corrupted = copy.deepcopy(config)
    corrupted["setup_comands"] = corrupted.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        _launcher_view(corrupted, ray_validation)

    typo_in_node_type = copy.deepcopy(config)
    worker = next(iter(_worker_types(typo_in_node_type).values()))
    worker["resource"] = worker.pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        _launcher_view(typo_in_node_type, ray_validation)
