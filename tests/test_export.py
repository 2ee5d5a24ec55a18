"""The export of a stand-alone child network: its files, its card, and that it runs without
segnas (a subprocess in which segnas cannot be imported loads and runs it)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from errors import ConfigError
from supernet.export import (
    FILES,
    FORMAT_VERSION,
    ModelCard,
    export_network,
    load_card,
    load_child,
)
from supernet.metrics import ConfusionMatrix
from supernet.network import ChildNet, SuperNet, build_child
from supernet.space import CELL_NAMES, SearchSpace

SPACE = SearchSpace(layers=6, channels=8, num_classes=4, in_channels=3)
ALL_CELLS = (0, 1, 2, 3, 4, 5)  # every cell index once
CLASSES = ["background", "one", "two", "three"]
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]
SIZE = 16
METRICS = {
    "accuracy": 0.9,
    "mean_precision": 0.8,
    "mean_recall": 0.7,
    "miou": 0.6,
    "miou_plus": 0.5,
}
# Every top-level package segnas installs (pyproject's packages.find): none may be reachable.
PROJECT_PACKAGES = ("segnas", "supernet", "controller", "workers", "service", "storage", "jobqueue")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_torchscript_warnings():
    # The tests load with torch.jit.load, which warns that TorchScript is deprecated.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        yield


def trained_child(space: SearchSpace, arch: tuple[int, ...]) -> ChildNet:
    """A child after a few SGD steps on random data, so weights and BN statistics are not the
    initial ones (an export that dropped the running stats would still match at init)."""
    child = build_child(space, arch)
    opt = torch.optim.SGD(child.parameters(), lr=0.1, momentum=0.9)
    child.train()
    for _ in range(3):
        x = torch.randn(2, space.in_channels, SIZE, SIZE)
        y = torch.randint(0, space.num_classes, (2, SIZE, SIZE))
        opt.zero_grad()
        F.cross_entropy(child(x), y).backward()
        opt.step()
    return child


def export(model: ChildNet, out_dir: Path, space: SearchSpace = SPACE, **overrides) -> ModelCard:
    kwargs = {
        "space": space,
        "classes": CLASSES[: space.num_classes],
        "input_size": SIZE,
        "mean": MEAN[: space.in_channels],
        "std": STD[: space.in_channels],
        "metrics": METRICS,
        "out_dir": out_dir,
        "source": {"search_id": "s-1", "retrain_id": "r-7"},
    }
    return export_network(model, **(kwargs | overrides))


def image(space: SearchSpace = SPACE, size: int = SIZE) -> torch.Tensor:
    return torch.randn(1, space.in_channels, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[ChildNet, Path, ModelCard]:
    """One trained child exported once (scripting costs about a second), shared by the tests
    that only read the export. The child is returned in train mode, as training leaves it."""
    torch.manual_seed(0)
    child = trained_child(SPACE, ALL_CELLS)
    out = tmp_path_factory.mktemp("export") / "nested" / "export"  # parents are created too
    card = export(child, out)
    return child, out, card


def test_export_writes_the_four_files_and_the_card(exported):
    child, out, card = exported

    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())
    assert card.files == {
        "torchscript": "model.torchscript.pt",
        "state_dict": "state_dict.pt",
        "architecture": "architecture.json",
        "card": "card.json",
    }
    assert card.arch == list(ALL_CELLS)
    assert card.cells == list(CELL_NAMES)
    assert card.space == {
        "layers": 6,
        "channels": 8,
        "cells": list(CELL_NAMES),
        "reductions": [1, 3],
        "num_classes": 4,
        "in_channels": 3,
        "skip_merge": "concat",
    }
    assert card.classes == CLASSES and card.num_classes == 4 and card.in_channels == 3
    assert card.input_size == SIZE and card.size_multiple == 4
    assert card.normalisation.mean == MEAN and card.normalisation.std == STD
    assert card.normalisation.scale == "images in 0..1 (RGB), then (x - mean) / std"
    assert card.ignore_index == 255
    assert card.params == sum(p.numel() for p in child.parameters())
    assert card.metrics == METRICS
    assert card.source == {"search_id": "s-1", "retrain_id": "r-7"}
    assert card.format_version == FORMAT_VERSION == 1
    assert card.torch_version == torch.__version__

    assert load_card(out) == card
    assert json.loads((out / "card.json").read_text()) == card.model_dump(mode="json")
    assert json.loads((out / "architecture.json").read_text()) == {
        "arch": [0, 1, 2, 3, 4, 5],
        "arch_string": "0 1 2 3 4 5",
        "space": card.space,
    }
    state = torch.load(out / "state_dict.pt", weights_only=True)
    assert state.keys() == child.state_dict().keys()
    assert all(t.device.type == "cpu" for t in state.values())
    # Nothing but the four files: no temporary file survives a successful export.
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_load_child_and_the_torchscript_reproduce_the_model(exported):
    child, out, _ = exported
    assert child.training  # exported in train mode: the export must not change the caller's mode
    child = copy.deepcopy(child).eval()
    x = image()
    with torch.no_grad():
        expected = child(x)
        loaded = load_child(out)
        assert isinstance(loaded, ChildNet) and not loaded.training
        assert loaded.arch == list(ALL_CELLS)
        assert torch.equal(loaded(x), expected)
        scripted = torch.jit.load(out / "model.torchscript.pt")
        assert not scripted.training
        assert torch.allclose(scripted(x), expected, atol=1e-6)


@pytest.mark.parametrize("sharing", ["independent", "entangled"])
def test_a_supernet_view_exports_like_its_extracted_child(tmp_path, sharing):
    supernet = SuperNet(SPACE, sharing=sharing).eval()
    view = supernet.view(ALL_CELLS)
    card = export(view, tmp_path, metrics=ConfusionMatrix(4).compute())
    assert set(card.metrics) == {"accuracy", "mean_precision", "mean_recall", "miou", "miou_plus"}
    x = image()
    with torch.no_grad():
        assert torch.equal(load_child(tmp_path)(x), supernet(x, ALL_CELLS))


@pytest.mark.parametrize("index", range(len(CELL_NAMES)), ids=CELL_NAMES)
def test_every_cell_scripts_and_exports(tmp_path, index):
    space = SearchSpace(layers=3, channels=8, num_classes=4, in_channels=3)
    child = trained_child(space, (index,) * 3).eval()
    card = export(child, tmp_path, space=space)
    assert card.cells == [CELL_NAMES[index]] * 3
    x = image(space)
    with torch.no_grad():
        expected = child(x)
        assert torch.equal(load_child(tmp_path)(x), expected)
        scripted = torch.jit.load(tmp_path / "model.torchscript.pt")
        assert torch.allclose(scripted(x), expected, atol=1e-6)


# Runs with ``python -I -S``: -I drops PYTHONPATH, the user site and the script's folder (and the
# cwd is tmp_path, outside the checkout); -S skips site, so the .pth file of segnas's editable
# install (which adds a meta-path finder for segnas's packages) is never processed. Only the
# site-packages folder holding torch is put on sys.path. The script first proves that no segnas
# package can be found, then blocks them outright, so any attempt to import one would fail the
# run instead of silently succeeding.
STANDALONE = textwrap.dedent(
    """
    import importlib.abc, importlib.util, json, sys
    from pathlib import Path

    site_packages, project, jobs = json.loads(sys.argv[1])
    sys.path.extend(site_packages)
    for name in project:
        assert importlib.util.find_spec(name) is None, f"{name} is importable"
    assert not any("editable" in type(f).__module__ for f in sys.meta_path), sys.meta_path

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in project:
                raise ImportError(f"segnas package {name} imported by a stand-alone export")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in ("segnas", "supernet"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise AssertionError(f"{name} imported")

    import torch

    for export_dir, input_path, output_path in jobs:
        export_dir = Path(export_dir)
        card = json.loads((export_dir / "card.json").read_text())
        model = torch.jit.load(export_dir / card["files"]["torchscript"])
        x = torch.load(input_path)
        side = card["input_size"]
        assert tuple(x.shape) == (1, card["in_channels"], side, side), x.shape
        with torch.no_grad():
            torch.save(model(x), output_path)
    assert not [m for m in sys.modules if m.partition(".")[0] in project]
    print("standalone ok")
    """
)


def test_the_torchscript_runs_where_segnas_cannot_be_imported(tmp_path, exported):
    sum_space = SPACE.model_copy(update={"skip_merge": "sum"})
    sum_child = trained_child(sum_space, (5, 4, 3, 2, 1, 0))
    export(sum_child, tmp_path / "sum", space=sum_space)
    cases = {"concat": (SPACE, exported[0], exported[1]), "sum": (sum_space, sum_child, None)}
    jobs, expected = [], {}
    for name, (space, child, out) in cases.items():
        out = out or tmp_path / name
        child = copy.deepcopy(child).eval()
        x = image(space)
        torch.save(x, tmp_path / f"{name}-input.pt")
        with torch.no_grad():
            expected[name] = child(x)
        jobs.append([str(out), str(tmp_path / f"{name}-input.pt"), str(tmp_path / f"{name}.pt")])
    site_packages = [str(Path(torch.__file__).resolve().parents[1])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            STANDALONE,
            json.dumps([site_packages, PROJECT_PACKAGES, jobs]),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only; the run takes seconds
    )
    assert result.returncode == 0, result.stderr
    assert "standalone ok" in result.stdout
    for name, want in expected.items():
        got = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert got.shape == (1, SPACE.num_classes, SIZE, SIZE)
        assert torch.allclose(got, want, atol=1e-5)


def test_the_subprocess_would_see_segnas_without_the_isolation(tmp_path):
    """The control for the test above: the same interpreter with only ``-I`` still finds
    segnas through the editable install, so ``-S`` is what makes the proof hold."""
    probe = "import importlib.util as u; print(u.find_spec('supernet') is not None)"
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_odd_sides_run_and_keep_the_input_size(exported):
    # The card says sides that are multiples of size_multiple pool evenly; others still run.
    child, out, _ = exported
    child = copy.deepcopy(child).eval()
    scripted = torch.jit.load(out / "model.torchscript.pt")
    x = image(size=13)
    with torch.no_grad():
        y = scripted(x)
        assert y.shape == (1, 4, 13, 13)
        assert torch.allclose(y, child(x), atol=1e-6)


def test_refuses_a_foreign_folder_and_a_file(tmp_path):
    child = build_child(SPACE, ALL_CELLS)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"not empty and not a previous export.*notes\.txt"):
        export(child, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    # A previous export plus one extra file is no longer only an export either.
    (tmp_path / "mixed").mkdir()
    export(child, tmp_path / "mixed")
    (tmp_path / "mixed" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"extra\.bin"):
        export(child, tmp_path / "mixed")

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export(child, a_file)


def test_an_empty_folder_or_a_previous_export_is_written(tmp_path):
    (tmp_path / "empty").mkdir()
    export(build_child(SPACE, ALL_CELLS), tmp_path / "empty")
    assert load_card(tmp_path / "empty").arch == list(ALL_CELLS)

    # Exporting again replaces the previous export, leftovers of an interrupted one included.
    (tmp_path / "empty" / ".state_dict.pt.abc123.tmp").write_bytes(b"half")
    other = (4, 4, 5, 5, 0, 0)
    export(build_child(SPACE, other), tmp_path / "empty")
    assert load_card(tmp_path / "empty").arch == list(other)
    assert load_child(tmp_path / "empty").arch == list(other)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == sorted(FILES.values())


def test_an_interrupted_export_leaves_no_half_file(tmp_path, monkeypatch):
    child = build_child(SPACE, ALL_CELLS)
    export(child, tmp_path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a state_dict")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export(build_child(SPACE, (0,) * 6), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    # No temporary file and no truncated state_dict.pt: the old one is intact, and without
    # card.json the folder no longer reads as a complete export.
    assert names == {"model.torchscript.pt", "state_dict.pt", "architecture.json"}
    monkeypatch.undo()
    torch.load(tmp_path / "state_dict.pt", weights_only=True)
    with pytest.raises(ConfigError, match=r"card\.json is missing"):
        load_card(tmp_path)
    with pytest.raises(ConfigError, match=r"card\.json is missing"):
        load_child(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"classes": ["a", "b"]}, "2 class names for 4 classes"),
        ({"mean": [0.5], "std": [0.5]}, "normalisation has 1 channels"),
        ({"std": [0.2, 0.0, 0.3]}, "greater than 0"),
        ({"input_size": 2}, "below the smallest side 4"),
        ({"metrics": {"miou": float("nan")}}, "metrics.miou"),
        ({"space": SPACE.model_copy(update={"channels": 16})}, "does not match the search space"),
        ({"space": SearchSpace(layers=5, channels=8, num_classes=4)}, "does not fit"),
    ],
)
def test_refuses_arguments_that_do_not_describe_the_model(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        export(build_child(SPACE, ALL_CELLS), tmp_path / "out", **overrides)
    assert not (tmp_path / "out").exists()


def test_load_card_refuses_a_newer_format(tmp_path):
    export(build_child(SPACE, ALL_CELLS), tmp_path)
    raw = json.loads((tmp_path / "card.json").read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    raw["a_field_from_the_future"] = True
    (tmp_path / "card.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="format version 2"):
        load_card(tmp_path)
