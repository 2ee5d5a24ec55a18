"""The ENAS macro controller: an LSTM policy over one cell index per encoder layer.

The policy emits the layers' choices one after the other (Pham et al. 2018, macro search): a
learned start input goes into the LSTM, a softmax head shared by all layers turns the LSTM output
into ``num_choices`` logits, a choice is drawn, and its embedding is the next input.

Logits are shaped as in ENAS: divided by ``temperature`` (if set), then squashed to
``tanh_constant * tanh(logits)`` (if set). The squash bounds every logit to ``(-c, c)``, so no
choice can ever be certain: with ``k`` choices one choice's probability stays below
``e^c / (e^c + (k - 1) e^-c)`` (see :func:`probability_cap`), 0.80 for ENAS's ``c = 1.5`` and
``k = 6``. That keeps the search exploring; it also means "the policy converged" reads as "its
probabilities approach the cap", not "they approach 1".

The policy knows the shape of the search space (layers, choices), never the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_RANGE = 0.1
"""ENAS initialises every controller weight uniformly in ``[-0.1, 0.1]``."""


def probability_cap(*, tanh_constant: float | None, num_choices: int) -> float:
    """Supremum of one choice's probability under the tanh squash.

    The best case puts one logit at ``+c`` and the other ``k - 1`` at ``-c``. The bound is not
    reached (tanh never reaches 1). Without a squash there is no cap below 1.

    Args:
        tanh_constant: the squash constant ``c``, or None for no squash.
        num_choices: the number of choices ``k``.
    """
    if tanh_constant is None:
        return 1.0
    c = tanh_constant
    return math.exp(c) / (math.exp(c) + (num_choices - 1) * math.exp(-c))


@dataclass(frozen=True)
class PolicySample:
    """Architectures drawn from the policy, with what the policy says of them.

    Attributes:
        archs: ``[n, num_layers]`` chosen cell indices.
        log_probs: ``[n]`` log-probability of each architecture (sum over layers).
        entropies: ``[n]`` entropy of the per-layer distributions along each architecture's
            path (sum over layers).
    """

    archs: Tensor
    log_probs: Tensor
    entropies: Tensor

    def __len__(self) -> int:
        return self.archs.shape[0]


def _check_positive(name: str, value: object, *, integer: bool) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


class LSTMPolicy(nn.Module):
    """ENAS macro controller for ``num_layers`` layers of ``num_choices`` cells each.

    Args:
        num_layers: decisions per architecture (encoder layers).
        num_choices: candidate cells per layer.
        hidden_size: LSTM width, also the size of the start input and the choice embeddings.
        lstm_layers: stacked LSTM layers.
        tanh_constant: logits become ``tanh_constant * tanh(logits)``; None leaves them free.
            It caps one choice's probability at :func:`probability_cap` (0.80 for the default
            1.5 with 6 choices).
        temperature: logits are divided by it before the squash; None leaves them as they are.
        generator: random source for the initial weights (uniform in ``[-0.1, 0.1]`` as in
            ENAS); None uses torch's global generator like any module.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        num_choices: int,
        hidden_size: int = 64,
        lstm_layers: int = 1,
        tanh_constant: float | None = 1.5,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_positive("num_layers", num_layers, integer=True)
        _check_positive("num_choices", num_choices, integer=True)
        _check_positive("hidden_size", hidden_size, integer=True)
        _check_positive("lstm_layers", lstm_layers, integer=True)
        if tanh_constant is not None:
            _check_positive("tanh_constant", tanh_constant, integer=False)
        if temperature is not None:
            _check_positive("temperature", temperature, integer=False)
        self.num_layers = num_layers
        self.num_choices = num_choices
        self.tanh_constant = tanh_constant
        self.temperature = temperature

        # Built on the meta device and initialised once below from `generator`: the default
        # initialisers would draw from (and advance) the global RNG for weights we overwrite.
        meta = torch.device("meta")
        self.g_emb = nn.Parameter(torch.empty(1, hidden_size, device=meta))
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=lstm_layers, device=meta)
        self.head = nn.Linear(hidden_size, num_choices, device=meta)
        self.embedding = nn.Embedding(num_choices, hidden_size, device=meta)
        self.to_empty(device="cpu")
        self.reset_parameters(generator=generator)

    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Draw every weight uniformly from ``[-0.1, 0.1]`` (the ENAS controller's init)."""
        with torch.no_grad():
            for p in self.parameters():
                nn.init.uniform_(p, -INIT_RANGE, INIT_RANGE, generator=generator)

    @property
    def probability_cap(self) -> float:
        """Supremum of one choice's probability under this policy's tanh squash."""
        return probability_cap(tanh_constant=self.tanh_constant, num_choices=self.num_choices)

    def _logits(self, out: Tensor) -> Tensor:
        logits = self.head(out)
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _start(self, n: int) -> Tensor:
        return self.g_emb.expand(n, -1).unsqueeze(0)  # [1, n, hidden]: one time step

    def forward(self, archs: Tensor | Sequence[Sequence[int]]) -> Tensor:
        """Logits ``[n, num_layers, num_choices]`` of every layer along the given paths.

        Teacher forcing: layer ``i`` sees the choices ``archs[:, :i]``, so the whole sequence is
        one LSTM pass. Differentiable.
        """
        archs = self._check_archs(archs)
        n = archs.shape[0]
        prev = self.embedding(archs[:, :-1].T)  # [L - 1, n, hidden]
        inputs = torch.cat([self._start(n), prev], dim=0)
        out, _ = self.lstm(inputs)
        return self._logits(out).transpose(0, 1)

    def log_prob(self, archs: Tensor | Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Re-score architectures under the current policy (differentiable).

        Args:
            archs: ``[n, num_layers]`` cell indices.

        Returns:
            ``(log_probs, entropies)``, each ``[n]`` and summed over layers; the entropy is that
            of each layer's full distribution along the architecture's path.
        """
        archs = self._check_archs(archs)
        log_p = F.log_softmax(self(archs), dim=-1)
        chosen = log_p.gather(-1, archs.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return chosen.sum(-1), entropy.sum(-1)

    def probabilities(self, archs: Tensor | Sequence[Sequence[int]]) -> Tensor:
        """Per-layer choice probabilities ``[n, num_layers, num_choices]`` along the paths."""
        return F.softmax(self(archs), dim=-1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> PolicySample:
        """Draw ``n`` architectures, all in one batched pass of the LSTM.

        Gradients flow to ``log_probs`` and ``entropies`` unless called under ``no_grad``.

        Args:
            n: number of architectures.
            generator: random source for the draws; None uses torch's global generator.
        """
        _check_positive("n", n, integer=True)
        inputs = self.g_emb.expand(n, -1)
        state = self._zero_state(n)
        choices, log_probs, entropies = [], [], []
        for _ in range(self.num_layers):
            out, state = self._step(inputs, state)
            log_p = F.log_softmax(self._logits(out), dim=-1)
            probs = log_p.exp()
            choice = torch.multinomial(probs, 1, generator=generator)  # [n, 1]
            choices.append(choice.squeeze(1))
            log_probs.append(log_p.gather(1, choice).squeeze(1))
            entropies.append(-(probs * log_p).sum(-1))
            inputs = self.embedding(choice.squeeze(1))  # [n, hidden]
        return PolicySample(
            archs=torch.stack(choices, dim=1),
            log_probs=torch.stack(log_probs, dim=1).sum(1),
            entropies=torch.stack(entropies, dim=1).sum(1),
        )

    @torch.no_grad()
    def greedy(self) -> list[int]:
        """The most likely choice at every layer, each conditioned on the ones before it."""
        inputs, state = self.g_emb, self._zero_state(1)
        arch = []
        for _ in range(self.num_layers):
            out, state = self._step(inputs, state)
            choice = self._logits(out).argmax(-1)  # [1]; ties go to the lowest index
            arch.append(int(choice))
            inputs = self.embedding(choice)
        return arch

    def _zero_state(self, n: int) -> list[tuple[Tensor, Tensor]]:
        zeros = self.g_emb.new_zeros(n, self.lstm.hidden_size)
        return [(zeros, zeros)] * self.lstm.num_layers

    def _step(
        self, x: Tensor, state: list[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """One time step through the stacked LSTM with its own weights.

        The same computation as ``self.lstm`` on one step, through ``torch.lstm_cell``:
        calling the ``nn.LSTM`` module once per layer of the architecture spent most of the
        sampling time in its per-call overhead (measured in bench/controller_throughput.py).
        """
        new_state = []
        for k, (h, c) in enumerate(state):
            h, c = torch.lstm_cell(
                x,
                (h, c),
                getattr(self.lstm, f"weight_ih_l{k}"),
                getattr(self.lstm, f"weight_hh_l{k}"),
                getattr(self.lstm, f"bias_ih_l{k}"),
                getattr(self.lstm, f"bias_hh_l{k}"),
            )
            new_state.append((h, c))
            x = h
        return x, new_state

    def _check_archs(self, archs: Tensor | Sequence[Sequence[int]]) -> Tensor:
        device = self.g_emb.device
        if not isinstance(archs, Tensor):
            archs = torch.as_tensor(archs, device=device)
        if archs.dim() != 2 or archs.shape[0] == 0 or archs.shape[1] != self.num_layers:
            raise ValueError(
                f"architectures must have shape [n >= 1, {self.num_layers}], "
                f"got {list(archs.shape)}"
            )
        if archs.dtype.is_floating_point or archs.dtype.is_complex or archs.dtype == torch.bool:
            raise ValueError(f"architectures must hold integer cell indices, got {archs.dtype}")
        if archs.min() < 0 or archs.max() >= self.num_choices:
            raise ValueError(
                f"cell indices must lie in 0..{self.num_choices - 1}, "
                f"got values from {int(archs.min())} to {int(archs.max())}"
            )
        return archs.to(device=device, dtype=torch.long)
