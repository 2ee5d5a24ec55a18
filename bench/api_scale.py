"""Does the API stay fast on a search of paper scale (310,101 samples)?

Builds, through ``SearchStore``, one search shaped like the paper's (310 epochs x 50 controller
steps x 20 samples, then 101 derive candidates: 310,101 sample rows) on PostgreSQL (a database
of its own, dropped afterwards) or SQLite (``--sqlite``), starts ``segnas serve --dispatchers
0`` over it, and measures with ``--clients`` concurrent clients (``bench/api_load.py``'s
closed-loop client), ``--seconds`` each:

- ``rewards``: ``GET /searches/{id}/rewards`` (the whole curve, downsampled to 2,000 points);
- ``rewards_new``: the same with ``after=`` the last step (what a polling page asks);
- ``status``: ``GET /searches/{id}`` as JSON;
- ``page``: ``GET /searches/{id}`` as a browser asks for it (HTML);
- ``architectures``: a page of 1,000 architectures, newest first;
- ``healthz_under_load``: ``/healthz`` from one more client while ``--clients`` hammer
  ``/rewards``.

Goals (issue 14): p99 under 100 ms for ``rewards``, 20 ms for ``status``, 50 ms for ``page``,
``architectures`` and ``healthz_under_load``. Prints a table and, last, one JSON line with
``samples`` and ``p99_ms``.

    python bench/api_scale.py [--clients 10] [--seconds 10] [--sqlite] [--epochs 310]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from api_load import (
    Phase,
    api_server,
    postgres_database,
    redis_database,
    request_head,
    run,
    run_phase,
)

from storage.migrate import upgrade
from storage.searches import SampleRecord, SearchStore

GOALS_MS = {
    "rewards": 100,
    "rewards_new": 100,
    "status": 20,
    "page": 50,
    "architectures": 50,
    "healthz_under_load": 50,
}


def build_search(
    url: str, epochs: int, steps: int, batch: int, derive: int, spec: dict | None = None
) -> str:
    """The search's rows, an epoch per write (as fast as the store takes them); ``spec`` is
    the row's spec (default: a name and the epochs)."""
    from tqdm import tqdm

    store = SearchStore(url)
    try:
        search_id = store.create(spec or {"name": "paper-scale", "epochs": epochs}).id
        for epoch in tqdm(range(epochs), desc="building", unit="epoch"):
            rows = [
                SampleRecord(
                    phase="controller", epoch=epoch, step=s, index=i, arch=[(s + i) % 6] * 12,
                    reward=0.3 + 0.4 * epoch / epochs + 0.001 * i, accuracy=0.8,
                    mean_precision=0.5, mean_recall=0.5, miou=0.3, miou_plus=0.4,
                    policy_version=epoch * steps + s, params=270_000,
                )
                for s in range(steps) for i in range(batch)
            ]  # fmt: skip
            store.add_samples(search_id, rows)
        store.add_samples(search_id, [
            SampleRecord(
                phase="derive", epoch=epochs, step=0, index=i, arch=[i % 6] * 12, reward=0.7,
                accuracy=0.8, mean_precision=0.5, mean_recall=0.5, miou=0.3, miou_plus=0.4,
                policy_version=epochs * steps, params=270_000,
            )
            for i in range(derive)
        ])  # fmt: skip
        return search_id
    finally:
        store.close()


def analyze(url: str) -> None:
    """Statistics for the freshly loaded rows, as autovacuum gathers them on a server whose
    searches grew over hours. Without them PostgreSQL guesses a few hundred rows for the search
    and sorts all 310,101 for a page of 1,000 (about 100 ms) instead of reading it from the
    index (under 1 ms)."""
    from sqlalchemy import create_engine, text

    from storage.engine import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


async def measure(port: int, search_id: str, args: argparse.Namespace, last: str) -> list[Phase]:
    base = f"/searches/{search_id}"
    html = f"GET {base} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n\r\n".encode()
    heads = {
        "rewards": request_head("GET", f"{base}/rewards", port, {}),
        "rewards_new": request_head("GET", f"{base}/rewards?after={last}", port, {}),
        "status": request_head("GET", base, port, {}),
        "page": html,
        "architectures": request_head(
            "GET", f"{base}/architectures?order=desc&limit=1000", port, {}
        ),
    }
    phases = []
    for name, head in heads.items():
        phase = Phase(name, expected=200)
        await run_phase(
            phase, port, args.clients, lambda i, k, h=head: (h, b""), seconds=args.seconds
        )
        phases.append(phase)
    hammer = Phase("rewards_hammer", expected=200)
    health = Phase("healthz_under_load", expected=200)
    probe = request_head("GET", "/healthz", port, {})
    await asyncio.gather(
        run_phase(hammer, port, args.clients, lambda i, k: (heads["rewards"], b""),
                  seconds=args.seconds),
        run_phase(health, port, 1, lambda i, k: (probe, b""), seconds=args.seconds),
    )  # fmt: skip
    return [*phases, health]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=310)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    args.server_workers = None  # what api_load's server reads
    steps, batch, derive = 50, 20, 101
    with ExitStack() as stack:
        if args.sqlite:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="api-scale-")))
            url = f"sqlite:///{folder / 'segnas.db'}"
            upgrade(url)
        else:
            url = stack.enter_context(postgres_database(args.postgres)).url
        redis_url = stack.enter_context(redis_database(args.redis, args.redis_db))
        started = time.perf_counter()
        search_id = build_search(url, args.epochs, steps, batch, derive)
        built_s = time.perf_counter() - started
        if not args.sqlite:
            analyze(url)
        samples = args.epochs * steps * batch + derive
        server = stack.enter_context(api_server(args, url, redis_url))
        phases = run(measure(server.port, search_id, args, f"{args.epochs - 1}.{steps - 1}"))
    print(f"{'phase':<20} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'goal':>5} errors")
    for p in phases:
        goal = GOALS_MS.get(p.name)
        print(f"{p.name:<20} {p.requests:>8} {p.percentile_ms(0.5):>7.1f} "
              f"{p.percentile_ms(0.99):>7.1f} {goal or '-':>5} {p.errors}")  # fmt: skip
    print(json.dumps({
        "samples": samples,
        "database": "sqlite" if args.sqlite else "postgresql",
        "clients": args.clients,
        "build_s": round(built_s, 1),
        "p99_ms": {p.name: round(p.percentile_ms(0.99), 2) for p in phases},
        "p50_ms": {p.name: round(p.percentile_ms(0.5), 2) for p in phases},
        "errors": {p.name: p.errors for p in phases},
        "error_kinds": {
            p.name: {**{str(s): n for s, n in p.statuses.items() if s != p.expected},
                     **p.exceptions}
            for p in phases if p.errors
        },
        "goals_ms": GOALS_MS,
    }))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
