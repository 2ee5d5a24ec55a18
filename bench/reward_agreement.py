"""Do the three rewards rank architectures differently on the default task?

Trains a supernet with uniformly sampled architectures (the default search with
``controller.sampler: uniform``, so no reward shapes the weights), then scores ``--archs``
uniformly drawn architectures on the whole validation split under those shared weights, and
compares the rankings the rewards give them: Kendall's tau-b between accuracy and mIoU,
accuracy and mIoU+, mIoU and mIoU+. Goal (the search-quality issue): tau(accuracy, mIoU)
below 0.8 over at least 40 architectures, and mIoU+ not equal to mIoU.

    python bench/reward_agreement.py [--config FILE] [--archs 60] [--epochs E]
    python bench/reward_agreement.py --checkpoint .segnas/checkpoints/ID/epoch-00039.pt

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from search_quality import run_search  # bench/, the folder of this script

from reports.stats import kendall_tau
from searchspec.spec import SearchSpec, load_search_spec
from workers.checkpoints import load_checkpoint
from workers.shared_scores import score_checkpoint

GOAL_TAU = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="search config (default: the default search)")
    parser.add_argument("--epochs", type=int, help="supernet epochs (default: the config's)")
    parser.add_argument("--checkpoint", type=Path, help="score this checkpoint; no new search")
    parser.add_argument("--archs", type=int, default=60, help="architectures scored (60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the architecture draw")
    args = parser.parse_args()

    seconds = None
    checkpoint = args.checkpoint
    if checkpoint is None:
        overrides: dict[str, object] = {"controller.sampler": "uniform"}
        if args.epochs:
            overrides.update({"epochs": args.epochs, "shared.restart_epochs": args.epochs})
        checkpoint, seconds = run_search(load_search_spec(args.config, overrides))
    spec = SearchSpec.model_validate(load_checkpoint(checkpoint)["spec"])
    rng = np.random.default_rng(args.seed)
    archs = [
        tuple(int(c) for c in rng.integers(0, len(spec.space.cells), spec.space.layers))
        for _ in range(args.archs)
    ]
    scores = score_checkpoint(checkpoint, archs)
    column = {name: [s[name] for s in scores] for name in ("accuracy", "miou", "miou_plus")}
    taus = {
        "accuracy_miou": kendall_tau(column["accuracy"], column["miou"]),
        "accuracy_miou_plus": kendall_tau(column["accuracy"], column["miou_plus"]),
        "miou_miou_plus": kendall_tau(column["miou"], column["miou_plus"]),
    }
    differ = sum(a != b for a, b in zip(column["miou"], column["miou_plus"], strict=True))
    tops = {name: int(np.argmax(values)) for name, values in column.items()}
    print(f"checkpoint {checkpoint}: {len(archs)} uniform architectures, validation split")
    for name, values in column.items():
        print(
            f"  {name:10} mean {np.mean(values):.4f}  sd {np.std(values):.4f}  "
            f"range {min(values):.4f}..{max(values):.4f}  best #{tops[name]}"
        )
    for pair, tau in taus.items():
        print(f"  tau({pair.replace('_m', ', m', 1)}) = {tau:.3f}")
    met = (
        len(archs) >= 40
        and taus["accuracy_miou"] is not None
        and taus["accuracy_miou"] < GOAL_TAU
        and differ > 0
    )
    print(
        json.dumps(
            {
                "bench": "reward_agreement",
                "checkpoint": str(checkpoint),
                "architectures": len(archs),
                "kendall_tau": taus,
                "miou_plus_differs_from_miou": differ,
                "best_index": tops,
                "goal_tau_below": GOAL_TAU,
                "met": met,
                "search_seconds": None if seconds is None else round(seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
