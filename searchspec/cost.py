"""What a search spec will cost, estimated from the spec alone, without torch.

The API process prices every submitted spec (``searchspec.budget`` holds it to the operator's
limits) and the dispatcher names the estimate when a driver is killed for memory. Nothing
here builds a network or reads a data set: every figure follows from the spec's fields.

- **Parameters** of the supernet, exactly as ``supernet.profile.count_params`` counts a real
  ``SuperNet`` (both sharing modes; a test compares them), and of its largest child.
- **Memory per replica**: weights and BatchNorm buffers, the optimizer's state, the gradients
  of one child, and the larger of a training step's activations and the scoring phase's
  (``activation_bytes``).
- **Data set memory**: the embedded generators (``shapes``, ``digits``) keep every canvas in
  memory as uint8 (3 bytes of image and 1 of labels per pixel), one copy per replica; ``voc``
  and ``folder`` read each batch from disk, so they hold none.
- **Work**: images passed through a network over the whole search (sample-passes): per epoch
  the shared steps' batches and the controller phase's scoring minibatches, then the derive
  phase's candidates on the validation split.
- **Checkpoints**: one per epoch, the newest ``checkpoints.keep`` kept
  (``workers.checkpoints``): weights, buffers and the optimizer's state each.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from searchspec.spec import SearchSpec
from supernet.data.specs import AnyDatasetSpec, DigitsSpec, FolderSpec, ShapesSpec, VocSpec
from supernet.data.splits import split_sizes
from supernet.space import SearchSpace

FLOAT_BYTES = 4
"""float32: weights, optimizer state, and activations (an upper bound under CUDA's bfloat16
autocast, which halves most of them)."""
CANVAS_BYTES_PER_PIXEL = 4
"""The embedded generators keep an ``S x S x 3`` uint8 image and an ``S x S`` uint8 mask."""
FOLDER_CLASSES = 255
"""A folder's classes are in its ``classes.txt``, read only when it is loaded: counted as the
most a uint8 mask can name (255 is the ignore label), for the head's few parameters."""
VOC_TRAINVAL, VOC_TRAIN, VOC_VAL = 2913, 1464, 1449
"""Images in VOC 2012's ``trainval.txt``, ``train.txt`` and ``val.txt`` (segmentation)."""


class SpecCost(BaseModel):
    """The estimate of one spec. ``None`` where the spec alone cannot say (see ``notes``).

    Attributes:
        params: trainable parameters of the supernet.
        child_params: parameters of its largest child architecture.
        replica_memory_bytes: memory one replica needs (GPU memory on a GPU, RAM on a CPU):
            ``weight_bytes + optimizer_bytes + gradient_bytes + activation_bytes``.
        weight_bytes: weights and BatchNorm buffers.
        optimizer_bytes: SGD's momentum or AdamW's two moments.
        gradient_bytes: the gradients of the largest child (only its parameters get one).
        activation_bytes: see ``activation_bytes``.
        data_bytes: the data set in memory over all replicas (each holds its own): the
            embedded data sets' canvases, and the splits a replica holds ready as tensors
            (validation, and training when it does not augment: ``supernet.data.feed``); None
            when a split's size is unknown before loading (``folder``).
        train_images, val_images: split sizes; None when unknown before loading (``folder``).
        shared_steps: shared steps per epoch; None when the train split's size is unknown.
        work: sample-passes over the whole search; None when the split sizes are unknown.
        checkpoint_bytes: the checkpoints kept at once (``checkpoints.keep`` of them at most).
        replicas, cpus, gpus: what the search asks Ray for, all replicas together.
        notes: what the estimate could not count, and why.
    """

    model_config = ConfigDict(frozen=True)

    params: int
    child_params: int
    replica_memory_bytes: int
    weight_bytes: int
    optimizer_bytes: int
    gradient_bytes: int
    activation_bytes: int
    data_bytes: int | None
    train_images: int | None
    val_images: int | None
    shared_steps: int | None
    work: int | None
    checkpoint_bytes: int
    replicas: int
    cpus: float
    gpus: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataFacts:
    """What the spec says of its data set: classes, channels, split sizes, bytes in memory."""

    num_classes: int
    in_channels: int
    size: int
    train: int | None
    val: int | None
    bytes_in_memory: int | None


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a network, and how many of them are BatchNorm's (each has a buffer of
    the same size beside it: running mean and variance for its weight and bias)."""

    total: int
    norm: int

    def __add__(self, other: ParamCount) -> ParamCount:
        return ParamCount(self.total + other.total, self.norm + other.norm)

    def __mul__(self, times: int) -> ParamCount:
        return ParamCount(self.total * times, self.norm * times)


def estimate_cost(spec: SearchSpec) -> SpecCost:
    """Price ``spec``: parameters, memory per replica, data set memory, work, checkpoints."""
    data = data_facts(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    sharing = spec.shared.sharing
    params = supernet_params(space, sharing)
    child = child_params(space)
    used = child_params(space, sharing=sharing)  # an entangled 3x3 trains its 5x5's kernel
    res = spec.resources
    weights = FLOAT_BYTES * (params.total + params.norm)
    moments = _optimizer_moments(spec)
    optimizer = FLOAT_BYTES * moments * params.total
    gradients = FLOAT_BYTES * used.total
    activations = activation_bytes(spec, space, data)
    notes = []
    ready = ready_bytes(spec.dataset, data)
    held = None if ready is None else ready + (data.bytes_in_memory or 0)
    if isinstance(spec.dataset, VocSpec | FolderSpec):
        notes.append(
            f"{spec.dataset.kind} training images are read from the decode cache on disk "
            "(memory-mapped, decoded once); the validation split is held ready in memory"
        )
    if isinstance(spec.dataset, FolderSpec):
        notes.append(
            "work and shared steps not counted: a folder's image count is known only once it "
            f"is read; its head counted for {FOLDER_CLASSES} classes"
        )
    steps = _shared_steps(spec, data.train)
    return SpecCost(
        params=params.total,
        child_params=child.total,
        replica_memory_bytes=weights + optimizer + gradients + activations,
        weight_bytes=weights,
        optimizer_bytes=optimizer,
        gradient_bytes=gradients,
        activation_bytes=activations,
        data_bytes=None if held is None else held * res.replicas,
        train_images=data.train,
        val_images=data.val,
        shared_steps=steps,
        work=total_work(spec, steps, data.val),
        checkpoint_bytes=min(spec.epochs, spec.checkpoints.keep) * (weights + optimizer),
        replicas=res.replicas,
        cpus=res.replicas * res.cpus_per_replica,
        gpus=res.replicas * res.gpus_per_replica,
        notes=tuple(notes),
    )


# parameters


def _conv_bn(c_in: int, c_out: int, kernel: int, *, groups: int = 1) -> ParamCount:
    """``ConvBnAct``: a bias-free conv and a BatchNorm (weight and bias)."""
    return ParamCount(c_in * c_out * kernel * kernel // groups + 2 * c_out, 2 * c_out)


def _op_params(name: str, c: int) -> ParamCount:
    """The operation after a cell's leading conv1x1 (``supernet.cells.OPS``)."""
    if name in ("conv3x3", "conv5x5", "dilconv3x3_r2", "dilconv3x3_r4"):
        return _conv_bn(c, c, 5 if name == "conv5x5" else 3)  # dilation adds no weights
    if name in ("sep3x3", "sep5x5", "dilsep3x3_r2"):
        k = 5 if name == "sep5x5" else 3
        return ParamCount(c * k * k + c * c + 2 * c, 2 * c)  # depthwise, pointwise, BN
    if name == "aspp":  # conv1x1, two dilated 3x3s, the pooled conv1x1 (a bias, no BN), fuse
        branches = _conv_bn(c, c, 1) + _conv_bn(c, c, 3) * 2
        return branches + ParamCount(c * c + c, 0) + _conv_bn(4 * c, c, 1)
    return ParamCount(0, 0)  # pooling


_ENTANGLED_INTO = {"conv3x3": "conv5x5", "sep3x3": "sep5x5"}
"""Under ``entangled`` sharing the small cell's kernels are the large one's centres."""


def _layer_params(cells: tuple[str, ...], c: int, sharing: str) -> ParamCount:
    """One layer's candidate cells as the supernet holds them (``supernet.cells.entangle``:
    one conv1x1 for the layer, and conv3x3 / sep3x3 keep only their own BatchNorm when their
    larger twin is a candidate too)."""
    proj = _conv_bn(c, c, 1)
    if sharing != "entangled":
        return sum((proj + _op_params(name, c) for name in cells), ParamCount(0, 0))
    total = proj
    for name in cells:
        tied = _ENTANGLED_INTO.get(name) in cells
        total += ParamCount(2 * c, 2 * c) if tied else _op_params(name, c)
    return total


def _frame_params(space: SearchSpace) -> ParamCount:
    """What every architecture shares: stem, skip merges, head."""
    c = space.channels
    stem = _conv_bn(space.in_channels, c, 3)
    merge = _conv_bn(2 * c, c, 1) if space.skip_merge == "concat" else ParamCount(0, 0)
    head = ParamCount(c * space.num_classes + space.num_classes, 0)  # conv1x1 with a bias
    return stem + merge * len(space.reductions) + head


def supernet_params(space: SearchSpace, sharing: str = "independent") -> ParamCount:
    """Parameters of ``SuperNet(space, sharing=sharing)``, each shared one counted once."""
    layer = _layer_params(space.cells, space.channels, sharing)
    return _frame_params(space) + layer * (2 * space.layers)


def child_params(space: SearchSpace, *, sharing: str = "independent") -> ParamCount:
    """Parameters of the largest child network. With ``sharing="entangled"``: the supernet's
    parameters that the largest child trains (an entangled conv3x3 computes its gradient over
    the whole 5x5 kernel it is the centre of)."""
    c = space.channels

    def used(name: str) -> ParamCount:
        larger = _ENTANGLED_INTO.get(name)
        if sharing == "entangled" and larger in space.cells:
            return _op_params(larger, c)  # type: ignore[arg-type]
        return _op_params(name, c)

    op = max((used(name) for name in space.cells), key=lambda p: p.total)
    return _frame_params(space) + (_conv_bn(c, c, 1) + op) * (2 * space.layers)


def _optimizer_moments(spec: SearchSpec) -> int:
    """Tensors of the parameters' size the optimizer keeps."""
    shared = spec.shared
    if shared.optimizer == "adam":
        return 2
    return 1 if shared.momentum > 0 else 0


# activations

_CELL_TENSORS = {
    "conv3x3": 4, "conv5x5": 4, "sep3x3": 5, "sep5x5": 5, "avgpool3x3": 3,
    "dilconv3x3_r2": 4, "dilconv3x3_r4": 4, "dilsep3x3_r2": 5, "aspp": 14,
}  # fmt: skip
_MAXPOOL_CELL_TENSORS = 5
"""Feature maps (``C x s x s``) a cell keeps for backward: its conv1x1's output and its
BatchNorm's (the ReLU works in place), then its operation's: a conv and its BatchNorm 2, a
separable conv 3, average pooling its output, max pooling its output and int64 indices (2);
ASPP 12: three branches of 2, the spread pooled map, the concatenation (4) and its fuse (2)."""


def _train_elements(space: SearchSpace, size: int) -> int:
    """float32 elements one training image keeps for backward through the costliest child."""
    c, sides = space.channels, space.sides(size)
    per_cell = max(_CELL_TENSORS.get(name, _MAXPOOL_CELL_TENSORS) for name in space.cells)
    elements = (space.in_channels + 2) * size * size  # the image and its int64 labels
    elements += 2 * c * size * size  # stem: conv and BatchNorm outputs
    elements += 2 * per_cell * c * sum(s * s for s in sides)  # encoder and mirrored decoder
    merge = 5 if space.skip_merge == "concat" else 2  # upsampled, concatenated, conv, BN
    for r in space.reductions:
        s, half = sides[r], sides[r] // 2
        elements += 3 * c * half * half  # max pooling: output and int64 indices
        elements += merge * c * s * s
    elements += 3 * space.num_classes * size * size  # logits, log-softmax, their gradient
    elements += 2 * c * size * size  # gradients in flight during backward
    return elements


def _score_elements(space: SearchSpace, size: int) -> int:
    """float32 elements one scored image needs at once (no gradients): the image and labels,
    the skips kept for the decoder, a cell's few maps at full size, logits and predictions."""
    c, sides = space.channels, space.sides(size)
    skips = sum(c * sides[r] * sides[r] for r in space.reductions)
    return (
        (space.in_channels + 2) * size * size
        + skips
        + 3 * c * size * size
        + (space.num_classes + 2) * size * size
    )


def activation_bytes(spec: SearchSpec, space: SearchSpace, data: DataFacts) -> int:
    """Activation memory of one replica, the larger of its two phases:

    - training: ``B = shared.batch_size // replicas`` images (its shard) through the costliest
      child, float32: ``4 B [(in + 2) S^2 + 4 C S^2 + 2 k C sum_l s_l^2 + sum_r (3 C (s_r/2)^2
      + m C s_r^2) + 3 K S^2]`` with ``S`` the image side, ``C`` channels, ``K`` classes,
      ``s_l`` the side at encoder layer ``l`` (the decoder mirrors it), ``k`` the largest cell's
      kept maps (``_CELL_TENSORS``: 3 to 5), ``r`` the reductions, ``m`` 5 for concat skips
      (2 for sum);
    - scoring: ``controller_phase.batch_size`` images without gradients, plus, in the derive
      phase, the validation images it scores on (at most ``derive.max_batches`` minibatches),
      held on the device as float32 images and int64 labels.
    """
    size = data.size
    shard = spec.shared.batch_size // spec.resources.replicas
    train = shard * _train_elements(space, size)
    batch = spec.controller_phase.batch_size
    held = batch  # without the split's size: one minibatch
    if data.val is not None:
        batch, held = min(batch, data.val), _derive_images(spec, data.val)
    score = batch * _score_elements(space, size) + held * (space.in_channels + 2) * size * size
    return FLOAT_BYTES * max(train, score)


# data and work


def data_facts(dataset: AnyDatasetSpec) -> DataFacts:
    """Classes, channels, split sizes and memory of a data set spec, without loading it."""
    if isinstance(dataset, ShapesSpec | DigitsSpec):
        train, val, _ = split_sizes(dataset.images)
        if isinstance(dataset, ShapesSpec):
            classes = 5 + (dataset.boundary == "class")  # background and four shapes
        else:
            classes = 11 if dataset.labels == "digits" else 2
        memory = dataset.images * CANVAS_BYTES_PER_PIXEL * dataset.size**2
        return DataFacts(classes, 3, dataset.size, train, val, memory)
    if isinstance(dataset, VocSpec):
        if dataset.split == "paper":
            train, val, _ = split_sizes(VOC_TRAINVAL)
        else:
            train, (val, _) = VOC_TRAIN, split_sizes(VOC_VAL, (2, 1))
        return DataFacts(21 + dataset.void_as_class, 3, dataset.size, train, val, None)
    return DataFacts(FOLDER_CLASSES, 3, dataset.size, None, None, None)


def ready_bytes(dataset: AnyDatasetSpec, data: DataFacts) -> int | None:
    """What a search replica holds of ``dataset`` as ready tensors (float32 images, int64
    labels): the validation split, and the training split when it does not augment; None
    when their sizes are unknown before loading."""
    train = 0 if dataset.augment else data.train
    if data.val is None or train is None:
        return None
    return (data.val + train) * data.size**2 * (FLOAT_BYTES * data.in_channels + 8)


def _shared_steps(spec: SearchSpec, train: int | None) -> int | None:
    max_steps = spec.shared.max_steps
    if train is None:
        return max_steps
    steps = train // spec.shared.batch_size
    return min(steps, max_steps) if max_steps else steps


def total_work(spec: SearchSpec, shared_steps: int | None, val: int | None) -> int | None:
    """Sample-passes over the whole search: ``epochs x (shared steps x shared.batch_size +
    controller_phase.steps x controller.batch_size x controller_phase.batch_size)``, plus the
    derive phase's candidates (``derive.samples``, and the greedy one) each scored on the
    validation split (at most ``derive.max_batches`` minibatches). None when a split's size
    is unknown."""
    if shared_steps is None or val is None:
        return None
    phase, derive = spec.controller_phase, spec.derive
    scoring = min(phase.batch_size, val)
    per_epoch = shared_steps * spec.shared.batch_size
    per_epoch += phase.steps * spec.controller.batch_size * scoring
    return spec.epochs * per_epoch + (derive.samples + derive.greedy) * _derive_images(spec, val)


def _derive_images(spec: SearchSpec, val: int) -> int:
    """Validation images the derive phase scores each candidate on (and holds on the device)."""
    if spec.derive.max_batches is None:
        return val
    return min(val, spec.derive.max_batches * spec.controller_phase.batch_size)


def human_bytes(n: float) -> str:
    """``1.5 GiB``: a byte count for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe_request(spec: SearchSpec) -> str:
    """What a search asks for, in one phrase: ``4 replicas x (4 CPUs, 1 GPU), estimated
    4.6 GiB per replica (activations 4.6 GiB), 728.8 MiB of data set per replica``."""
    cost, res = estimate_cost(spec), spec.resources
    each = _count(res.cpus_per_replica, "CPU")
    if res.gpus_per_replica:
        each += ", " + _count(res.gpus_per_replica, "GPU")
    data = (
        "no data set in memory"
        if cost.data_bytes is None
        else f"{human_bytes(cost.data_bytes / res.replicas)} of data set per replica"
    )
    return (
        f"{_count(res.replicas, 'replica')} x ({each}), estimated "
        f"{human_bytes(cost.replica_memory_bytes)} per replica (activations "
        f"{human_bytes(cost.activation_bytes)}), {data}"
    )


def _count(n: float, noun: str) -> str:
    return f"{n:g} {noun}" + ("" if n == 1 else "s")
