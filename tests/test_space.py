import pytest
from pydantic import ValidationError

from errors import ArchitectureError, SegnasError
from supernet.space import CELL_NAMES, SearchSpace, default_reductions, format_arch

PAPER_ARCH = "0 5 5 2 2 2 4 5 3 5 3 4"


def test_defaults_follow_enas_macro_search():
    space = SearchSpace()
    assert space.layers == 12
    assert space.channels == 36
    assert space.cells == CELL_NAMES
    assert space.cells[0] == "conv3x3" and space.cells[5] == "maxpool3x3"
    assert space.reductions == (3, 7)
    assert space.num_choices == 6
    assert space.size == 6**12


@pytest.mark.parametrize(("layers", "expected"), [(12, (3, 7)), (6, (1, 3)), (3, (0, 1)), (1, ())])
def test_default_reductions(layers, expected):
    assert default_reductions(layers) == expected
    assert SearchSpace(layers=layers).reductions == expected


def test_parse_and_format_round_trip():
    space = SearchSpace()
    arch = space.parse(PAPER_ARCH)
    assert arch == (0, 5, 5, 2, 2, 2, 4, 5, 3, 5, 3, 4)
    assert format_arch(arch) == PAPER_ARCH
    assert space.parse("0,5,5,2,2,2,4,5,3,5,3,4") == arch
    assert space.parse(list(arch)) == arch


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 5 5", "has 3 layers, the search space has 12"),
        ("0 5 5 2 2 2 4 5 3 5 3 6", "layer 11 has cell index 6; valid indices are 0..5"),
        ("0 5 5 2 2 2 4 5 3 5 3 -1", "layer 11 has cell index -1"),
        ("0 5 5 2 2 2 4 5 3 5 3 x", "must be cell indices separated by spaces"),
        ("", "has 0 layers"),
    ],
)
def test_bad_architectures_are_clear_errors(text, message):
    with pytest.raises(ArchitectureError, match=message) as info:
        SearchSpace().parse(text)
    assert isinstance(info.value, SegnasError)


def test_check_rejects_non_integers():
    with pytest.raises(ArchitectureError):
        SearchSpace(layers=2).check([True, 0])
    with pytest.raises(ArchitectureError):
        SearchSpace(layers=2).check([0.5, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reductions": (7, 3)},
        {"reductions": (3, 3)},
        {"reductions": (12,)},
        {"cells": ("conv3x3", "conv7x7")},
        {"cells": ("conv3x3", "conv3x3")},
        {"cells": ()},
        {"layers": 0},
        {"skip_merge": "mul"},
        {"chanels": 36},
    ],
)
def test_invalid_spaces_are_rejected(kwargs):
    with pytest.raises(ValidationError):
        SearchSpace(**kwargs)


def test_cell_subset_reindexes_choices():
    space = SearchSpace(layers=2, cells=("conv5x5", "maxpool3x3"))
    assert space.num_choices == 2
    assert space.cell_name(1) == "maxpool3x3"
    with pytest.raises(ArchitectureError):
        space.parse("0 2")


def test_numpy_integers_are_architectures():
    import numpy as np

    arch = SearchSpace(layers=3).check(np.array([0, 5, 2]))
    assert arch == (0, 5, 2) and all(type(c) is int for c in arch)


def test_min_input_size():
    assert SearchSpace().min_input_size == 4
    assert SearchSpace(reductions=()).min_input_size == 1
