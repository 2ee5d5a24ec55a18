"""The torch-free cost estimate of a spec (``searchspec.cost``) against real networks and data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from searchspec.cost import (
    child_params,
    data_facts,
    estimate_cost,
    ready_bytes,
    supernet_params,
)
from searchspec.spec import load_search_spec, parse_search_spec
from supernet.data import load_dataset, parse_dataset_spec
from supernet.data.feed import DataFeed, ReadySplit
from supernet.network import SuperNet, build_child
from supernet.profile import count_params
from supernet.space import CELL_REGISTRY, SearchSpace
from supernet.training import segmentation_loss

ROOT = Path(__file__).resolve().parents[1]
SPACES: list[dict[str, Any]] = [
    {"layers": 12, "channels": 36, "num_classes": 22},  # the paper's space (configs/voc.yaml)
    {"layers": 3, "channels": 8, "num_classes": 11},
    {"layers": 4, "channels": 5, "cells": ("sep3x3", "conv3x3", "maxpool3x3"), "skip_merge": "sum"},
    {"layers": 5, "channels": 7, "cells": ("sep5x5", "sep3x3", "conv3x3"), "in_channels": 1},
    {"layers": 6, "channels": 4, "cells": ("conv3x3", "avgpool3x3"), "reductions": (0, 2, 4)},
    {"layers": 1, "channels": 3, "num_classes": 2, "reductions": ()},
    # every registered cell: a cell added to the registry needs its formula here
    {"layers": 4, "channels": 6, "cells": tuple(CELL_REGISTRY)},
]


def test_the_estimate_imports_no_torch() -> None:
    code = "import searchspec.cost, searchspec.budget, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("sharing", ["independent", "entangled"])
@pytest.mark.parametrize("fields", SPACES, ids=lambda f: f"{f['layers']}x{f['channels']}")
def test_the_parameter_count_is_the_real_supernets(fields: dict[str, Any], sharing: str) -> None:
    space = SearchSpace(**fields)
    net = SuperNet(space, sharing=sharing)
    estimate = supernet_params(space, sharing)
    assert estimate.total == count_params(net)  # exact, not within a tolerance
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert estimate.norm == sum(count_params(m) for m in norms)


@pytest.mark.parametrize("fields", SPACES, ids=lambda f: f"{f['layers']}x{f['channels']}")
def test_the_largest_child_is_counted_exactly(fields: dict[str, Any]) -> None:
    space = SearchSpace(**fields)
    uniform = [build_child(space, [i] * space.layers) for i in range(space.num_choices)]
    assert child_params(space).total == max(count_params(child) for child in uniform)


@pytest.mark.parametrize(
    "dataset",
    [
        {"kind": "shapes", "images": 40, "size": 32},
        {"kind": "shapes", "images": 23, "size": 24, "boundary": "class", "object_size": [8, 12]},
        {"kind": "digits", "images": 30, "size": 24, "digit_size": [10, 14]},
        {
            "kind": "digits",
            "images": 30,
            "size": 24,
            "digit_size": [10, 14],
            "labels": "foreground",
        },
    ],
    ids=["shapes", "shapes-boundary", "digits", "digits-foreground"],
)
def test_the_embedded_data_sets_are_described_as_they_load(dataset: dict[str, Any]) -> None:
    spec = parse_dataset_spec(dataset)
    facts, data = data_facts(spec), load_dataset(spec)
    assert (facts.num_classes, facts.in_channels) == (data.num_classes, data.in_channels)
    assert (facts.train, facts.val) == (len(data.train), len(data.val))
    held = 0
    for split in (data.train, data.val, data.test):
        canvases = split.source.canvases  # type: ignore[attr-defined]
        held += canvases.images.nbytes + canvases.masks.nbytes
    assert facts.bytes_in_memory == held
    # And what a search replica's feed holds ready, as the estimate counts it.
    feed = DataFeed(data, torch.device("cpu"), progress=False)
    ready = [feed.val] + ([feed.train] if isinstance(feed.train, ReadySplit) else [])
    assert ready_bytes(spec, facts) == sum(r.images.nbytes + r.labels.nbytes for r in ready)


def test_files_on_disk_hold_their_validation_split_ready_and_say_so() -> None:
    voc = estimate_cost(parse_search_spec({"dataset": {"kind": "voc", "root": "/data"}}))
    assert voc.train_images == 2039 and voc.val_images == 583
    # The validation split as float32 RGB and int64 labels at 256 x 256, in one replica;
    # the (augmented) training split stays in the decode cache on disk.
    assert voc.data_bytes == 583 * 256**2 * (3 * 4 + 8)
    assert any("decode cache" in note for note in voc.notes)
    four = parse_search_spec(
        {"dataset": {"kind": "voc", "root": "/data"}, "resources": {"replicas": 4}}
    )
    assert estimate_cost(four).data_bytes == 4 * voc.data_bytes
    official = {"kind": "voc", "root": "/data", "split": "official"}
    assert estimate_cost(parse_search_spec({"dataset": official})).train_images == 1464
    folder = estimate_cost(parse_search_spec({"dataset": {"kind": "folder", "root": "/data"}}))
    assert folder.data_bytes is None and folder.work is None and folder.train_images is None
    assert any("folder" in note for note in folder.notes)


def test_the_work_counts_every_pass() -> None:
    spec = load_search_spec(ROOT / "configs" / "tiny.yaml")
    cost = estimate_cost(spec)
    # tiny: 140 train images, batch 8 -> 17 steps, max_steps 6; 3 controller steps x 4
    # samples x 8 images; derive: 6 samples + greedy, 2 minibatches of 8 each.
    assert cost.shared_steps == 6
    assert cost.work == 2 * (6 * 8 + 3 * 4 * 8) + 7 * 16


def _saved_bytes(net: SuperNet, arch: list[int], images: torch.Tensor, masks: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one training step."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = segmentation_loss(net(images, arch), masks, 255)
    loss.backward()
    return sum(storages.values()) + images.nbytes + masks.nbytes


def test_the_activation_estimate_is_within_a_factor_of_two_of_the_measured() -> None:
    body = {
        "dataset": {"kind": "shapes", "images": 50, "size": 32},
        "space": {"layers": 6, "channels": 8},
        "shared": {"batch_size": 4},
        "controller_phase": {"batch_size": 1},
        "derive": {"max_batches": 1},
    }
    spec = parse_search_spec(body)
    cost = estimate_cost(spec)
    space = spec.space.build(num_classes=5, in_channels=3)
    torch.manual_seed(0)
    net = SuperNet(space, sharing=spec.shared.sharing)
    images, masks = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4, 32, 32))
    measured = max(
        _saved_bytes(net, [i] * space.layers, images, masks) for i in range(space.num_choices)
    )
    assert measured / 2 <= cost.activation_bytes <= 2 * measured, (cost.activation_bytes, measured)
