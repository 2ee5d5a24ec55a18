"""How sharp is the retrained ground truth that the evaluation's Kendall taus are taken against?

The 30 uniformly drawn architectures of ``bench/data/shapes_ground_truth.json`` (the first
evaluation's uniform sample), each trained from scratch with several training seeds on the
evaluation's retraining budget (10 epochs, AdamW 3e-3, batch 32, the default search's data),
and scored on the test split. From the per-seed scores:

- ``tau_between_seeds``: Kendall's tau between two single training seeds' rankings (mean and
  sd over the pairs): how far one training ranks the architectures like another;
- ``tau_split_half``: tau between the means of two disjoint halves of the seeds (with 4
  seeds: the mean of 2 against the mean of the other 2): the agreement a perfect predictor of
  one 2-seed ground truth reaches with another, so a ceiling for any supernet's tau against
  the evaluation's 2-seed ground truth;
- ``tau_vs_stored``: tau between this run's mean and the stored ground truth (earlier code,
  other initialisations of the same seeds);
- ``tau_params``: tau between the parameter count and this run's mean.

Every training is appended to ``--out`` (JSON lines) as it finishes; running the command again
with the same ``--out`` trains only what is missing. The last line printed is one JSON object.

    python bench/ground_truth.py [--seeds 0,1,2,3] [--epochs 10] [--workers 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

GROUND_TRUTH = Path(__file__).with_name("data") / "shapes_ground_truth.json"


def train_one(arch: list[int], seed: int, epochs: int) -> dict[str, Any]:
    """Train ``arch`` from scratch with training seed ``seed``; its test metrics (one thread)."""
    import torch

    from searchspec.spec import load_search_spec
    from supernet.data.load import load_dataset
    from supernet.training import TrainConfig, train_child

    torch.set_num_threads(1)
    spec = load_search_spec(None, {})
    data = load_dataset(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    config = TrainConfig(epochs=epochs, batch_size=32, optimizer="adam", seed=seed, device="cpu")
    result = train_child(space, arch, data, config)
    return {
        "arch": list(arch),
        "seed": seed,
        "epochs": epochs,
        "params": result.params,
        "test_miou": result.test.miou,
        "test_accuracy": result.test.accuracy,
    }


def done_rows(path: Path, epochs: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epochs"] == epochs]


def summarise(
    rows: list[dict[str, Any]], archs: list[list[int]], seeds: list[int], stored: list[float]
) -> dict[str, Any]:
    """The taus of the module docstring, from the per-seed rows."""
    from reports.stats import kendall_tau

    score = {(tuple(r["arch"]), r["seed"]): r["test_miou"] for r in rows}
    params = {tuple(r["arch"]): r["params"] for r in rows}
    keys = [tuple(a) for a in archs]
    by_seed = {s: [score[(k, s)] for k in keys] for s in seeds}
    mean = [statistics.fmean(by_seed[s][i] for s in seeds) for i in range(len(keys))]
    pairs = [kendall_tau(by_seed[a], by_seed[b]) for a, b in itertools.combinations(seeds, 2)]
    half = len(seeds) // 2
    split = None
    if half >= 1:
        first = [statistics.fmean(by_seed[s][i] for s in seeds[:half]) for i in range(len(keys))]
        second = [
            statistics.fmean(by_seed[s][i] for s in seeds[half : 2 * half])
            for i in range(len(keys))
        ]
        split = kendall_tau(first, second)
    columns = [[by_seed[s][i] for s in seeds] for i in range(len(keys))]
    spread = [max(c) - min(c) for c in columns]
    return {
        "architectures": len(keys),
        "seeds": seeds,
        "tau_between_seeds": {
            "mean": round(statistics.fmean(pairs), 3),
            "sd": round(statistics.stdev(pairs), 3) if len(pairs) > 1 else None,
            "pairs": [round(t, 3) for t in pairs],
        },
        "tau_split_half": None if split is None else round(split, 3),
        "tau_vs_stored": round(kendall_tau(mean, stored), 3),
        "tau_params": round(kendall_tau([params[k] for k in keys], mean), 3),
        "test_miou_mean": round(statistics.fmean(mean), 3),
        "test_miou_range": [round(min(mean), 3), round(max(mean), 3)],
        "seed_spread_mean": round(statistics.fmean(spread), 3),
        "per_arch_mean": [round(m, 4) for m in mean],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="training seeds (0,1,2,3)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training (10)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--limit", type=int, default=None, help="only the first N architectures")
    parser.add_argument("--out", type=Path, default=Path("ground_truth_runs.jsonl"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) < 2:
        parser.error("--seeds needs at least two seeds to compare")
    truth = json.loads(GROUND_TRUTH.read_text())
    archs, stored = truth["archs"][: args.limit], truth["test_miou"][: args.limit]

    rows = done_rows(args.out, args.epochs)
    have = {(tuple(r["arch"]), r["seed"]) for r in rows}
    todo = [(a, s) for s in seeds for a in archs if (tuple(a), s) not in have]
    with (
        ProcessPoolExecutor(max_workers=args.workers) as pool,
        args.out.open("a") as sink,
        tqdm(total=len(todo), desc="trainings", unit="run") as bar,
    ):
        futures = [pool.submit(train_one, a, s, args.epochs) for a, s in todo]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            bar.update()
    print(json.dumps(summarise(rows, archs, seeds, stored)))


if __name__ == "__main__":
    main()
