"""Checkpoint files: what they hold loads without unpickling code, and a tampered file is
refused in one line instead of running what it carries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from errors import ConfigError
from workers.checkpoints import FORMAT, load_checkpoint, save_checkpoint


class _Payload:
    """Unpickling this runs code: what an attacker's checkpoint would carry."""

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path("/tmp/segnas-pwned"),))


def test_a_checkpoint_of_weights_optimizer_and_rng_states_round_trips(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    payload = {
        "weights": {"supernet": net.state_dict(), "optimizer": optimizer.state_dict()},
        "rng": [{"torch": torch.get_rng_state(), "python": [1, 2, 3]}],
        "best": {"reward": 0.5, "arch": [0, 1]},
        "epoch": 3,
    }
    save_checkpoint(tmp_path / "epoch-00003.pt", payload)
    loaded = load_checkpoint(tmp_path / "epoch-00003.pt")
    assert loaded["format"] == FORMAT and loaded["epoch"] == 3
    assert torch.equal(loaded["weights"]["supernet"]["weight"], net.weight.detach())
    assert torch.equal(loaded["rng"][0]["torch"], torch.get_rng_state())


def test_a_checkpoint_carrying_code_is_refused_and_the_code_does_not_run(tmp_path: Path) -> None:
    marker = Path("/tmp/segnas-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "epoch-00001.pt"
    torch.save({"format": FORMAT, "weights": _Payload()}, path)
    with pytest.raises(ConfigError, match="cannot be read") as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value)
    assert not marker.exists()
