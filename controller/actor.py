"""``ControllerActor``: the Ray actor that serves the controller to the search driver.

The only module of ``controller`` that knows Ray. Holds a ``RewardBatcher`` and, when given a
state file, writes its whole state there after every update (atomically), and reads it back
when Ray restarts the actor after a crash: the policy, optimizer, baseline and generator
continue where the last update left them.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch

from controller.batcher import RewardBatcher, SampleBatch
from controller.config import ReinforceConfig
from controller.reinforce import ReinforceTrainer, UpdateStats

log = logging.getLogger(__name__)


class ControllerService:
    """What the actor does, as a plain class (the actor is ``ControllerActor``).

    Args:
        num_layers: decisions per architecture.
        num_choices: cells per layer.
        config: controller hyperparameters.
        state_path: file for the state after every update; loaded at start when it exists.
    """

    def __init__(
        self,
        num_layers: int,
        num_choices: int,
        config: ReinforceConfig,
        state_path: str | None = None,
    ) -> None:
        torch.set_num_threads(1)  # a tiny LSTM: more threads only fight the replicas for cores
        self._shape = (num_layers, num_choices, config)
        self._state_path = Path(state_path) if state_path else None
        self.batcher = self._fresh()
        self.restored = False
        self._incarnation = uuid.uuid4().hex
        if self._state_path is not None and self._state_path.exists():
            try:
                self.batcher.load_state_dict(torch.load(self._state_path, weights_only=True))
                self.restored = True
            except Exception as e:  # a torn file must not keep the actor from starting
                log.warning("controller state %s unreadable (%s): starting fresh", state_path, e)

    def _fresh(self) -> RewardBatcher:
        layers, choices, config = self._shape
        return RewardBatcher(
            ReinforceTrainer(num_layers=layers, num_choices=choices, config=config)
        )

    def sample_batch(self, n: int | None = None) -> SampleBatch:
        return self.batcher.sample_batch(n)

    def sample(self, n: int) -> list[tuple[int, ...]]:
        return self.batcher.sample(n)

    def greedy(self) -> tuple[int, ...] | None:
        return self.batcher.greedy()

    def version(self) -> int:
        return self.batcher.version

    def report(self, version: int, rewards: Mapping[int, float]) -> UpdateStats | None:
        stats = self.batcher.report(version, rewards)
        if stats is not None:
            self._persist()
        return stats

    def state_dict(self) -> dict[str, Any]:
        return self.batcher.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.batcher.load_state_dict(state)
        self._persist()

    def reset(self) -> None:
        """Back to the freshly seeded controller (a search restarting from its beginning)."""
        self.batcher = self._fresh()
        self._persist()

    def incarnation(self) -> str:
        """Differs after every (re)start: how a caller tells that Ray restarted the actor."""
        return self._incarnation

    def was_restored(self) -> bool:
        """Whether this incarnation started from the state file."""
        return self.restored

    def _persist(self) -> None:
        if self._state_path is None:
            return
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        torch.save(self.batcher.state_dict(), tmp)
        os.replace(tmp, self._state_path)


# Restarted by Ray after a crash (the state file brings it back); num_cpus=0: it is idle
# most of the time and must not take a core a replica needs.
ControllerActor = ray.remote(num_cpus=0, max_restarts=3)(ControllerService)
