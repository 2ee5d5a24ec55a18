"""The ``segnas`` command line, run in-process: JSON outputs and one-line user errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from segnas.cli import main
from supernet.data.digits import DIGIT_CLASSES
from supernet.space import CELL_NAMES, CELL_REGISTRY

FIXTURE = Path(__file__).parent / "fixtures" / "voc2012-sample"
PAPER_ARCH = "0 5 5 2 2 2 4 5 3 5 3 4"


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json prints exactly one line"
    return json.loads(out)


def run_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("segnas: error: ")
    return err[0]


def test_arch_describe_json(capsys):
    out = run_json(capsys, "arch", "describe", PAPER_ARCH, "--classes", "22", "--size", "64")
    assert out["arch"] == [0, 5, 5, 2, 2, 2, 4, 5, 3, 5, 3, 4]
    assert isinstance(out["params"], int) and out["params"] > 0
    assert isinstance(out["flops"], int) and out["flops"] > 0
    assert [row["name"] for row in out["layers"]][:3] == ["conv3x3", "maxpool3x3", "maxpool3x3"]
    assert [row["resolution"] for row in out["layers"]] == [64] * 4 + [32] * 4 + [16] * 4
    # parameters of the parts add up to the whole
    cells = sum(r["encoder_params"] + r["decoder_params"] for r in out["layers"])
    assert cells < out["params"]


def test_cells_lists_the_registry_with_the_papers_six_first(capsys):
    out = run_json(capsys, "cells", "--channels", "8")
    names = [c["name"] for c in out["cells"]]
    assert names == list(CELL_REGISTRY) and out["default"] == list(CELL_NAMES)
    assert [c["default_index"] for c in out["cells"][:6]] == list(range(6))
    assert all(c["default_index"] is None for c in out["cells"][6:])
    assert all(c["params"] > 0 and c["description"] for c in out["cells"])


def test_arch_describe_reads_the_indices_in_the_spaces_own_cells(capsys):
    out = run_json(capsys, "arch", "describe", "1 0", "--cells", "conv3x3,aspp", "--size", "32")
    assert [row["name"] for row in out["layers"]] == ["aspp", "conv3x3"]  # the length: 2 layers
    assert "unknown cells ['conv7x7']" in run_error(
        capsys, "arch", "describe", "0", "--cells", "conv7x7"
    )


def test_arch_describe_table(capsys):
    assert main(["arch", "describe", PAPER_ARCH, "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "maxpool3x3" in out and "parameters" in out and "FLOPs" in out


def test_arch_describe_params_match_channels_and_classes(capsys):
    small = run_json(capsys, "arch", "describe", PAPER_ARCH, "--channels", "8", "--size", "16")
    large = run_json(capsys, "arch", "describe", PAPER_ARCH, "--channels", "16", "--size", "16")
    assert small["params"] < large["params"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["arch", "describe", "0 5 5", "--layers", "12"], "has 3 layers, the search space has 12"),
        (["arch", "describe", "0 5 5 2 2 2 4 5 3 5 3 9"], "layer 11 has cell index 9"),
        (["arch", "describe", PAPER_ARCH, "--channels", "0"], "channels"),
        (["arch", "describe", PAPER_ARCH, "--size", "3"], "--size must be between 4"),
        (["data", "inspect", "-D", "images=["], "not valid YAML"),
        (["data", "inspect", "--preview", "grid.foo"], "--preview must name"),
        (["data", "inspect", "--preview", "g.png", "--preview-count", "0"], "--preview-count"),
        (["data", "inspect", "--dataset", "imagenet"], "imagenet"),
        (["data", "inspect", "--dataset", "voc", "--root", "/nonexistent"], "/nonexistent"),
        (["data", "inspect", "-D", "imagez=10"], "imagez"),
        (["data", "inspect", "-D", "images"], "KEY=VALUE"),
        (["train", "--arch", "0 0", "--layers", "2", "--epochs", "0"], "epochs"),
        (["train", "--arch", "2 2 2 2", "--layers", "6"], "has 4 layers, the search space has 6"),
        (["train", "--arch", "2 2 x"], "must be cell indices"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, message):
    assert message in run_error(capsys, *argv)


def test_data_inspect_digits(capsys, tmp_path):
    preview = tmp_path / "grid.png"
    out = run_json(
        capsys, "data", "inspect", "--dataset", "digits", "-D", "images=40", "--size", "32",
        "--preview", str(preview),
    )  # fmt: skip
    assert out["splits"] == {"train": 28, "val": 8, "test": 4}
    assert out["num_classes"] == 11
    assert out["classes"][0] == 0 and set(out["classes"]) <= set(range(11))
    assert len(out["histogram"]["train"]) == 11
    # A readable grid: 8 rows of image | labels | overlay, each tile drawn far larger than
    # its 32 px, with a legend of the classes shown (background, digits).
    with Image.open(preview) as image:
        assert image.width >= 3 * 150 and image.height >= 8 * 150
    legend = out["preview_legend"]
    assert legend[0] == "0 background" and len(legend) >= 2
    assert all(entry.split(" ", 1)[1] in DIGIT_CLASSES for entry in legend)


def test_data_inspect_of_a_config_describes_the_search_s_data(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: {kind: shapes, images: 60}\n")
    out = run_json(capsys, "data", "inspect", "--config", str(config))
    assert out["splits"] == {"train": 42, "val": 12, "test": 6}
    assert out["class_names"] == ["background", "disc", "square", "triangle", "diamond"]
    assert out["classes"][0] == 0 and len(out["classes"]) >= 4
    share = out["pixel_share"]
    assert set(share) == {str(k) for k in range(5)}
    assert sum(share.values()) == pytest.approx(1.0, abs=1e-4)
    assert 0.55 <= share["0"] <= 0.85  # background-dominated, like VOC
    error = run_error(capsys, "data", "inspect", "--config", str(config), "--size", "8")
    assert "drop --size" in error


def test_data_inspect_voc_fixture(capsys, tmp_path):
    out = run_json(
        capsys, "data", "inspect", "--dataset", "voc", "--root", str(FIXTURE), "--size", "64"
    )
    assert sum(out["splits"].values()) == 4
    assert set(out["classes"]) == {0, 2, 5, 12, 15, 17}
    assert out["class_names"][12] == "dog"


def test_data_inspect_voc_void_as_class(capsys):
    out = run_json(
        capsys,
        "data",
        "inspect",
        "--dataset",
        "voc",
        "--root",
        str(FIXTURE),
        "--size",
        "64",
        "-D",
        "void_as_class=true",
    )
    assert out["num_classes"] == 22
    assert 21 in out["classes"]


def test_data_inspect_names_a_broken_file(capsys, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(FIXTURE, root)
    (root / "VOCdevkit/VOC2012/SegmentationClass/2007_006449.png").unlink()
    message = run_error(capsys, "data", "inspect", "--dataset", "voc", "--root", str(root))
    assert "2007_006449.png" in message


def test_train_json_on_tiny_digits(capsys):
    out = run_json(
        capsys,
        "train",
        "--arch",
        "0 2 5",  # three layers: --layers defaults to the architecture's
        "--channels",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "-D",
        "images=40",
        "--size",
        "24",
    )
    for key in ("accuracy", "mean_precision", "mean_recall", "miou", "miou_plus"):
        assert 0.0 <= out[key] <= 1.0
    assert isinstance(out["params"], int) and out["params"] > 0
    assert out["arch"] == [0, 2, 5]
    assert len(out["epochs"]) == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("segnas ")


def test_building_the_parser_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, segnas.cli; segnas.cli.build_parser(); "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_ray_job_gets_the_database_url_without_its_password() -> None:
    from sqlalchemy.engine import make_url

    from segnas.commands.worker import job_database_url

    url = make_url("postgresql+psycopg://segnas:s3cret@postgres:5432/segnas")
    assert job_database_url(url) == "postgresql+psycopg://segnas@postgres:5432/segnas"
    assert job_database_url(make_url("sqlite:////data/segnas.db")) == "sqlite:////data/segnas.db"


def test_a_reader_that_has_gone_gets_no_traceback() -> None:
    # `segnas cells --json | head`: the pipe's reader is gone before the output is written
    # (closed here before the command starts, so every write fails, whatever the timing).
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "segnas.cli", "cells", "--json"],
            stdout=write, stderr=subprocess.PIPE, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 141
    assert done.stderr == b""
