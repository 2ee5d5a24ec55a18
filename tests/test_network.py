import copy
import itertools
import pickle

import pytest
import torch
from torch import nn

from supernet.cells import ASPP, Cell
from supernet.network import ChildNet, SuperNet, build_child
from supernet.profile import ChildSizes, count_flops, count_params
from supernet.space import CELL_NAMES, CELL_REGISTRY, SearchSpace

SMALL = SearchSpace(layers=6, channels=8, num_classes=5)
PAPER_ARCH = (0, 5, 5, 2, 2, 2, 4, 5, 3, 5, 3, 4)
ARCHS_6 = [(0, 1, 2, 3, 4, 5), (4,) * 6, (5,) * 6, (2, 4, 5, 1, 3, 0)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


REGISTRY = tuple(CELL_REGISTRY)
EVERY_CELL = SearchSpace(layers=4, channels=8, num_classes=5, cells=REGISTRY)
"""A space of every registered cell: a cell added to the registry is tested by being there."""


@pytest.mark.parametrize("name", REGISTRY)
def test_every_cell_keeps_shape_and_is_finite(name):
    cell = Cell(name, 8)
    x = torch.randn(2, 8, 9, 7)
    y = cell(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", REGISTRY)
def test_every_cell_starts_with_conv1x1_bn_relu(name):
    proj = Cell(name, 8).proj
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1)
    assert isinstance(proj[1], nn.BatchNorm2d) and isinstance(proj[2], nn.ReLU)


def test_cells_are_the_papers_operations():
    c = 8
    ops = {name: Cell(name, c).op for name in CELL_NAMES}
    assert ops["conv3x3"][0].kernel_size == (3, 3) and ops["conv3x3"][0].groups == 1
    assert ops["conv5x5"][0].kernel_size == (5, 5) and ops["conv5x5"][0].groups == 1
    for name, k in (("sep3x3", 3), ("sep5x5", 5)):
        depthwise, pointwise = ops[name][0], ops[name][1]
        assert depthwise.kernel_size == (k, k) and depthwise.groups == c
        assert pointwise.kernel_size == (1, 1)
        assert isinstance(ops[name][2], nn.BatchNorm2d) and isinstance(ops[name][3], nn.ReLU)
    assert isinstance(ops["avgpool3x3"], nn.AvgPool2d) and ops["avgpool3x3"].stride == 1
    assert isinstance(ops["maxpool3x3"], nn.MaxPool2d) and ops["maxpool3x3"].stride == 1


def test_the_dilated_and_aspp_cells_are_deeplabs_operations():
    c = 8
    ops = {name: Cell(name, c).op for name in REGISTRY[len(CELL_NAMES) :]}
    for name, rate in (("dilconv3x3_r2", 2), ("dilconv3x3_r4", 4)):
        conv = ops[name][0]
        assert conv.kernel_size == (3, 3) and conv.dilation == (rate, rate) and conv.groups == 1
    depthwise, pointwise = ops["dilsep3x3_r2"][0], ops["dilsep3x3_r2"][1]
    assert depthwise.dilation == (2, 2) and depthwise.groups == c
    assert pointwise.kernel_size == (1, 1)
    aspp = ops["aspp"]
    assert isinstance(aspp, ASPP)
    rates = [b[0].dilation[0] for b in aspp.branches]
    kernels = [b[0].kernel_size[0] for b in aspp.branches]
    assert list(zip(kernels, rates, strict=True)) == [(1, 1), (3, 2), (3, 4)]
    assert isinstance(aspp.image[0], nn.AdaptiveAvgPool2d)
    assert aspp.fuse[0].in_channels == 4 * c and aspp.fuse[0].out_channels == c
    assert isinstance(aspp.fuse[1], nn.BatchNorm2d)


def test_the_aspp_cell_sees_the_whole_image():
    # Image-level pooling: a change far from a pixel reaches it through one cell, which no
    # 3x3 at rate 4 (a 9x9 field) could do on a 32-pixel map.
    cell = Cell("aspp", 4).eval()
    x = torch.randn(1, 4, 32, 32)
    y = x.clone()
    y[..., 31, 31] += 10.0
    assert not torch.allclose(cell(x)[..., 0, 0], cell(y)[..., 0, 0])
    conv = Cell("dilconv3x3_r4", 4).eval()
    torch.testing.assert_close(conv(x)[..., 0, 0], conv(y)[..., 0, 0])


def test_a_space_names_registered_cells_in_any_order_and_refuses_others():
    space = SearchSpace(layers=2, channels=4, num_classes=3, cells=("aspp", "conv3x3"))
    assert [c.name for c in SuperNet(space).encoder[0]] == ["aspp", "conv3x3"]
    with pytest.raises(ValueError, match="unknown cells"):
        SearchSpace(layers=2, channels=4, num_classes=3, cells=("conv7x7",))
    assert SearchSpace().cells == CELL_NAMES  # the paper's six stay the default


@pytest.mark.parametrize("name", ["avgpool3x3", "maxpool3x3"])
def test_pooling_cells_are_not_no_ops(name):
    op = Cell(name, 4).op
    x = torch.randn(1, 4, 6, 6)
    y = op(x)
    assert not torch.allclose(y, x)
    if name == "maxpool3x3":
        assert torch.equal(y[0, :, 2, 2], x[0, :, 1:4, 1:4].amax(dim=(-1, -2)))
    else:
        assert torch.allclose(y[0, :, 2, 2], x[0, :, 1:4, 1:4].mean(dim=(-1, -2)))


def test_only_the_chosen_cell_of_each_layer_runs():
    net = SuperNet(SMALL)
    ran: set[tuple[str, int, int]] = set()
    for side in ("encoder", "decoder"):
        for layer, candidates in enumerate(getattr(net, side)):
            for index, cell in enumerate(candidates):
                cell.register_forward_hook(lambda *_, key=(side, layer, index): ran.add(key))
    n = SMALL.layers
    for arch in ARCHS_6:
        ran.clear()
        net(torch.randn(2, 3, 16, 16), arch)
        expected = {("encoder", i, arch[i]) for i in range(n)}
        expected |= {("decoder", j, arch[n - 1 - j]) for j in range(n)}
        assert ran == expected


def test_gradients_reach_only_the_chosen_cells():
    net = SuperNet(SMALL)
    arch = ARCHS_6[0]
    net(torch.randn(2, 3, 16, 16), arch).sum().backward()
    n = SMALL.layers
    for i in range(n):
        for index, cell in enumerate(net.encoder[i]):
            has_grad = any(p.grad is not None for p in cell.parameters())
            assert has_grad == (index == arch[i])
        for index, cell in enumerate(net.decoder[i]):
            has_grad = any(p.grad is not None for p in cell.parameters())
            assert has_grad == (index == arch[n - 1 - i])


def test_architectures_compute_different_functions():
    net = SuperNet(SMALL).eval()
    x = torch.randn(2, 3, 16, 16)
    outputs = [net(x, arch) for arch in ARCHS_6]
    for a in range(len(outputs)):
        for b in range(a + 1, len(outputs)):
            assert not torch.allclose(outputs[a], outputs[b])


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (5, 9)])
def test_output_has_input_resolution(size):
    net = SuperNet(SMALL)
    assert net(torch.randn(2, 3, *size), ARCHS_6[0]).shape == (2, 5, *size)


@pytest.mark.parametrize(
    "space",
    [
        SMALL,
        SMALL.model_copy(update={"skip_merge": "sum"}),
        SearchSpace(layers=6, channels=8, num_classes=5, reductions=(0, 5)),
        SearchSpace(layers=6, channels=8, num_classes=5, reductions=()),
        SearchSpace(layers=1, channels=4, num_classes=2),
        EVERY_CELL,
    ],
    ids=["default", "sum", "first-last", "no-reduction", "one-layer", "every-cell"],
)
def test_child_matches_supernet_numerically(space):
    net = SuperNet(space)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    archs = [tuple(a[i % len(a)] for i in range(space.layers)) for a in ARCHS_6]
    if space is EVERY_CELL:  # every registered cell, in every layer once
        n = len(space.cells)
        archs = [tuple((k + i) % n for i in range(space.layers)) for k in range(n)]
    for arch in archs:  # a few steps so that weights and BN statistics are not the initial ones
        optimizer.zero_grad()
        net(torch.randn(4, 3, 16, 16), arch).pow(2).mean().backward()
        optimizer.step()
    x = torch.randn(3, 3, 16, 12)
    for arch in archs:
        for train_mode in (False, True):
            net.train(train_mode)
            child = build_child(space, arch, supernet=net)
            assert child.training == train_mode
            torch.testing.assert_close(child(x), net(x, arch), rtol=0, atol=0)


def test_child_holds_only_the_chosen_cells():
    net = SuperNet(SMALL)
    arch = ARCHS_6[3]
    child = build_child(SMALL, arch, supernet=net)
    n = SMALL.layers
    chosen = sum(count_params(net.encoder[i][arch[i]]) for i in range(n))
    chosen += sum(count_params(net.decoder[j][arch[n - 1 - j]]) for j in range(n))
    shared = count_params(net.stem) + count_params(net.merges) + count_params(net.head)
    assert count_params(child) == chosen + shared
    assert count_params(child) < count_params(net)


def test_child_is_a_copy_not_a_view():
    net = SuperNet(SMALL)
    child = build_child(SMALL, ARCHS_6[0], supernet=net)
    with torch.no_grad():
        for p in child.parameters():
            p.add_(1.0)
    assert not torch.equal(child.head.weight, net.head.weight)


def test_fresh_child_has_the_same_parameters_layout():
    net = SuperNet(SMALL)
    arch = ARCHS_6[3]
    fresh = build_child(SMALL, arch)
    copied = build_child(SMALL, arch, supernet=net)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in copied.state_dict().items()
    }
    fresh.load_state_dict(copied.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fresh.eval()(x), copied.eval()(x))


# TorchScript is deprecated in torch 2.13 but is still the format the issue asks for.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    "cells, arch",
    [
        (CELL_NAMES, PAPER_ARCH),
        (CELL_NAMES, (4,) * 12),
        (CELL_NAMES, (1, 3) * 6),
        *[(REGISTRY, (k,) * 12) for k in range(len(CELL_NAMES), len(REGISTRY))],
    ],
)
def test_child_is_torchscriptable(cells, arch):
    space = SearchSpace(channels=8, num_classes=22, cells=cells)
    child = build_child(space, arch).eval()
    scripted = torch.jit.script(child)
    x = torch.randn(1, 3, 20, 20)
    torch.testing.assert_close(scripted(x), child(x))


def test_supernet_copies_and_pickles_without_its_views():
    net = SuperNet(SMALL)
    net(torch.randn(1, 3, 8, 8), ARCHS_6[0])
    assert len(net._views) == 1
    clone = copy.deepcopy(net)
    restored = pickle.loads(pickle.dumps(net))
    for other in (clone, restored):
        assert len(other._views) == 0
        torch.testing.assert_close(
            other.eval()(torch.ones(1, 3, 8, 8), ARCHS_6[0]),
            net.eval()(torch.ones(1, 3, 8, 8), ARCHS_6[0]),
        )


def test_view_cache_is_bounded():
    net = SuperNet(SMALL, view_cache=2)
    for arch in ARCHS_6:
        net.view(arch)
    assert list(net._views) == ARCHS_6[-2:]


def test_view_rejects_architectures_outside_the_space():
    from errors import ArchitectureError

    with pytest.raises(ArchitectureError):
        SuperNet(SMALL)(torch.randn(1, 3, 8, 8), (0, 1, 2))
    with pytest.raises(ValueError, match="different search space"):
        build_child(
            SearchSpace(layers=6, channels=4, num_classes=5), ARCHS_6[0], supernet=SuperNet(SMALL)
        )


def test_paper_architecture_size_and_cost():
    space = SearchSpace(num_classes=22)
    child = build_child(space, PAPER_ARCH)
    assert isinstance(child, ChildNet)
    params = count_params(child)
    assert 100_000 < params < 1_000_000
    flops = count_flops(child, (64, 64))
    assert flops > 0
    # FLOPs grow with the pixel count (all cells are same-size convs or pools)
    assert count_flops(child, (128, 128)) == pytest.approx(4 * flops, rel=0.01)
    # a network of pooling cells is much cheaper than one of 5x5 convolutions
    assert (
        count_flops(build_child(space, (5,) * 12), (64, 64))
        < flops
        < count_flops(build_child(space, (2,) * 12), (64, 64))
    )


def test_flop_count_of_one_convolution():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    # 8 * 8 outputs * 4 channels * (3 * 3 * 3) multiply-adds * 2
    assert count_flops(conv, (8, 8)) == 8 * 8 * 4 * 27 * 2


def test_child_lists_its_layer_cells_in_order():
    space = SMALL
    arch = ARCHS_6[3]
    child = build_child(space, arch)
    encoder, decoder = child.layer_cells()
    n = space.layers
    assert [c.name for c in encoder] == [space.cell_name(a) for a in arch]
    assert [c.name for c in decoder] == [space.cell_name(arch[n - 1 - j]) for j in range(n)]


def test_views_follow_the_supernets_mode():
    net = SuperNet(SMALL)
    arch = ARCHS_6[0]
    assert net.view(arch).training
    net.eval()
    view = net.view(arch)  # cached view, new mode
    assert not view.training
    assert all(not m.training for m in view.modules() if isinstance(m, nn.BatchNorm2d))


# Entangled sharing: one conv1x1 per layer, the 3x3 kernels the centres of the 5x5 ones.


def _trained(net: SuperNet, archs) -> SuperNet:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for arch in archs:  # weights and BN statistics away from their initial values
        optimizer.zero_grad()
        net(torch.randn(4, 3, 16, 16), arch).pow(2).mean().backward()
        optimizer.step()
    return net


def test_entangled_conv3x3_trains_the_centre_of_conv5x5_and_nothing_else_of_it():
    net = SuperNet(SMALL, sharing="entangled")
    conv3, conv5 = CELL_NAMES.index("conv3x3"), CELL_NAMES.index("conv5x5")
    big = net.encoder[0][conv5].op[0].weight
    before = big.detach().clone()
    arch = (conv3,) + (4,) * (SMALL.layers - 1)
    torch.optim.SGD(net.parameters(), lr=0.1).zero_grad()
    net(torch.randn(2, 3, 16, 16), arch).pow(2).mean().backward()
    with torch.no_grad():
        big.sub_(0.1 * big.grad)
    changed = (big.detach() != before).any(dim=0).any(dim=0)
    inner = torch.zeros(5, 5, dtype=torch.bool)
    inner[1:4, 1:4] = True
    assert changed[inner].all() and not changed[~inner].any()


def test_entangled_cells_of_a_layer_share_one_projection_and_the_pointwise_conv():
    net = SuperNet(SMALL, sharing="entangled")
    layer = net.decoder[2]
    assert len({id(cell.proj) for cell in layer}) == 1
    sep3, sep5 = CELL_NAMES.index("sep3x3"), CELL_NAMES.index("sep5x5")
    assert layer[sep3].op[1] is layer[sep5].op[1]
    assert net.encoder[0][0].proj is not net.encoder[1][0].proj  # only within a layer
    independent = SuperNet(SMALL)
    assert count_params(net) < count_params(independent)


@pytest.mark.parametrize("arch", [*ARCHS_6, (0,) * 6, (1,) * 6])
def test_entangled_child_matches_supernet_and_owns_plain_weights(arch):
    net = _trained(SuperNet(SMALL, sharing="entangled"), [*ARCHS_6, (0,) * 6, (1,) * 6])
    x = torch.randn(3, 3, 16, 12)
    for train_mode in (False, True):
        net.train(train_mode)
        child = build_child(SMALL, arch, supernet=net)
        torch.testing.assert_close(child(x), net(x, arch), rtol=0, atol=0)
    fresh = build_child(SMALL, arch)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in child.state_dict().items()
    }
    assert count_params(child) == count_params(fresh)


def test_entangled_supernet_state_round_trips():
    net = _trained(SuperNet(SMALL, sharing="entangled"), ARCHS_6)
    again = SuperNet(SMALL, sharing="entangled")
    again.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 16, 16)
    for arch in ARCHS_6:
        torch.testing.assert_close(again.eval()(x, arch), net.eval()(x, arch), rtol=0, atol=0)


def test_entangling_skips_pairs_whose_larger_cell_is_not_in_the_space():
    space = SearchSpace(layers=2, channels=4, num_classes=3, cells=("conv3x3", "maxpool3x3"))
    net = SuperNet(space, sharing="entangled")
    assert isinstance(net.encoder[0][0].op[0], nn.Conv2d)
    with pytest.raises(ValueError, match="sharing must be one of"):
        SuperNet(space, sharing="tied")


@pytest.mark.parametrize("skip_merge", ["concat", "sum"])
def test_child_sizes_count_every_architecture_as_building_it_does(skip_merge):
    space = SearchSpace(layers=2, channels=8, num_classes=5, skip_merge=skip_merge)
    sizes = ChildSizes(space)
    for arch in itertools.product(range(len(space.cells)), repeat=space.layers):  # all 36
        assert sizes.params(arch) == count_params(build_child(space, arch)), arch


@pytest.mark.parametrize(("skip_merge", "size"), [("concat", 32), ("sum", 33)])
def test_child_sizes_count_the_flops_of_every_architecture_as_a_forward_pass_does(skip_merge, size):
    # Two reductions, an odd side (pooling rounds down): every layer at its own resolution.
    space = SearchSpace(layers=3, channels=6, num_classes=4, skip_merge=skip_merge)
    sizes = ChildSizes(space, input_size=size)
    for arch in itertools.product(range(len(space.cells)), repeat=space.layers):  # all 216
        child = build_child(space, arch)
        assert sizes.flops(arch) == count_flops(child, (size, size), space.in_channels), arch


@pytest.mark.parametrize("name", REGISTRY)
def test_child_sizes_count_every_registered_cell_as_building_it_does(name):
    other = "sep3x3" if name == "conv3x3" else "conv3x3"
    space = SearchSpace(layers=3, channels=6, num_classes=4, cells=(name, other))
    sizes = ChildSizes(space, input_size=20)
    for arch in itertools.product(range(2), repeat=space.layers):
        child = build_child(space, arch)
        assert sizes.params(arch) == count_params(child), arch
        assert sizes.flops(arch) == count_flops(child, (20, 20), space.in_channels), arch


def test_child_sizes_without_an_input_size_say_there_are_no_flops():
    with pytest.raises(ValueError, match="input_size"):
        ChildSizes(SMALL).flops([0] * SMALL.layers)
