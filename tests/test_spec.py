"""The search spec: config files, ``--set`` overrides, refused values, round trips, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import ReinforceConfig
from errors import ConfigError
from searchspec.spec import SearchSpec, load_search_spec, parse_search_spec
from supernet.data.specs import VocSpec
from supernet.space import CELL_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def write_config(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def refusal(data: dict[str, Any]) -> str:
    """The one-line message ``parse_search_spec`` refuses ``data`` with."""
    with pytest.raises(ConfigError) as info:
        parse_search_spec(data)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- no torch ------------------------------------------------------------------------------------


def test_spec_modules_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import searchspec.spec, supernet.space, supernet.data.specs, controller.config\n"
        "searchspec.spec.parse_search_spec({'seed': 1}).controller_config()\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# --- config files --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    spec = load_search_spec(path)
    assert isinstance(spec, SearchSpec)


def test_tiny_config_is_shipped() -> None:
    assert ROOT / "configs" / "tiny.yaml" in CONFIGS


def test_no_file_is_the_default_search_with_the_overrides() -> None:
    assert load_search_spec(None) == parse_search_spec({})
    assert load_search_spec(None, {"epochs": 3}) == parse_search_spec({"epochs": 3})


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_search_spec(write_config(tmp_path, "")) == SearchSpec()


def test_the_default_search_is_the_same_everywhere() -> None:
    # configs/shapes.yaml spells out DEFAULT_SEARCH; an empty body, an empty file and the
    # model's own defaults are that search.
    default = load_search_spec(ROOT / "configs" / "shapes.yaml")
    assert default == parse_search_spec({}) == SearchSpec()
    assert SearchSpec.model_validate(default.model_dump(mode="json")) == default
    assert (default.space.layers, len(default.space.cells)) == (6, 6)  # 46,656 architectures
    assert default.dataset.kind == "shapes"
    assert default.controller.lr == ReinforceConfig().lr  # ENAS's controller


def test_a_spec_changes_the_default_search_field_by_field() -> None:
    spec = parse_search_spec({"epochs": 3, "shared": {"lr": 0.01}, "dataset": {"images": 90}})
    default = parse_search_spec({})
    assert spec.epochs == 3 and spec.shared.lr == 0.01
    assert spec.shared.optimizer == default.shared.optimizer  # the rest of the section stays
    assert spec.dataset.kind == "shapes" and spec.dataset.images == 90
    other = parse_search_spec({"dataset": {"kind": "digits", "images": 90}})
    assert other.dataset.kind == "digits"  # another kind replaces the data set whole
    assert "shared" in refusal({"shared": 3})


@pytest.mark.parametrize(
    "text", ["epochs: [1, 2\n", "a: b: c\n", "\t- tab"], ids=["unclosed", "mapping", "tab"]
)
def test_non_yaml_file_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_search_spec(write_config(tmp_path, text))


@pytest.mark.parametrize("data", [["epochs", 1], "just a string", 3], ids=["list", "str", "int"])
def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path, data: Any) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_search_spec(write_config(tmp_path, data))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_search_spec(tmp_path / "absent.yaml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"epochs": 0})
    with pytest.raises(ConfigError, match="epochs") as info:
        load_search_spec(path)
    assert str(path) in str(info.value)


# --- unknown fields ------------------------------------------------------------------------------


def test_unknown_top_level_field_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"epochs": 1, "epoch": 2})
    with pytest.raises(ConfigError, match="unknown field 'epoch'"):
        load_search_spec(path)


@pytest.mark.parametrize(
    "data, field",
    [
        ({"shared": {"lr_typo": 0.1}}, "shared.lr_typo"),
        ({"controller": {"learning_rate": 0.1}}, "controller.learning_rate"),
        ({"dataset": {"kind": "digits", "imgs": 10}}, "dataset.imgs"),
        ({"resources": {"gpus": 1}}, "resources.gpus"),
    ],
)
def test_unknown_nested_field_is_named(data: dict[str, Any], field: str) -> None:
    assert f"unknown field {field!r}" in refusal(data)


def test_every_unknown_field_is_named_at_once() -> None:
    message = refusal({"bogus": 1, "shared": {"lr_typo": 1}})
    assert "'bogus'" in message and "'shared.lr_typo'" in message


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_apply_over_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"epochs": 5, "shared": {"batch_size": 16, "optimizer": "adam"}})
    spec = load_search_spec(path, {"shared.batch_size": 4, "epochs": 1, "derive.samples": 2})
    assert spec.epochs == 1
    assert spec.shared.batch_size == 4
    assert spec.shared.optimizer == "adam"  # the file's sibling setting stays
    assert spec.derive.samples == 2  # a section the file does not have


def test_overrides_do_not_change_the_file_data(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"shared": {"batch_size": 16}})
    load_search_spec(path, {"shared.batch_size": 4})
    assert load_search_spec(path).shared.batch_size == 16


@pytest.mark.parametrize("key", ["epochs.x", "reward.kind.deep"])
def test_override_through_a_non_mapping_is_refused(tmp_path: Path, key: str) -> None:
    path = write_config(tmp_path, {"epochs": 2})
    with pytest.raises(ConfigError, match=key.split(".")[0]):
        load_search_spec(path, {key: 1})


def test_overridden_values_are_validated(tmp_path: Path) -> None:
    path = write_config(tmp_path, {})
    with pytest.raises(ConfigError, match=r"shared\.lr"):
        load_search_spec(path, {"shared.lr": -1})


# --- refused values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"resources": {"replicas": 0}}, "resources.replicas"),
        ({"shared": {"lr": -1}}, "shared.lr"),
        ({"seed": -1}, "seed"),
        ({"reward": "iou"}, "reward"),
        ({"controller": {"batch_size": 0}}, "controller.batch_size"),
        ({"shared": {"lr": float("nan")}}, "shared.lr"),
        ({"dataset": {"kind": "digits", "images": 0}}, "dataset.images"),
    ],
)
def test_out_of_range_value_is_refused_with_its_field(data: dict[str, Any], field: str) -> None:
    assert f"{field}: " in refusal(data)


def test_a_reward_written_as_a_mapping_is_its_metric_weighed_by_size() -> None:
    spec = parse_search_spec(
        {"reward": {"metric": "accuracy", "cost": "flops", "target": 10**6, "weight": -0.07}}
    )
    assert spec.reward == "accuracy"  # what retraining and the reports read: the metric
    assert spec.reward_cost is not None and spec.reward_cost.cost == "flops"
    assert spec.reward_cost.weigh(0.5, 2 * 10**6) == pytest.approx(0.5 * 2**-0.07)
    assert spec.reward_cost.weigh(0.5, 10**6) == 0.5  # on target: the metric
    assert parse_search_spec(spec.model_dump(mode="json")) == spec  # a stored spec reads back
    assert parse_search_spec({"reward": {"metric": "miou"}}).reward_cost is None
    assert parse_search_spec({}).reward_cost is None  # the paper's rewards by default
    weight = parse_search_spec({"reward": {"metric": "miou", "cost": "params", "target": 5}})
    assert weight.reward_cost.weight == -0.07  # MnasNet's


@pytest.mark.parametrize(
    "reward, words",
    [
        ({"cost": "params", "target": 5}, ("reward", "metric")),
        ({"metric": "miou", "cost": "latency", "target": 5}, ("reward_cost.cost",)),
        ({"metric": "miou", "cost": "params", "target": 0}, ("reward_cost.target",)),
        ({"metric": "miou", "cost": "params"}, ("reward_cost.target",)),
        ({"metric": "miou", "cost": "params", "target": 5, "weight": 3}, ("reward_cost.weight",)),
    ],
)
def test_a_bad_size_aware_reward_is_refused_naming_its_field(
    reward: dict[str, Any], words: tuple[str, ...]
) -> None:
    message = refusal({"reward": reward})
    assert all(word in message for word in words), message


def test_the_size_is_given_once() -> None:
    both = {"reward": {"metric": "miou", "cost": "params", "target": 5},
            "reward_cost": {"cost": "params", "target": 5}}  # fmt: skip
    assert "not both" in refusal(both)


def test_shared_batch_smaller_than_the_replicas_is_refused() -> None:
    message = refusal({"shared": {"batch_size": 2}, "resources": {"replicas": 4}})
    assert "shared.batch_size" in message and "resources.replicas" in message
    parse_search_spec({"shared": {"batch_size": 4}, "resources": {"replicas": 4}})


def test_derive_with_no_samples_and_no_greedy_is_refused() -> None:
    assert "derive" in refusal({"derive": {"samples": 0, "greedy": False}})
    parse_search_spec({"derive": {"samples": 0, "greedy": True}})
    parse_search_spec({"derive": {"samples": 1, "greedy": False}})


def test_space_checks_of_search_space_run_through_the_spec() -> None:
    message = refusal({"space": {"layers": 2, "reductions": [5]}})
    assert "space" in message and "reductions" in message
    assert "space" in refusal({"space": {"cells": ["conv3x3", "conv7x7"]}})
    spec = parse_search_spec({"space": {"layers": 2, "reductions": [1]}})
    assert spec.space.build(num_classes=3, in_channels=1).reductions == (1,)


# --- controller seed -----------------------------------------------------------------------------


def test_controller_takes_the_spec_seed_by_default() -> None:
    spec = parse_search_spec({"seed": 7, "controller": {"lr": 0.01}})
    config = spec.controller_config()
    assert config.seed == 7
    assert config.lr == 0.01


@pytest.mark.parametrize("controller_seed", [3, 0])
def test_explicit_controller_seed_wins(controller_seed: int) -> None:
    spec = parse_search_spec({"seed": 7, "controller": {"seed": controller_seed}})
    assert spec.controller_config().seed == controller_seed


# --- round trips ---------------------------------------------------------------------------------


def json_round_trip(spec: SearchSpec) -> SearchSpec:
    """How a spec is stored in the database and sent to the actors."""
    return SearchSpec.model_validate(spec.model_dump(mode="json"))


ROUND_TRIP_SPECS = {
    "defaults": {},
    "seeded": {"seed": 7, "name": "seeded", "epochs": 3},
    "voc": {"dataset": {"kind": "voc", "root": "/nowhere/VOCdevkit", "scale": [0.75, 1.5]}},
    "explicit-controller-seed": {"seed": 7, "controller": {"seed": 3, "tanh_constant": None}},
    "space": {"space": {"layers": 4, "reductions": [1], "cells": ["sep3x3", "conv3x3"]}},
}


@pytest.mark.parametrize("data", ROUND_TRIP_SPECS.values(), ids=ROUND_TRIP_SPECS.keys())
def test_spec_round_trips_through_json_unchanged(data: dict[str, Any]) -> None:
    spec = parse_search_spec(data)
    again = json_round_trip(spec)
    assert again == spec
    assert again.model_dump(mode="json") == spec.model_dump(mode="json")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_round_trips_through_json_unchanged(path: Path) -> None:
    spec = load_search_spec(path)
    assert json_round_trip(spec) == spec


def test_controller_seed_survives_the_json_round_trip() -> None:
    spec = parse_search_spec({"seed": 7})
    assert spec.controller_config().seed == 7
    assert json_round_trip(spec).controller_config() == spec.controller_config()


# --- data sets -----------------------------------------------------------------------------------


def test_voc_dataset_validates_without_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "no" / "such" / "VOCdevkit"
    spec = parse_search_spec({"dataset": {"kind": "voc", "root": str(root)}})
    assert isinstance(spec.dataset, VocSpec)
    assert spec.dataset.root == root
    assert not root.exists()


def test_voc_config_file_loads_without_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "absent"
    path = write_config(tmp_path, {"dataset": {"kind": "voc", "root": str(root), "size": 64}})
    assert load_search_spec(path).dataset == VocSpec(kind="voc", root=root, size=64)


def test_dataset_without_a_kind_is_the_default_search_s_only_when_absent() -> None:
    assert parse_search_spec({}).dataset.kind == "shapes"
    assert "dataset" in refusal({"dataset": {"kind": "imagenet"}})
    assert "dataset.root" in refusal({"dataset": {"kind": "voc"}})


def test_the_extended_config_is_the_default_search_over_every_cell() -> None:
    # docs/results.md compares the two: nothing but the cells may differ.
    extended = load_search_spec(ROOT / "configs" / "shapes-extended.yaml")
    assert extended.space.cells == tuple(CELL_REGISTRY)
    assert extended.space.cells[:6] == SearchSpec().space.cells  # old indices keep their cells
    ours = extended.model_dump(exclude={"name"})
    ours["space"].pop("cells")
    theirs = SearchSpec().model_dump(exclude={"name"})
    theirs["space"].pop("cells")
    assert ours == theirs
