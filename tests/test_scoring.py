"""Scoring with shared weights: batch statistics, nothing written back."""

from __future__ import annotations

import torch

from supernet.network import SuperNet
from supernet.scoring import batch_statistics, score_architectures
from supernet.space import SearchSpace

SPACE = SearchSpace(layers=3, channels=8, num_classes=4)


def norm_buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k
    }


def test_batch_statistics_normalise_by_the_batch_and_keep_running_statistics() -> None:
    torch.manual_seed(0)
    net = SuperNet(SPACE)
    x = torch.randn(4, 3, 16, 16) * 3 + 1
    arch = (0, 2, 5)
    net.eval()
    before = norm_buffers(net)
    with torch.no_grad(), batch_statistics(net):
        scored = net(x, arch)
    assert not net.training  # the mode is restored
    for key, value in norm_buffers(net).items():
        assert torch.equal(value, before[key]), key
    # Same output as train mode (batch statistics), which would have moved the buffers.
    net.train()
    with torch.no_grad():
        trained = net(x, arch)
    torch.testing.assert_close(scored, trained)
    assert any(not torch.equal(v, before[k]) for k, v in norm_buffers(net).items())
    # and not the eval-mode output, which uses the running statistics
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(x, arch), scored)


def test_score_architectures_gives_metrics_per_architecture() -> None:
    torch.manual_seed(0)
    net = SuperNet(SPACE)
    images = torch.randn(6, 3, 16, 16)
    masks = torch.randint(0, 4, (6, 16, 16))
    archs = [(0, 0, 0), (4, 4, 4), (0, 0, 0)]
    metrics = score_architectures(net, archs, [(images, masks)], num_classes=4)
    assert len(metrics) == 3
    assert metrics[0] == metrics[2]  # deterministic, and independent of what ran before
    assert metrics[0] != metrics[1]
    assert all(m.pixels == 6 * 16 * 16 for m in metrics)
