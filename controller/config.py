"""The controller's hyperparameters, a plain pydantic model (no torch: search specs embed it)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0)]


class ReinforceConfig(BaseModel):
    """Controller hyperparameters; defaults are ENAS's (macro search, CIFAR-10).

    Args:
        lr: Adam learning rate.
        beta1: Adam's first-moment decay (ENAS uses 0: no momentum).
        beta2: Adam's second-moment decay.
        eps: Adam's epsilon (ENAS uses 1e-3, large: it damps steps on tiny gradients).
        baseline_decay: the baseline moves as ``b <- b - (1 - decay)(b - R)`` per reward.
        entropy_weight: weight of the entropy bonus in the loss.
        grad_clip: maximum global gradient norm; None for no clipping.
        batch_size: architectures per update (and the default sample size).
        seed: seed of the trainer's own generator (initial weights and every draw).
        hidden_size: LSTM width.
        lstm_layers: stacked LSTM layers.
        tanh_constant: logit squash ``c * tanh(logits)``; None for none. It caps one choice's
            probability (0.80 for 1.5 with 6 choices, see ``controller.policy.probability_cap``).
        temperature: logits are divided by it before the squash; None for none.
        normalize_advantage: divide ``R - b`` by a moving estimate of its standard deviation
            (kept like the baseline, with ``baseline_decay``), so that a reward's scale (pixel
            accuracy varies a few times less across architectures than mIoU) does not act as
            a hidden learning rate. Off: ENAS's raw ``R - b``.
        sampler: ``policy`` draws from the LSTM and learns from the rewards (ENAS);
            ``uniform`` draws every layer's cell uniformly and never learns: random search
            with weight sharing through the same loop (Yu et al., ICLR 2020).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    lr: float = Field(1e-3, gt=0, le=10)
    beta1: float = Field(0.0, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-3, gt=0)
    baseline_decay: float = Field(0.99, ge=0, le=1)
    entropy_weight: float = Field(1e-4, ge=0)
    grad_clip: PositiveFloat | None = 5.0
    batch_size: int = Field(20, ge=1, le=100_000)
    seed: int = Field(0, ge=0, lt=2**63)
    hidden_size: int = Field(64, ge=1, le=4096)
    lstm_layers: int = Field(1, ge=1, le=8)
    tanh_constant: PositiveFloat | None = 1.5
    temperature: PositiveFloat | None = None
    normalize_advantage: bool = True
    sampler: Literal["policy", "uniform"] = "policy"
