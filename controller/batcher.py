"""Rewards in, REINFORCE updates out: the controller's side of the distributed loop.

``RewardBatcher`` hands out batches of architectures tagged with a sample id and the policy
version that drew them, takes their rewards back in any order (remote scorers finish when they
finish), and makes one update per complete batch. Rewards for another policy version, unknown
ids and second rewards for one sample are refused: a reward is only ever credited to the
architecture that earned it. Pure Python and torch; ``controller.actor`` serves it over Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from controller.reinforce import ReinforceTrainer, UpdateStats


class RewardError(ValueError):
    """A reward that cannot be credited: stale version, unknown or repeated sample id."""


class TaggedSample(BaseModel):
    """One architecture handed out for scoring."""

    model_config = ConfigDict(frozen=True)

    sample_id: int
    arch: tuple[int, ...]


class SampleBatch(BaseModel):
    """A batch drawn by policy ``version``; its rewards come back tagged with that version."""

    model_config = ConfigDict(frozen=True)

    version: int
    samples: tuple[TaggedSample, ...]


class RewardBatcher:
    """Issues tagged batches and updates the trainer once all rewards of a batch are in.

    Args:
        trainer: the REINFORCE trainer (policy, optimizer, baseline).
    """

    def __init__(self, trainer: ReinforceTrainer) -> None:
        self.trainer = trainer
        self._next_id = 0
        self._pending: dict[int, tuple[int, ...]] = {}
        self._rewards: dict[int, float] = {}

    @property
    def version(self) -> int:
        """The policy version that samples now (updates made so far)."""
        return self.trainer.step

    @property
    def pending(self) -> int:
        """Samples of the open batch still waiting for a reward."""
        return len(self._pending) - len(self._rewards)

    def sample_batch(self, n: int | None = None) -> SampleBatch:
        """Draw the next batch to score (default size: the config's ``batch_size``).

        A batch left open is dropped: its rewards would be for the same policy, but the loop
        that asked for it has given up on it (a replica failed), and mixing two batches would
        change the update's size.
        """
        archs = self.trainer.sample(n)
        first = self._next_id
        self._next_id += len(archs)
        self._pending = {first + i: arch for i, arch in enumerate(archs)}
        self._rewards = {}
        samples = tuple(TaggedSample(sample_id=first + i, arch=a) for i, a in enumerate(archs))
        return SampleBatch(version=self.version, samples=samples)

    def sample(self, n: int) -> list[tuple[int, ...]]:
        """Architectures from the current policy that earn no reward (shared phase, derive)."""
        return self.trainer.sample(n)

    def greedy(self) -> tuple[int, ...] | None:
        return self.trainer.greedy()

    def report(self, version: int, rewards: Mapping[int, float]) -> UpdateStats | None:
        """Credit rewards to samples of the open batch; update once the batch is complete.

        Returns:
            The update's statistics when this report completed the batch, else None.

        Raises:
            RewardError: ``version`` is not the current policy's, or a sample id is not in the
                open batch or already has its reward. Nothing of the report is kept then.
        """
        if version != self.version:
            raise RewardError(
                f"rewards for policy version {version}, but the policy is at {self.version}"
            )
        for sample_id, reward in rewards.items():
            if sample_id not in self._pending:
                raise RewardError(f"sample {sample_id} is not in the open batch")
            if sample_id in self._rewards:
                raise RewardError(f"sample {sample_id} already has its reward")
            if not math.isfinite(reward):
                raise RewardError(f"sample {sample_id} got reward {reward}, not a finite number")
        self._rewards.update({int(k): float(v) for k, v in rewards.items()})
        if len(self._rewards) < len(self._pending):
            return None
        # Sample-id order, not arrival order: the update is the same however replies raced.
        ids = sorted(self._pending)
        stats = self.trainer.update(
            [self._pending[i] for i in ids], [self._rewards[i] for i in ids]
        )
        self._pending, self._rewards = {}, {}
        return stats

    def state_dict(self) -> dict[str, Any]:
        """The trainer's state and the id counter; an open batch is not kept."""
        return {"trainer": self.trainer.state_dict(), "next_sample_id": self._next_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self._next_id = int(state["next_sample_id"])
        self._pending, self._rewards = {}, {}
