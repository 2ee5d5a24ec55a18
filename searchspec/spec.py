"""The search spec: everything one architecture search needs, validated in one place.

The CLI's config files (``configs/*.yaml``), the service's ``POST /searches`` bodies and the
rows of the ``searches`` table all hold this one schema. Unknown fields are errors, so a typo
never silently becomes a default. Imports no torch: the API process validates specs too.

A spec says how a search differs from the default search, ``DEFAULT_SEARCH`` (spelled out in
``configs/shapes.yaml``): a field it leaves out takes the default search's value. So
``segnas search`` without a config, ``segnas demo``, ``make demo`` and an empty
``POST /searches`` body run the same search, and ``{"epochs": 5}`` is that search with 5
epochs. A ``dataset`` of another kind replaces the default data set whole. The sections'
own defaults (``SharedSpec()``, ``ReinforceConfig()``: ENAS's) apply where the default search
leaves a field unset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.config import ReinforceConfig
from errors import ConfigError, validation_problems
from supernet.data.specs import DATASET_KINDS, DatasetSpec, ShapesSpec
from supernet.fielddocs import described
from supernet.space import CELL_NAMES, SearchSpace

RewardName = Literal["accuracy", "miou", "miou_plus"]

DEFAULT_SEARCH: dict[str, Any] = {
    "name": "shapes",
    "seed": 0,
    "epochs": 30,
    "reward": "miou",
    "dataset": {"kind": "shapes", "images": 1500, "size": 32},
    "space": {"layers": 6, "channels": 16},
    "shared": {
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 0.01,
        "restart_epochs": 30,
        "sharing": "entangled",
    },
    "controller_phase": {"steps": 10, "batch_size": 16},
    "controller": {"batch_size": 10},
    "derive": {"samples": 20},
    "resources": {"replicas": 1, "cpus_per_replica": 1},
}
"""The default search (``configs/shapes.yaml``): ENAS on the embedded ``shapes`` task in a
6-layer space, sized for 2 CPU cores (docs/search.md). What a spec leaves out comes from here."""


# The controller's settings are documented in its own docstring; the controller package knows
# nothing of OpenAPI, so its descriptions are attached here, where the spec is put together.
described(ReinforceConfig)


class _Section(BaseModel):
    """A part of the spec; its docstring's ``Args:`` describe its fields in the OpenAPI
    document (``supernet.fielddocs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        described(cls)


class SpaceSpec(_Section):
    """The searched network's shape; classes and input channels come from the data set.

    Args:
        layers: encoder layers (the decoder mirrors them): an architecture has one cell
            index per layer.
        channels: width of every cell.
        cells: the candidate cells of every layer, by name, in index order.
        reductions: encoder layers followed by stride-2 pooling, mirrored in the decoder
            (None: ``n//3 - 1`` and ``2n//3 - 1``).
        skip_merge: how a long skip joins the upsampled decoder map: ``concat`` (then
            conv1x1 + BN + ReLU back to ``channels``) or ``sum``.
    """

    layers: int = Field(12, ge=1, le=64)
    channels: int = Field(36, ge=1, le=1024)
    cells: tuple[str, ...] = CELL_NAMES
    reductions: tuple[int, ...] | None = None
    skip_merge: Literal["concat", "sum"] = "concat"

    @model_validator(mode="after")
    def _check(self) -> SpaceSpec:
        self.build(num_classes=2, in_channels=3)  # SearchSpace's own checks, one source of truth
        return self

    def build(self, *, num_classes: int, in_channels: int) -> SearchSpace:
        """The ``SearchSpace`` for a data set with these classes and input channels."""
        return SearchSpace(
            **self.model_dump(exclude_none=True), num_classes=num_classes, in_channels=in_channels
        )


class SharedSpec(_Section):
    """Training of the shared weights (the supernet), one sampled architecture per step.

    Defaults are ENAS's: SGD with Nesterov momentum, lr 0.05 annealed to 0.0005 by a cosine
    with warm restarts every ``restart_epochs`` epochs, the period growing ``restart_mult``
    times after each restart.

    Args:
        batch_size: global batch per step, cut into equal shards across the replicas.
        optimizer: ``sgd`` (ENAS) or ``adam`` (AdamW: far fewer steps to useful weights on CPU).
        lr: initial learning rate; None for the optimizer's default (sgd 0.05, adam 3e-3).
        lr_min: floor of the cosine; None for ``lr / 100``.
        momentum, nesterov: SGD's momentum and whether it is Nesterov's (unused by adam).
        weight_decay: L2 (sgd) or decoupled (adam) weight decay.
        grad_clip: the largest global gradient norm of a step; None for no clipping.
        restart_epochs: epochs of the cosine's first period, then a warm restart.
        restart_mult: each period is this many times longer than the one before.
        max_steps: at most this many steps per epoch (None: one pass over the train split).
        sharing: how the cells of a layer share weights: ``independent`` (ENAS: each its own)
            or ``entangled`` (one leading conv1x1 per layer; conv3x3 and sep3x3 train the
            centres of conv5x5's and sep5x5's kernels). See ``supernet.cells``.
    """

    batch_size: int = Field(128, ge=1, le=65_536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = Field(None, gt=0, le=10)
    lr_min: float | None = Field(None, ge=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(2.5e-4, ge=0, le=1)
    grad_clip: float | None = Field(5.0, gt=0)
    restart_epochs: int = Field(10, ge=1, le=100_000)
    restart_mult: int = Field(2, ge=1, le=100)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    sharing: Literal["independent", "entangled"] = "independent"


class ControllerPhaseSpec(_Section):
    """The controller phase of each epoch.

    Args:
        steps: REINFORCE updates per epoch (each on ``controller.batch_size`` samples).
        batch_size: validation images per reward: each sample is scored on one minibatch.
    """

    steps: int = Field(50, ge=0, le=100_000)
    batch_size: int = Field(128, ge=1, le=65_536)


class DeriveSpec(_Section):
    """The derive phase: sample architectures from the trained policy and keep the best.

    Args:
        samples: architectures sampled from the final policy.
        greedy: also score the policy's most likely architecture.
        max_batches: score each on at most this many validation minibatches (None: all of
            the validation split).
    """

    samples: int = Field(100, ge=0, le=100_000)
    greedy: bool = True
    max_batches: int | None = Field(None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _check(self) -> DeriveSpec:
        if self.samples == 0 and not self.greedy:
            raise ValueError("the derive phase needs samples > 0 or greedy: true")
        return self


class CheckpointSpec(_Section):
    """What a search keeps of its checkpoints (one is written after every epoch).

    Args:
        keep: the newest checkpoints kept while it runs (older ones are deleted as new ones
            land): a resume needs the newest; the one before it covers a torn file.
        keep_after_success: keep them once the search has succeeded (``segnas evaluate``
            scores the final supernet); by default a finished search keeps none.
    """

    keep: int = Field(2, ge=1, le=10_000)
    keep_after_success: bool = False


class ResourcesSpec(_Section):
    """What each supernet replica asks Ray for.

    Args:
        replicas: supernet replicas (one torch.distributed group: gloo on CPU, nccl on GPU).
        gpus_per_replica: GPUs per replica (0: run on the CPU).
        cpus_per_replica: CPUs per replica; also its torch thread count.
    """

    replicas: int = Field(1, ge=1, le=1024)
    gpus_per_replica: float = Field(0, ge=0, le=16)
    cpus_per_replica: float = Field(1, gt=0, le=256)

    @model_validator(mode="after")
    def _check(self) -> ResourcesSpec:
        if 0 < self.gpus_per_replica < 1 and self.replicas > 1:
            raise ValueError(
                "gpus_per_replica below 1 with several replicas would put two nccl ranks on "
                "one GPU, which nccl refuses: use whole GPUs, or 1 replica"
            )
        return self


class RewardCost(_Section):
    """A size-aware reward, MnasNet's form: ``metric * (cost / target) ** weight``.

    With a negative ``weight`` an architecture above ``target`` is rewarded less than its
    metric and one below it more (``weight`` -0.07: twice the target costs 4.7 % of the reward).

    Args:
        cost: the size weighed: ``params`` (of the architecture as a stand-alone network) or
            ``flops`` (of one forward pass of one image at the data set's size).
        target: the size aimed at, in parameters or FLOPs.
        weight: the exponent; negative to favour smaller networks.
    """

    cost: Literal["params", "flops"]
    target: int = Field(ge=1, le=10**15)
    weight: float = Field(-0.07, ge=-1.0, le=1.0)

    def weigh(self, metric: float, size: int) -> float:
        """The reward of an architecture of ``size`` whose metric is ``metric``."""
        return metric * (size / self.target) ** self.weight


class SearchSpec(_Section):
    """One ENAS search.

    Args:
        name: a label for people.
        seed: seeds the supernet, the data order and, unless ``controller.seed`` is set, the
            controller.
        epochs: ENAS epochs (shared phase + controller phase each).
        reward: the metric that rewards the controller: ``accuracy``, ``miou`` or
            ``miou_plus`` (the paper's three). Written as a mapping, ``{metric: miou, cost:
            params, target: 100000, weight: -0.07}``, it is that metric weighed by size:
            ``reward`` becomes the metric and the rest ``reward_cost``.
        reward_cost: weighs the reward by the architecture's size (``RewardCost``); None:
            the metric alone, as in the paper.
        dataset: the data set (``shapes``, ``digits``, ``voc`` or ``folder``).
        space, shared, controller_phase, controller, derive, resources, checkpoints: see
            their sections.
    """

    name: str | None = Field(None, max_length=200)
    seed: int = Field(0, ge=0, lt=2**31)
    epochs: int = Field(10, ge=1, le=10_000)
    reward: RewardName = "miou"
    reward_cost: RewardCost | None = None
    dataset: DatasetSpec = Field(default_factory=ShapesSpec)
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    shared: SharedSpec = Field(default_factory=SharedSpec)
    controller_phase: ControllerPhaseSpec = Field(default_factory=ControllerPhaseSpec)
    controller: ReinforceConfig = Field(default_factory=ReinforceConfig)
    derive: DeriveSpec = Field(default_factory=DeriveSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)

    @model_validator(mode="before")
    @classmethod
    def _over_the_default_search(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = over_default_search(data)
        return data

    @model_validator(mode="before")
    @classmethod
    def _size_aware_reward(cls, data: Any) -> Any:
        # `reward: {metric, cost, target, weight}` is `reward: metric` and `reward_cost`: the
        # metric's name stays what every reader of `reward` (retraining, reports) takes it for.
        if isinstance(data, Mapping) and isinstance(data.get("reward"), Mapping):
            given = dict(data["reward"])
            if "reward_cost" in data:
                raise ValueError("reward: give the size in reward or in reward_cost, not both")
            if "metric" not in given:
                raise ValueError("reward: a mapping needs its metric (accuracy, miou, miou_plus)")
            metric = given.pop("metric")
            data = {**data, "reward": metric, **({"reward_cost": given} if given else {})}
        return data

    @model_validator(mode="before")
    @classmethod
    def _seed_the_controller(cls, data: Any) -> Any:
        # Written into the spec, not decided later: a stored spec (model_dump -> validate)
        # lists every field, and could no longer tell an explicit controller seed from this.
        if isinstance(data, Mapping):
            controller = data.get("controller", {})
            if isinstance(controller, Mapping) and "seed" not in controller:
                seed = data.get("seed", 0)
                data = {**data, "controller": {**controller, "seed": seed}}
        return data

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        if self.shared.batch_size < self.resources.replicas:
            raise ValueError(
                f"shared.batch_size ({self.shared.batch_size}) must be at least "
                f"resources.replicas ({self.resources.replicas}): every replica needs a shard"
            )
        return self

    def controller_config(self) -> ReinforceConfig:
        """The controller's config (its seed is ``seed`` unless the spec set one)."""
        return self.controller


def over_default_search(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` laid over ``DEFAULT_SEARCH``: sections merged field by field, a data set of
    another ``kind`` taking the default data set's place whole. Values that are not mappings
    where a section is expected are kept as given, for validation to name."""
    out = _deep_copy(DEFAULT_SEARCH)
    for key, value in data.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, Mapping):
            if key == "dataset" and value.get("kind", base["kind"]) != base["kind"]:
                out[key] = _deep_copy(value)
            else:
                out[key] = {**base, **_deep_copy(value)}
        else:
            out[key] = value
    return out


def parse_search_spec(data: Mapping[str, Any]) -> SearchSpec:
    """Validate a mapping (config file, request body) into a spec.

    Raises:
        ConfigError: one line naming every offending field.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a search spec must be a mapping, got {type(data).__name__}")
    try:
        return SearchSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """``invalid search spec: shared.lr: Input should be greater than 0 (got -1); ...``."""
    return "invalid search spec: " + validation_problems(exc, drop=DATASET_KINDS)


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted keys set: ``{"shared.lr": 0.1}``.

    Raises:
        ConfigError: a key walks through a value that is not a mapping.
    """
    out = _deep_copy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"cannot set {key!r}: {where!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_search_spec(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> SearchSpec:
    """Read a YAML config file (None: the default search, no file), apply ``--set``
    overrides, validate.

    Raises:
        ConfigError: unreadable file, not YAML, or an invalid spec (the message says which).
    """
    if path is None:
        return parse_search_spec(apply_overrides({}, overrides or {}))
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {str(path)!r} must hold a mapping of settings")
    try:
        return parse_search_spec(apply_overrides(data, overrides or {}))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
