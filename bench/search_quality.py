"""Did the search learn anything? The trained policy against uniform random architectures.

Runs a search (``configs/shapes.yaml`` by default), then, with the shared weights and the
controller of its last checkpoint, scores 100 architectures sampled from the trained policy and
100 drawn uniformly at random on the whole validation split (BatchNorm in batch-statistics
mode, as in the search), and prints mean and best mIoU of each. Goal: the policy's mean beats
random's mean by at least 5 mIoU points.

Both sets are scored with the same shared weights, which the search trained mostly on the
policy's own choices: the comparison measures what the policy learned about these weights, not
how the architectures would do trained alone (that is retraining's job).

    python bench/search_quality.py [--config configs/shapes.yaml] [--samples 100]
    python bench/search_quality.py --checkpoint .segnas/checkpoints/ID/epoch-00019.pt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from controller.reinforce import ReinforceTrainer
from searchspec.spec import SearchSpec, load_search_spec
from supernet.data import load_dataset
from supernet.network import SuperNet
from supernet.scoring import score_architectures
from supernet.space import format_arch
from workers.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GOAL_POINTS = 5.0


def run_search(spec: SearchSpec) -> tuple[Path, float]:
    """A fresh search of ``spec`` in a temporary data folder; its last checkpoint and the wall
    time. (``bench/reward_agreement.py`` runs its searches with it too.)"""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGNAS_ALLOW_UNAUTHENTICATED_RAY", "1")  # a bench machine
    from workers.entry import open_store
    from workers.entry import run_search as run

    # Its final supernet is what the bench scores: keep the last checkpoint after success.
    keep = spec.checkpoints.model_copy(update={"keep_after_success": True})
    spec = spec.model_copy(update={"checkpoints": keep})
    folder = Path(tempfile.mkdtemp(prefix="segnas-quality-"))
    store = open_store(f"sqlite:///{folder / 'segnas.db'}")
    started = time.perf_counter()
    outcome = run(spec, store=store, checkpoint_dir=folder / "checkpoints")
    seconds = time.perf_counter() - started
    checkpoint = store.last_checkpoint(outcome.search_id)
    store.close()
    if checkpoint is None:
        raise SystemExit("the search wrote no checkpoint")
    return Path(checkpoint.path), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shapes.yaml")
    parser.add_argument("--checkpoint", type=Path, help="score this checkpoint; no new search")
    parser.add_argument("--samples", type=int, default=100, help="architectures per set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random set")
    args = parser.parse_args()

    search_seconds = None
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint, search_seconds = run_search(load_search_spec(args.config))
    payload = load_checkpoint(checkpoint)
    spec = SearchSpec.model_validate(payload["spec"])

    torch.set_num_threads(os.cpu_count() or 1)
    data = load_dataset(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    supernet = SuperNet(space, sharing=spec.shared.sharing)
    supernet.load_state_dict(payload["weights"]["supernet"])
    trainer = ReinforceTrainer.from_state_dict(payload["controller"]["trainer"])

    policy_archs = trainer.sample(args.samples)
    rng = np.random.default_rng(args.seed)
    random_archs = [
        tuple(int(c) for c in rng.integers(0, len(space.cells), space.layers))
        for _ in range(args.samples)
    ]
    batch = spec.controller_phase.batch_size
    val = data.val
    batches = []
    for start in range(0, len(val), batch):
        pairs = [val[i] for i in range(start, min(start + batch, len(val)))]
        batches.append((torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])))

    started = time.perf_counter()
    scores = {}
    for name, archs in (("policy", policy_archs), ("random", random_archs)):
        metrics = score_architectures(
            supernet, archs, batches, num_classes=data.num_classes, ignore_index=data.ignore_index
        )
        scores[name] = [(m.miou, arch) for m, arch in zip(metrics, archs, strict=True)]
    score_seconds = time.perf_counter() - started

    summary = {}
    print(f"checkpoint {checkpoint} (epoch {payload['epoch']}), {len(val)} validation images")
    print(f"{'set':8} {'mean mIoU':>10} {'best mIoU':>10} {'distinct':>9}  best architecture")
    for name, rows in scores.items():
        values = [v for v, _ in rows]
        best_value, best_arch = max(rows)
        distinct = len({a for _, a in rows})
        summary[name] = {"mean": statistics.fmean(values), "best": best_value, "distinct": distinct}
        print(
            f"{name:8} {summary[name]['mean']:10.4f} {best_value:10.4f} {distinct:9d}  "
            f"{format_arch(best_arch)}"
        )
    gap = 100 * (summary["policy"]["mean"] - summary["random"]["mean"])
    print(f"policy mean - random mean = {gap:+.1f} mIoU points (goal >= {GOAL_POINTS})")
    print(
        json.dumps(
            {
                "bench": "search_quality",
                "config": str(args.config) if args.checkpoint is None else None,
                "checkpoint_epoch": payload["epoch"],
                "samples_per_set": args.samples,
                "policy_mean_miou": round(summary["policy"]["mean"], 4),
                "policy_best_miou": round(summary["policy"]["best"], 4),
                "policy_distinct": summary["policy"]["distinct"],
                "random_mean_miou": round(summary["random"]["mean"], 4),
                "random_best_miou": round(summary["random"]["best"], 4),
                "gap_points": round(gap, 2),
                "goal_points": GOAL_POINTS,
                "met": gap >= GOAL_POINTS,
                "search_seconds": None if search_seconds is None else round(search_seconds, 1),
                "score_seconds": round(score_seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
