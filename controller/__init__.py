"""The ENAS controller: an LSTM policy over the search space's choices and its REINFORCE trainer.

Knows the shape of the space (layers, choices per layer), never the network.
"""

from controller.policy import LSTMPolicy, PolicySample, probability_cap
from controller.reinforce import ReinforceConfig, ReinforceTrainer, UpdateStats

__all__ = [
    "LSTMPolicy",
    "PolicySample",
    "ReinforceConfig",
    "ReinforceTrainer",
    "UpdateStats",
    "probability_cap",
]
