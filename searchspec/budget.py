"""The operator's limits on what one search may cost, and the check of a spec against them.

Every field's own maximum in ``searchspec.spec`` is generous on purpose (a cluster may be large);
the limits here are what *this* server accepts, set from the environment (``SEGNAS_MAX_*``)
and checked on the estimate of ``searchspec.cost`` when a search is submitted. The defaults fit
one node of 8 GPUs of 80 GB each, and accept every config in ``configs/`` (the paper's search,
``configs/voc.yaml``, among them). Imports no torch.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from errors import ConfigError
from searchspec.cost import SpecCost, estimate_cost, human_bytes
from searchspec.spec import SearchSpec

GB = 10**9


class Budget(BaseModel):
    """Limits on one search. Each is the environment variable in ``LIMITS``' ``env``.

    Args:
        max_params: supernet parameters (``SEGNAS_MAX_PARAMS``).
        max_replica_memory_bytes: estimated memory of one replica: weights, optimizer state,
            gradients, activations (``SEGNAS_MAX_REPLICA_MEMORY_BYTES``; default one 80 GB GPU).
        max_data_bytes: the embedded data sets in memory, all replicas' copies together
            (``SEGNAS_MAX_DATA_BYTES``).
        max_work: sample-passes over the whole search (``SEGNAS_MAX_WORK``; the paper's VOC
            search is about 5.2 million).
        max_epochs: ENAS epochs (``SEGNAS_MAX_EPOCHS``).
        max_replicas: supernet replicas (``SEGNAS_MAX_REPLICAS``).
        max_gpus: GPUs of all replicas together (``SEGNAS_MAX_GPUS``).
        max_cpus: CPUs of all replicas together (``SEGNAS_MAX_CPUS``).
        max_checkpoint_bytes: the search's checkpoints kept at once (``checkpoints.keep``)
            (``SEGNAS_MAX_CHECKPOINT_BYTES``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_params: int = Field(1_000_000_000, ge=1)
    max_replica_memory_bytes: int = Field(80 * GB, ge=1)
    max_data_bytes: int = Field(64 * GB, ge=1)
    max_work: int = Field(50_000_000, ge=1)
    max_epochs: int = Field(1000, ge=1)
    max_replicas: int = Field(8, ge=1)
    max_gpus: float = Field(8, ge=0)
    max_cpus: float = Field(128, gt=0)
    max_checkpoint_bytes: int = Field(100 * GB, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Budget:
        """The limits set in the environment, the defaults for the others.

        Raises:
            ConfigError: a value that is not a number of the limit's kind, or below its
                minimum; the message names the variable.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for limit in LIMITS:
            text = environ.get(limit.env, "").strip()
            if not text:
                continue
            value = limit.parse(text)
            minimum = 0 if limit.field == "max_gpus" else 1
            if value is None or value < minimum:
                raise ConfigError(
                    f"{limit.env}={text!r}: expected {limit.kind} of at least {minimum}"
                )
            values[limit.field] = value
        return cls(**values)


def _parse_count(text: str) -> int | None:
    try:
        return int(text.replace(",", ""))  # int() takes 1_000_000 as it is
    except ValueError:
        return None


def _parse_amount(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def _parse_bytes(text: str) -> int | None:
    """``80000000000``, ``80GB``, ``80G`` (10^9) or ``74.5GiB`` (2^30)."""
    match = re.fullmatch(r"([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Za-z]*)", text.replace(",", ""))
    if match is None or match.group(2).lower() not in _BYTE_UNITS:
        return None
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Limit:
    """One limit: its field, its variable, what it reads on the estimate, and the advice."""

    field: str
    env: str
    what: str
    measure: Callable[[SpecCost, SearchSpec], float | None]
    advice: str
    unit: str = ""  # "bytes" prints a byte count in people's units too

    @property
    def kind(self) -> str:
        if self.unit == "bytes":
            return "a byte count (80000000000, 80GB or 74.5GiB)"
        return "a number" if self.field in ("max_gpus", "max_cpus") else "a whole number"

    def parse(self, text: str) -> float | None:
        if self.unit == "bytes":
            return _parse_bytes(text)
        return _parse_amount(text) if self.field in ("max_gpus", "max_cpus") else _parse_count(text)

    def show(self, value: float) -> str:
        if self.unit == "bytes":
            return f"{value:,.0f} bytes ({human_bytes(value)})"
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,g}"


LIMITS: tuple[Limit, ...] = (
    Limit(
        "max_params",
        "SEGNAS_MAX_PARAMS",
        "estimated supernet parameters",
        lambda cost, _: cost.params,
        "lower space.layers or space.channels",
    ),
    Limit(
        "max_replica_memory_bytes",
        "SEGNAS_MAX_REPLICA_MEMORY_BYTES",
        "estimated memory per replica",
        lambda cost, _: cost.replica_memory_bytes,
        "lower shared.batch_size, controller_phase.batch_size, dataset.size, space.channels "
        "or space.layers, set derive.max_batches, or add replicas",
        unit="bytes",
    ),
    Limit(
        "max_data_bytes",
        "SEGNAS_MAX_DATA_BYTES",
        "estimated data set memory (all replicas' copies)",
        lambda cost, _: cost.data_bytes,
        "lower dataset.images or dataset.size, or resources.replicas",
        unit="bytes",
    ),
    Limit(
        "max_work",
        "SEGNAS_MAX_WORK",
        "estimated work (sample-passes)",
        lambda cost, _: cost.work,
        "lower epochs, controller_phase.steps, controller.batch_size, shared.max_steps or "
        "derive.samples",
    ),
    Limit("max_epochs", "SEGNAS_MAX_EPOCHS", "epochs", lambda _, s: s.epochs, "lower epochs"),
    Limit(
        "max_replicas",
        "SEGNAS_MAX_REPLICAS",
        "replicas",
        lambda cost, _: cost.replicas,
        "lower resources.replicas",
    ),
    Limit(
        "max_gpus",
        "SEGNAS_MAX_GPUS",
        "GPUs",
        lambda cost, _: cost.gpus,
        "lower resources.replicas or resources.gpus_per_replica",
    ),
    Limit(
        "max_cpus",
        "SEGNAS_MAX_CPUS",
        "CPUs",
        lambda cost, _: cost.cpus,
        "lower resources.replicas or resources.cpus_per_replica",
    ),
    Limit(
        "max_checkpoint_bytes",
        "SEGNAS_MAX_CHECKPOINT_BYTES",
        "estimated checkpoints kept at once",
        lambda cost, _: cost.checkpoint_bytes,
        "lower epochs, space.layers or space.channels",
        unit="bytes",
    ),
)
"""Every limit, in the order a refusal names them."""


def over_budget(spec: SearchSpec, budget: Budget) -> str | None:
    """None when ``spec`` is within ``budget``; otherwise one line naming each limit it
    passes: the variable, the estimate and the limit, and what to change."""
    cost = estimate_cost(spec)
    problems = []
    for limit in LIMITS:
        value, maximum = limit.measure(cost, spec), getattr(budget, limit.field)
        if value is not None and value > maximum:
            problems.append(
                f"{limit.what} {limit.show(value)} over {limit.env}="
                f"{limit.show(maximum)}: {limit.advice}"
            )
    if not problems:
        return None
    return "the spec is over this server's limits (its operator sets them): " + "; ".join(problems)
