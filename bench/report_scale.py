"""Does ``segnas report`` stay fast on a search of paper scale (310,101 samples)?

Builds, through ``SearchStore``, the search of ``bench/api_scale.py`` (310 epochs x 50
controller steps x 20 samples, then 101 derive candidates) with ``configs/voc.yaml`` as its
spec, marks it succeeded with a result and a retrained best architecture (the rows
``segnas retrain`` leaves), on PostgreSQL (a database of its own, dropped afterwards) or
SQLite (``--sqlite``), then times ``segnas report`` over it as a user runs it: a process of
its own, from its start to its last line (Table 1, report.md, report.json, the figures).

Goal (issue 14): under 30 s. Last line: one JSON object with ``samples`` and ``report_s``.

    python bench/report_scale.py [--sqlite] [--epochs 310] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from api_load import postgres_database
from api_scale import build_search

from searchspec.spec import load_search_spec
from storage.migrate import upgrade
from storage.retrains import RetrainRecord, RetrainStore
from storage.searches import ResultRecord, SearchStore

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 30.0
METRICS = {"accuracy": 0.9, "mean_precision": 0.7, "mean_recall": 0.6, "miou": 0.5,
           "miou_plus": 0.8}  # fmt: skip


def finish(url: str, search_id: str) -> None:
    """What a search that succeeded and was retrained leaves besides its samples."""
    store = SearchStore(url)
    try:
        store.mark_running(search_id)
        arch = [0] * 12
        store.set_result(
            search_id,
            ResultRecord(arch=arch, reward=0.7, metrics=METRICS, params=270_000, candidates=101),
        )
        store.mark_finished(search_id, "succeeded")
        RetrainStore(store).save(search_id, [
            RetrainRecord(
                source=source, rank=0, arch=arch if source == "enas" else [1] * 12,
                shared_score=0.7 if source == "enas" else None, status="succeeded", epochs=10,
                params=270_000, **METRICS, val=METRICS, config={}, weights_path=None,
                error=None, seconds=60.0,
            )
            for source in ("enas", "random")
        ])  # fmt: skip
    finally:
        store.close()


def report_seconds(url: str, search_id: str, out: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "segnas.cli", "report", "--searches", search_id,
         "--out", str(out), "--db", url, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "SEGNAS_DATA_DIR": str(out.parent)},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"segnas report failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=310)
    parser.add_argument("--runs", type=int, default=3, help="reports timed, one after another")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    steps, batch, derive = 50, 20, 101
    spec = load_search_spec(ROOT / "configs" / "voc.yaml").model_dump(mode="json")
    spec["epochs"] = args.epochs
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="report-scale-")))
        if args.sqlite:
            url = f"sqlite:///{folder / 'segnas.db'}"
            upgrade(url)
        else:
            url = stack.enter_context(postgres_database(args.postgres)).url
        search_id = build_search(url, args.epochs, steps, batch, derive, spec)
        finish(url, search_id)
        times = [report_seconds(url, search_id, folder / f"report-{i}") for i in range(args.runs)]
    samples = args.epochs * steps * batch + derive
    print(f"segnas report over {samples:,} samples: " + ", ".join(f"{t:.1f} s" for t in times)
          + f" (goal under {GOAL_S:.0f} s)")  # fmt: skip
    print(json.dumps({
        "samples": samples,
        "database": "sqlite" if args.sqlite else "postgresql",
        "report_s": round(statistics.median(times), 2),
        "runs_s": [round(t, 2) for t in times],
        "goal_s": GOAL_S,
    }))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
