"""Which way of training the shared weights ranks architectures like retraining does?

Each variant trains the default search's supernet (6 layers x 16 channels on ``shapes``, AdamW,
cosine schedule, batch 32) for the same compute as the default search's shared phase (960
forward-backward passes: 30 epochs of 32 steps), changing one thing at a time from ENAS's
independent cells, then scores the 30 uniformly drawn architectures of the evaluation in
``docs/results/evaluate-independent/`` on the whole validation split and compares their
shared-weight scores with their retrained test mIoU (Kendall's tau; ground truth in
``bench/data/shapes_ground_truth.json``, taken from that evaluation's ``summary.json``: 10
epochs from scratch, mean of 2 training seeds).

Variants (after Yu et al. 2020, "How to train your super-net", and FairNAS):

- ``uniform``: one uniformly drawn architecture per step (the search's ``random_ws``);
- ``fair``: FairNAS's strict fairness: each step draws one permutation of the cells per layer,
  runs the 6 architectures it forms (every cell of every layer once) and takes one optimiser
  step on their summed gradients; 1/6 of the steps, so the same compute;
- ``bn_no_affine``: BatchNorm without its scale and shift (the paper's recommendation);
- ``shared_proj``: the cells of a layer share their leading conv1x1 + BN + ReLU;
- ``entangled``: ``shared.sharing: entangled`` (``supernet.cells``): ``shared_proj``, and
  conv3x3 / sep3x3 use the centre of conv5x5's / sep5x5's kernels (weight entanglement, as in
  once-for-all networks);
- ``lr_3e-3``: shared learning rate 3e-3 instead of 1e-2;
- ``steps_x3``: three times the steps (a longer budget, not the same compute);
- ``two_cells`` (a diagnostic, not a recipe): only conv3x3 and conv5x5 in each layer;
- ``fixed`` (a bound, not a recipe): one architecture (all conv5x5) trained alone.

Scores are taken with BatchNorm in batch-statistics mode (as the search does) and, as
``tau_recalibrated``, with running statistics recomputed per architecture on 8 train batches.

    python bench/supernet_recipe.py [--variants uniform,fair,...] [--steps 960] [--seeds 0,1,2]

One JSON object per run, one line each; the last line: mean and sd of each variant's taus.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reports.stats import kendall_tau
from searchspec.spec import load_search_spec
from supernet.data import SegmentationData
from supernet.data.load import load_dataset
from supernet.metrics import ConfusionMatrix, Metrics
from supernet.network import SuperNet
from supernet.scoring import score_architectures
from supernet.space import SearchSpace
from supernet.training import segmentation_loss

GROUND_TRUTH = Path(__file__).with_name("data") / "shapes_ground_truth.json"
VARIANTS = (
    "uniform",
    "fair",
    "bn_no_affine",
    "shared_proj",
    "entangled",
    "lr_3e-3",
    "steps_x3",
    "two_cells",
    "fixed",
)
FIXED = "conv5x5"
BATCH = 32
CALIBRATION_BATCHES = 8


def share_proj(net: SuperNet) -> None:
    """The cells of each layer share their leading conv1x1 + BN + ReLU (and nothing else)."""
    for layer in [*net.encoder, *net.decoder]:
        for cell in layer[1:]:
            cell.proj = layer[0].proj


def drop_affine(net: SuperNet) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight, m.bias, m.affine = None, None, False


class Sampler:
    """The architectures one optimiser step runs, for a variant."""

    def __init__(self, variant: str, space: SearchSpace, seed: int) -> None:
        self.variant, self.space = variant, space
        self.rng = random.Random(seed)

    def __call__(self) -> list[list[int]]:
        n, k = self.space.layers, len(self.space.cells)
        if self.variant == "fixed":
            return [[self.space.cells.index(FIXED)] * n]
        if self.variant == "fair":
            perms = [self.rng.sample(range(k), k) for _ in range(n)]
            return [[perms[layer][i] for layer in range(n)] for i in range(k)]
        return [[self.rng.randrange(k) for _ in range(n)]]


def train_batch(data: SegmentationData, step: int) -> tuple[Tensor, Tensor]:
    ids = np.random.default_rng([step, 11]).choice(len(data.train), BATCH, replace=False)
    pairs = [data.train[int(i)] for i in ids]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def recalibrated(
    net: SuperNet, arch: list[int], data: SegmentationData, batches: list, calib: list
) -> Metrics:
    """Metrics of ``arch`` in eval mode after recomputing its BN running statistics."""
    view = copy.deepcopy(net.view(arch))
    for m in view.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batches
    view.train()
    with torch.no_grad():
        for images, _ in calib:
            view(images)
        view.eval()
        matrix = ConfusionMatrix(data.num_classes, ignore_index=data.ignore_index)
        for images, masks in batches:
            matrix.update(view(images).argmax(dim=1), masks)
    return matrix.compute()


def run_variant(variant: str, base_steps: int, truth: dict[str, Any], seed: int) -> dict:
    overrides = {"space.cells": ["conv3x3", "conv5x5"]} if variant == "two_cells" else {}
    spec = load_search_spec(None, overrides)
    data = load_dataset(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    torch.manual_seed(seed)
    net = SuperNet(space, sharing="entangled" if variant == "entangled" else "independent")
    edits: dict[str, Callable[[SuperNet], None]] = {
        "bn_no_affine": drop_affine,
        "shared_proj": share_proj,
    }
    if variant in edits:
        edits[variant](net)
    lr = 3e-3 if variant == "lr_3e-3" else spec.shared.lr or 1e-2
    steps = {"fair": base_steps // len(space.cells), "steps_x3": 3 * base_steps}.get(
        variant, base_steps
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=spec.shared.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 100)
    sample = Sampler(variant, space, seed)
    start, losses, passes = time.perf_counter(), [], 0
    for step in range(steps):
        images, masks = train_batch(data, step)
        archs = sample()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for arch in archs:
            loss = segmentation_loss(net(images, arch), masks, data.ignore_index) / len(archs)
            loss.backward()
            total += float(loss.detach())
        passes += len(archs)
        nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], 5.0)
        optimizer.step()
        schedule.step()
        losses.append(total)
    train_s = time.perf_counter() - start

    k = len(space.cells)
    archs = [[a % k for a in arch] for arch in truth["archs"]]  # two_cells: folded
    retrained = truth["test_miou"]
    val = [data.val[i] for i in range(len(data.val))]
    batches = [
        (torch.stack([p[0] for p in val[i : i + 64]]), torch.stack([p[1] for p in val[i : i + 64]]))
        for i in range(0, len(val), 64)
    ]
    shared = score_architectures(
        net, archs, batches, num_classes=data.num_classes, ignore_index=data.ignore_index
    )
    calib = [train_batch(data, 100_000 + i) for i in range(CALIBRATION_BATCHES)]
    recal = [recalibrated(net, a, data, batches, calib) for a in archs]
    mious = [m.miou for m in shared]
    return {
        "variant": variant,
        "optimizer_steps": steps,
        "passes": passes,
        "lr": lr,
        "train_s": round(train_s),
        "final_loss": round(statistics.fmean(losses[-max(1, steps // 20) :]), 3),
        "shared_miou_mean": round(statistics.fmean(mious), 3),
        "shared_miou_range": round(max(mious) - min(mious), 3),
        "tau_miou": _round(kendall_tau(mious, retrained)),
        "tau_accuracy": _round(kendall_tau([m.accuracy for m in shared], retrained)),
        "tau_miou_plus": _round(kendall_tau([m.miou_plus for m in shared], retrained)),
        "tau_recalibrated": _round(kendall_tau([m.miou for m in recal], retrained)),
        "recalibrated_miou_mean": round(statistics.fmean(m.miou for m in recal), 3),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--steps", type=int, default=960, help="passes of the baseline (960)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of each variant (0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    truth = json.loads(GROUND_TRUTH.read_text())
    rows = []
    for variant in variants:
        for seed in seeds:
            rows.append({**run_variant(variant, args.steps, truth, seed), "seed": seed})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"steps": args.steps, "seeds": seeds, "variants": summarise(rows)}))


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Mean and sd over the seeds of each variant's taus."""
    out: dict[str, dict] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        entry: dict[str, Any] = {"runs": len(mine)}
        for key in ("tau_miou", "tau_accuracy", "tau_miou_plus", "tau_recalibrated"):
            values = [r[key] for r in mine if r[key] is not None]
            entry[f"{key}_mean"] = round(statistics.fmean(values), 3) if values else None
            entry[f"{key}_sd"] = round(statistics.stdev(values), 3) if len(values) > 1 else None
        out[variant] = entry
    return out


if __name__ == "__main__":
    main()
