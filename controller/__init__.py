"""The ENAS controller: an LSTM policy over the search space's choices and its REINFORCE trainer.

Knows the shape of the space (layers, choices per layer), never the network. Names are
imported on first use, so ``controller.config`` stays importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LSTMPolicy": "controller.policy",
    "PolicySample": "controller.policy",
    "probability_cap": "controller.policy",
    "ReinforceConfig": "controller.config",
    "ReinforceTrainer": "controller.reinforce",
    "UpdateStats": "controller.reinforce",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'controller' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
