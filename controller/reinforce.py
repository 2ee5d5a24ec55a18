"""REINFORCE for the controller: moving-average baseline, advantage normalisation, entropy bonus,
clipped Adam steps; or, with ``sampler: uniform``, uniform draws that never learn.

``ReinforceTrainer`` owns everything a controller needs to survive a restart: the policy, its
Adam optimizer, its own random generator, the baseline and the update counter. All of it goes
out through ``state_dict`` and comes back through ``load_state_dict``; a restored trainer draws
the same next samples and makes the same next update, bit for bit.

Updates re-score the architectures they are given (teacher forcing) instead of keeping the
graph of the sampling pass, so rewards may come back later and in any order from remote
workers: only the architecture and its reward are needed.

Pure PyTorch, CPU, no global RNG: the Ray actor that serves it lives elsewhere.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from controller.config import ReinforceConfig
from controller.policy import LSTMPolicy, PolicySample

SCALE_EPS = 1e-8
"""Added to the advantage scale: a batch of equal rewards must not divide by zero."""


@dataclass(frozen=True)
class UpdateStats:
    """What one REINFORCE update did.

    Attributes:
        step: updates made so far, this one included (the new policy version).
        loss: the loss that was minimised.
        mean_reward: mean reward of the batch.
        baseline: the baseline after this batch (the update itself used the one before).
        mean_entropy: mean policy entropy (sum over layers) along the batch's architectures.
        grad_norm: global gradient norm before clipping.
        clipped: whether clipping scaled the gradients down.
    """

    step: int
    loss: float
    mean_reward: float
    baseline: float
    mean_entropy: float
    grad_norm: float
    clipped: bool


class ReinforceTrainer:
    """Samples architectures from an ``LSTMPolicy`` and trains it with REINFORCE.

    Args:
        num_layers: decisions per architecture (encoder layers of the search space).
        num_choices: candidate cells per layer.
        config: hyperparameters; ENAS's by default.
    """

    def __init__(
        self, *, num_layers: int, num_choices: int, config: ReinforceConfig | None = None
    ) -> None:
        self._config = config if config is not None else ReinforceConfig()
        if not isinstance(self._config, ReinforceConfig):
            raise TypeError(f"config must be a ReinforceConfig, got {type(config).__name__}")
        c = self._config
        self._generator = torch.Generator().manual_seed(c.seed)
        self._policy = LSTMPolicy(
            num_layers=num_layers,
            num_choices=num_choices,
            hidden_size=c.hidden_size,
            lstm_layers=c.lstm_layers,
            tanh_constant=c.tanh_constant,
            temperature=c.temperature,
            generator=self._generator,
        )
        self._optimizer = torch.optim.Adam(
            self._policy.parameters(), lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps
        )
        self._baseline: float | None = None
        # Moving estimate of E[(R - b)^2], for the advantage normalisation.
        self._spread: float | None = None
        self._step = 0

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ReinforceTrainer:
        """Rebuild a trainer, config included, from ``state_dict()``'s output."""
        try:
            config = ReinforceConfig(**state["config"])
            trainer = cls(
                num_layers=state["num_layers"], num_choices=state["num_choices"], config=config
            )
        except KeyError as e:
            raise ValueError(f"controller state lacks {e.args[0]!r}") from None
        trainer.load_state_dict(state)
        return trainer

    @property
    def policy(self) -> LSTMPolicy:
        """The policy being trained."""
        return self._policy

    @property
    def optimizer(self) -> torch.optim.Adam:
        """The policy's optimizer."""
        return self._optimizer

    @property
    def config(self) -> ReinforceConfig:
        """The hyperparameters this trainer was built with."""
        return self._config

    @property
    def baseline(self) -> float | None:
        """The moving-average reward baseline; None until the first update."""
        return self._baseline

    @property
    def step(self) -> int:
        """Updates made so far: the version of the policy that samples now."""
        return self._step

    @property
    def num_layers(self) -> int:
        """Decisions per architecture."""
        return self._policy.num_layers

    @property
    def num_choices(self) -> int:
        """Candidate cells per layer."""
        return self._policy.num_choices

    @property
    def learns(self) -> bool:
        """Whether updates change the sampling distribution (False for ``sampler: uniform``)."""
        return self._config.sampler == "policy"

    @torch.no_grad()
    def sample_batch(self, n: int | None = None) -> PolicySample:
        """Draw ``n`` architectures (default ``batch_size``) with their log-probs and entropies."""
        n = self._config.batch_size if n is None else n
        if not self.learns:
            return self._uniform(n)
        return self._policy.sample(n, generator=self._generator)

    def _uniform(self, n: int) -> PolicySample:
        layers, k = self.num_layers, self.num_choices
        archs = torch.randint(0, k, (n, layers), generator=self._generator)
        log_k = math.log(k)
        return PolicySample(
            archs=archs,
            log_probs=torch.full((n,), -layers * log_k),
            entropies=torch.full((n,), layers * log_k),
        )

    def sample(self, n: int | None = None) -> list[tuple[int, ...]]:
        """Draw ``n`` architectures (default ``batch_size``) as tuples of cell indices."""
        return [tuple(arch) for arch in self.sample_batch(n).archs.tolist()]

    def greedy(self) -> tuple[int, ...] | None:
        """The policy's most likely architecture (argmax at every layer); None for a uniform
        sampler, which has none."""
        if not self.learns:
            return None
        return tuple(self._policy.greedy())

    def update(self, archs: Sequence[Sequence[int]], rewards: Sequence[float]) -> UpdateStats:
        """One REINFORCE step on a batch of architectures and their rewards.

        ``loss = -mean(log p(arch) * A) - entropy_weight * mean(entropy)``, with the advantage
        ``A = (R - b) / s``: ``b`` the baseline from before this batch and ``s`` the moving
        root-mean-square of ``R - b`` from before this batch (1 without
        ``normalize_advantage``). The architectures should come from the current policy
        (``step`` is its version): the update is plain on-policy REINFORCE, with no importance
        weights for stale samples. A uniform sampler keeps the statistics and makes no step.

        Args:
            archs: the architectures, each ``num_layers`` cell indices.
            rewards: one finite reward per architecture, in the same order.

        Raises:
            ValueError: empty or mismatched batch, a malformed architecture, a reward that is
                not a finite number.
        """
        arch_tensor = self._check_archs(archs)
        reward_list = self._check_rewards(rewards, len(arch_tensor))
        c = self._config
        mean_reward = math.fsum(reward_list) / len(reward_list)
        # Start the baseline at the first batch's mean, not at 0: with b = 0 and positive
        # rewards every sampled architecture gets a positive advantage, so the first updates
        # push all of them up alike and mostly just sharpen the policy at random.
        old_baseline = mean_reward if self._baseline is None else self._baseline
        deviations = [r - old_baseline for r in reward_list]
        # The first batch's own spread (about its mean), like the baseline's start.
        old_spread = (
            math.fsum(d * d for d in deviations) / len(deviations)
            if self._spread is None
            else self._spread
        )
        scale = math.sqrt(old_spread) + SCALE_EPS if c.normalize_advantage else 1.0
        advantages = torch.tensor([d / scale for d in deviations], dtype=torch.float32)

        if self.learns:
            log_probs, entropies = self._policy.log_prob(arch_tensor)
            loss = -(log_probs * advantages).mean() - c.entropy_weight * entropies.mean()
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for p in self._policy.parameters() if p.grad is not None]
            if c.grad_clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    params, c.grad_clip, error_if_nonfinite=True
                )
            else:
                grad_norm = torch.nn.utils.get_total_norm(
                    [p.grad for p in params], error_if_nonfinite=True
                )
            self._optimizer.step()
            loss_value, entropy, norm = (
                float(loss.detach()),
                float(entropies.detach().mean()),
                float(grad_norm),
            )
        else:
            loss_value, entropy, norm = 0.0, self.num_layers * math.log(self.num_choices), 0.0

        # Only now that the step is made: a failed update leaves the trainer as it was.
        baseline, spread = old_baseline, old_spread
        for r in reward_list:
            spread -= (1.0 - c.baseline_decay) * (spread - (r - baseline) ** 2)
            baseline -= (1.0 - c.baseline_decay) * (baseline - r)
        self._baseline, self._spread = baseline, spread
        self._step += 1
        return UpdateStats(
            step=self._step,
            loss=loss_value,
            mean_reward=mean_reward,
            baseline=baseline,
            mean_entropy=entropy,
            grad_norm=norm,
            clipped=self.learns and c.grad_clip is not None and norm > c.grad_clip,
        )

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies, safe to keep while training goes on) that ``torch.save`` can write.

        Holds the policy, the optimizer, the baseline, the step, the generator's state, the
        space's shape and the config (as a plain dict).
        """
        return copy.deepcopy(
            {
                "num_layers": self.num_layers,
                "num_choices": self.num_choices,
                "config": self._config.model_dump(),
                "policy": self._policy.state_dict(),
                "optimizer": self._optimizer.state_dict(),
                "baseline": self._baseline,
                "spread": self._spread,
                "step": self._step,
                "generator": self._generator.get_state(),
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot taken by ``state_dict`` from a trainer of the same shape and config.

        Raises:
            ValueError: the snapshot is incomplete or was taken with another shape or config
                (build the trainer with ``from_state_dict`` to take the snapshot's config).
        """
        missing = {
            "num_layers",
            "num_choices",
            "config",
            "policy",
            "optimizer",
            "baseline",
            "step",
            "generator",
        } - set(state)
        if missing:
            raise ValueError(f"controller state lacks {sorted(missing)}")
        shape = (state["num_layers"], state["num_choices"])
        if shape != (self.num_layers, self.num_choices):
            raise ValueError(
                f"controller state is for {shape[0]} layers x {shape[1]} choices, this trainer "
                f"has {self.num_layers} x {self.num_choices}"
            )
        # The optimizer's state carries its own lr and betas: loading it under another config
        # would silently run with the snapshot's values.
        if ReinforceConfig(**state["config"]) != self._config:
            raise ValueError(
                "controller state was saved with another config; build the trainer with "
                "ReinforceTrainer.from_state_dict(state) to resume with the saved config"
            )
        # Adam's load keeps the given tensors as its own state and updates them in place: copy,
        # or two trainers restored from one snapshot would share (and corrupt) their moments.
        self._policy.load_state_dict(state["policy"])
        self._optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._generator.set_state(state["generator"].clone())
        baseline = state["baseline"]
        self._baseline = None if baseline is None else float(baseline)
        # Absent from snapshots taken before the advantage normalisation.
        spread = state.get("spread")
        self._spread = None if spread is None else float(spread)
        self._step = int(state["step"])

    def _check_archs(self, archs: Sequence[Sequence[int]]) -> Tensor:
        if isinstance(archs, Tensor):
            archs = archs.tolist()
        rows = [tuple(arch) for arch in archs]
        if not rows:
            raise ValueError("update needs at least one architecture")
        # Fast path for the usual, valid batch (the per-cell isinstance checks below cost more
        # than the whole LSTM pass); the loop below only runs to name what is wrong.
        if all(len(row) == self.num_layers for row in rows) and all(
            type(cell) is int for row in rows for cell in row
        ):
            tensor = torch.tensor(rows, dtype=torch.long)
            if int(tensor.min()) >= 0 and int(tensor.max()) < self.num_choices:
                return tensor
        for i, row in enumerate(rows):
            if len(row) != self.num_layers:
                raise ValueError(
                    f"architecture {i} has {len(row)} layers, the controller has {self.num_layers}"
                )
            for layer, cell in enumerate(row):
                if (
                    isinstance(cell, bool)
                    or not isinstance(cell, numbers.Integral)
                    or not 0 <= cell < self.num_choices
                ):
                    raise ValueError(
                        f"architecture {i}, layer {layer} has cell index {cell!r}; valid "
                        f"indices are 0..{self.num_choices - 1}"
                    )
        return torch.tensor(rows, dtype=torch.long)

    @staticmethod
    def _check_rewards(rewards: Sequence[float], n: int) -> list[float]:
        if isinstance(rewards, Tensor):
            rewards = rewards.tolist()
        values = list(rewards)
        if len(values) != n:
            raise ValueError(f"got {n} architectures but {len(values)} rewards")
        checked = []
        for i, r in enumerate(values):
            if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r):
                raise ValueError(f"reward {i} must be a finite number, got {r!r}")
            checked.append(float(r))
        return checked
