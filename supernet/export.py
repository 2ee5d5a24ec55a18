"""Export of a trained stand-alone child network, so it runs without segnas installed.

This module owns the export folder and its format. ``export_network`` writes four files:

- ``model.torchscript.pt``: ``torch.jit.script`` of the child in eval mode, on the CPU. It needs
  only ``torch`` (``torch.jit.load(path)``), none of segnas's code.
- ``state_dict.pt``: the CPU ``state_dict``, for segnas users (``load_child``).
- ``architecture.json``: ``{"arch": [...], "arch_string": "0 5 5 ...", "space": {...}}``.
- ``card.json``: the ``ModelCard``: what the network expects (input channels, normalisation, a
  side that pools evenly), what it predicts (class names, ignore label), how good it is (test
  metrics) and where it came from.

Every file is written to a temporary name in the folder and then renamed (``os.replace``), so an
interrupted export never leaves a half-written file under a final name. ``card.json`` is written
last and removed first when a folder is exported into again: a folder with a card is a complete
export, and ``load_card`` / ``load_child`` refuse one without.

Without segnas, an export runs as::

    card = json.loads(Path(folder, "card.json").read_text())
    model = torch.jit.load(Path(folder, card["files"]["torchscript"]))
    mean = torch.tensor(card["normalisation"]["mean"]).view(-1, 1, 1)
    std = torch.tensor(card["normalisation"]["std"]).view(-1, 1, 1)
    # image: float [C, H, W] in 0..1; labels: [1, H, W] class ids, named by card["classes"]
    labels = model(((image - mean) / std)[None]).argmax(1)

Pure PyTorch and pydantic (no Ray, HTTP or SQL), so a service or a notebook imports it cheaply.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from errors import ConfigError, validation_problems
from supernet.metrics import METRIC_NAMES, Metrics
from supernet.network import ChildNet, build_child, standalone_copy
from supernet.profile import count_params
from supernet.space import SearchSpace, format_arch

FORMAT_VERSION = 1
"""Version of the export folder's layout and of ``card.json``; bumped on incompatible change."""

TORCHSCRIPT_FILE = "model.torchscript.pt"
STATE_DICT_FILE = "state_dict.pt"
ARCHITECTURE_FILE = "architecture.json"
CARD_FILE = "card.json"
FILES: dict[str, str] = {
    "torchscript": TORCHSCRIPT_FILE,
    "state_dict": STATE_DICT_FILE,
    "architecture": ARCHITECTURE_FILE,
    "card": CARD_FILE,
}
"""The files of an export, by role; ``ModelCard.files`` records the same table."""

SCALE_TEXT = "images in 0..1 (RGB), then (x - mean) / std"

_TMP_SUFFIX = ".tmp"  # temporary files are ".<final name>.<random>.tmp" in the export folder

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]  # JSON has no NaN or infinity


class Normalisation(BaseModel):
    """How an image is turned into the network's input.

    Attributes:
        mean: per-channel mean, subtracted from the image in ``0..1``.
        std: per-channel standard deviation the result is divided by.
        scale: the recipe in words.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: list[FiniteFloat] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    scale: str = SCALE_TEXT

    @model_validator(mode="after")
    def _same_length(self) -> Normalisation:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean has {len(self.mean)} channels and std has {len(self.std)}; they must match"
            )
        return self


class ModelCard(BaseModel):
    """What an exported network is, expects and predicts (``card.json``).

    The network is fully convolutional: it accepts any input side of at least
    ``size_multiple`` and returns logits at the input's size. Sides that are multiples of
    ``size_multiple`` (``2 ** len(space["reductions"])``) pool without remainder at every
    reduction, as in training at ``input_size``; use such sides (pad or resize) for results like
    the reported metrics. Other sides run too (each reduction floors and the decoder upsamples to
    the skip's exact size) but see maps the network was not trained on.

    Attributes:
        arch: one cell index per encoder layer.
        cells: the cell name of each encoder layer.
        space: the search space (``SearchSpace`` dump): layers, channels, cells, reductions,
            num_classes, in_channels, skip_merge.
        classes: one name per class id; the output has one channel per class, in this order.
        num_classes: number of classes (output channels).
        in_channels: image channels of the input.
        input_size: the square side the network was trained at.
        size_multiple: sides divisible by this pool evenly: ``2 ** len(reductions)``.
        normalisation: how images become the input.
        ignore_index: the label that counted in neither loss nor metrics (never predicted).
        params: trainable parameters.
        metrics: test metrics (accuracy, mean_precision, mean_recall, miou, miou_plus).
        source: free provenance, e.g. the search id and the retrain id.
        format_version: version of this card and the folder's layout.
        torch_version: the torch that wrote the files.
        files: the files written, by role (torchscript, state_dict, architecture, card).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: list[int] = Field(min_length=1)
    cells: list[str]
    space: dict[str, Any]
    classes: list[str]
    num_classes: int = Field(ge=2)
    in_channels: int = Field(ge=1)
    input_size: int = Field(ge=1)
    size_multiple: int = Field(ge=1)
    normalisation: Normalisation
    ignore_index: int
    params: int = Field(ge=0)
    metrics: dict[str, FiniteFloat]
    source: dict[str, Any] = Field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    torch_version: str
    files: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        problems = []
        if len(self.cells) != len(self.arch):
            problems.append(f"{len(self.cells)} cell names for {len(self.arch)} layers")
        if len(self.classes) != self.num_classes:
            problems.append(f"{len(self.classes)} class names for {self.num_classes} classes")
        if len(self.normalisation.mean) != self.in_channels:
            problems.append(
                f"normalisation has {len(self.normalisation.mean)} channels, "
                f"the input has {self.in_channels}"
            )
        if self.input_size < self.size_multiple:
            problems.append(
                f"input_size {self.input_size} is below the smallest side {self.size_multiple}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    # TorchScript is deprecated as of torch 2.13 but is still the one format that loads with
    # nothing but torch; the warning is about the format, not about this export.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        yield


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    ``os.replace`` within one file system is atomic, so ``path`` is either its old content or the
    complete new one, never a prefix. The temporary file is removed if ``write`` fails.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            # Durable before the rename, so a power cut cannot leave the final name empty.
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_json(path: Path, data: Mapping[str, Any] | str) -> None:
    text = data if isinstance(data, str) else json.dumps(data, indent=2)
    _write_atomic(path, lambda f: f.write((text + "\n").encode()))


def _is_our_temp(name: str) -> bool:
    return name.endswith(_TMP_SUFFIX) and any(name.startswith(f".{n}.") for n in FILES.values())


def _check_dir(out_dir: Path) -> None:
    """Check that ``out_dir`` is missing, empty, or a previous export's folder.

    Raises:
        ConfigError: ``out_dir`` is a file, or a folder holding anything an export does not
            write (so a wrong path never overwrites someone else's files).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"export folder {out_dir} is a file, not a folder")
    if out_dir.is_dir():
        foreign = sorted(
            p.name
            for p in out_dir.iterdir()
            if p.name not in FILES.values() and not _is_our_temp(p.name)
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ConfigError(
                f"export folder {out_dir} is not empty and not a previous export "
                f"(it holds {shown}); choose a new or empty folder"
            )


def _prepare_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (already checked by ``_check_dir``) or clear an interrupted export's
    temporary files from it."""
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            if _is_our_temp(p.name):
                p.unlink()
        return
    try:
        out_dir.mkdir(parents=True)
    except OSError as e:
        raise ConfigError(f"cannot create export folder {out_dir}: {e}") from None


def _check_structure(model: ChildNet, space: SearchSpace) -> None:
    """Refuse a model whose parameters and buffers do not fit ``space``.

    ``load_child`` rebuilds the network from ``space`` alone, so a space that does not describe
    the model (other channels, classes, reductions or skip merge) would make an export that the
    card describes wrongly and that does not load.
    """
    expected = {k: v.shape for k, v in build_child(space, model.arch).state_dict().items()}
    actual = {k: v.shape for k, v in model.state_dict().items()}
    if expected != actual:
        wrong = sorted(set(expected) ^ set(actual)) or sorted(
            k for k in expected if expected[k] != actual[k]
        )
        raise ConfigError(
            f"the model does not match the search space {space.model_dump(mode='json')} "
            f"(first differing tensors: {', '.join(wrong[:3])})"
        )


def export_network(
    model: ChildNet,
    *,
    space: SearchSpace,
    classes: Sequence[str],
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    metrics: Metrics | Mapping[str, float],
    out_dir: Path | str,
    ignore_index: int = 255,
    source: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Write a trained child network to ``out_dir`` as a folder that runs without segnas.

    The model itself is left as it was (mode, device, weights): the export works on a CPU copy
    in eval mode. ``SegmentationData`` carries ``class_names``, ``mean``, ``std`` and
    ``ignore_index`` for the matching arguments.

    Args:
        model: the trained child (``build_child`` or a supernet's view), on any device.
        space: the search space the child was built for (a ``ChildNet`` keeps only its arch).
        classes: one name per class id.
        input_size: the square side the network was trained at.
        mean: per-channel mean subtracted from images in ``0..1``.
        std: per-channel standard deviation the images are divided by.
        metrics: test metrics; a ``Metrics`` contributes accuracy, mean_precision,
            mean_recall, miou and miou_plus, a mapping is recorded as given.
        out_dir: the folder to write; created if missing. It may exist if empty or if it holds
            a previous export, which is replaced.
        ignore_index: the label that counted in neither loss nor metrics.
        source: free provenance for the card (search id, retrain id, data set...).

    Returns:
        The card, as written to ``card.json``.

    Raises:
        ConfigError: the arguments do not describe the model (class count, channels, space),
            or ``out_dir`` is a file or a folder with other files in it.
    """
    out_dir = Path(out_dir)
    try:
        arch = list(space.check(model.arch))
    except ValueError as e:
        raise ConfigError(f"the model's architecture does not fit the search space: {e}") from None
    if isinstance(metrics, Metrics):
        metrics = {name: getattr(metrics, name) for name in METRIC_NAMES}
    try:
        card = ModelCard(
            arch=arch,
            cells=[space.cell_name(i) for i in arch],
            space=space.model_dump(mode="json"),
            classes=list(classes),
            num_classes=space.num_classes,
            in_channels=space.in_channels,
            input_size=input_size,
            size_multiple=space.min_input_size,
            normalisation=Normalisation(mean=list(mean), std=list(std)),
            ignore_index=ignore_index,
            params=count_params(model),
            metrics=dict(metrics),
            source=dict(source or {}),
            torch_version=torch.__version__,
            files=dict(FILES),
        )
    except ValidationError as e:
        raise ConfigError(f"cannot export: {validation_problems(e)}") from None
    # A deep copy, so the caller's model keeps its device, mode and autograd state; for a
    # supernet view it copies only the chosen cells, with weights of their own (as
    # ``build_child`` does).
    child = standalone_copy(model).cpu().eval()
    _check_structure(child, space)
    # Before the (slow) scripting, so a wrong folder is refused at once; nothing is created
    # until the network has scripted.
    _check_dir(out_dir)

    with _quiet_torchscript():
        scripted = torch.jit.script(child)
    state = {k: v.detach().clone() for k, v in child.state_dict().items()}

    _prepare_dir(out_dir)
    # The card goes first and comes back last: until the new card is in place the folder does
    # not read as an export, so a crash part-way never pairs an old card with new weights.
    with contextlib.suppress(FileNotFoundError):
        (out_dir / CARD_FILE).unlink()
    with _quiet_torchscript():
        _write_atomic(out_dir / TORCHSCRIPT_FILE, lambda f: torch.jit.save(scripted, f))
    _write_atomic(out_dir / STATE_DICT_FILE, lambda f: torch.save(state, f))
    _write_json(
        out_dir / ARCHITECTURE_FILE,
        {"arch": arch, "arch_string": format_arch(arch), "space": card.space},
    )
    _write_json(out_dir / CARD_FILE, card.model_dump_json(indent=2))
    return card


def load_card(export_dir: Path | str) -> ModelCard:
    """Read the card of an export folder.

    Raises:
        ConfigError: the folder has no card (not an export, or an interrupted one), the card is
            malformed, or it was written by a newer format.
    """
    path = Path(export_dir) / CARD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{export_dir} is not a complete segnas export: {CARD_FILE} is missing"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    # Checked before the fields: a newer format may have fields this version does not know.
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ConfigError(
            f"{path} has format version {version}; this segnas reads up to {FORMAT_VERSION}"
        )
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path} is not a valid model card: {validation_problems(e)}") from None


def load_child(export_dir: Path | str) -> ChildNet:
    """Rebuild the exported network as a segnas ``ChildNet`` (on the CPU, in eval mode).

    Reads ``architecture.json`` and ``state_dict.pt`` and rebuilds with ``build_child``, so the
    result is an ordinary ``ChildNet`` to fine-tune, profile or re-export.

    Raises:
        ConfigError: the folder is not a complete export, or its files disagree.
    """
    export_dir = Path(export_dir)
    card = load_card(export_dir)  # also proves the export completed
    try:
        raw = json.loads((export_dir / card.files["architecture"]).read_text())
        space = SearchSpace.model_validate(raw["space"])
        arch = space.check(raw["arch"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{export_dir}: unreadable {ARCHITECTURE_FILE}: {e!r}") from None
    except ValidationError as e:
        raise ConfigError(f"{export_dir}: {ARCHITECTURE_FILE}: {validation_problems(e)}") from None
    except ValueError as e:  # ArchitectureError
        raise ConfigError(f"{export_dir}: {ARCHITECTURE_FILE}: {e}") from None
    if list(arch) != card.arch:
        raise ConfigError(
            f"{export_dir}: {ARCHITECTURE_FILE} has arch {format_arch(arch)!r}, "
            f"the card {format_arch(card.arch)!r}"
        )
    child = build_child(space, arch)
    # weights_only: a state_dict is tensors only, and this refuses pickled code in a tampered
    # file instead of running it.
    state = torch.load(export_dir / card.files["state_dict"], map_location="cpu", weights_only=True)
    try:
        child.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(
            f"{export_dir}: {STATE_DICT_FILE} does not fit the architecture: {e}"
        ) from None
    return child.eval()


__all__ = [
    "FILES",
    "FORMAT_VERSION",
    "METRIC_NAMES",
    "ModelCard",
    "Normalisation",
    "export_network",
    "load_card",
    "load_child",
]
