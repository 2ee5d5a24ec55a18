"""``segnas search``: run (or resume) an ENAS search and print the best architecture."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from segnas.commands.options import (
    add_db_argument,
    add_json_argument,
    add_overrides_argument,
    parse_key_values,
    print_json,
    print_table,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="search spec (YAML); default: the default search (configs/shapes.yaml)",
    )
    add_overrides_argument(parser)
    parser.add_argument("--replicas", type=int, help="supernet replicas (resources.replicas)")
    add_db_argument(parser)
    parser.add_argument(
        "--checkpoint-dir", type=Path, help="checkpoint folder (default: DATA_DIR/checkpoints)"
    )
    parser.add_argument(
        "--resume", metavar="SEARCH_ID", help="continue this search from its last checkpoint"
    )
    add_json_argument(parser)


def search_spec_from_args(args: argparse.Namespace) -> Any:
    """The spec a new search runs with: the config file (default: the default search), then
    ``--set``, then ``--replicas``."""
    from searchspec.spec import load_search_spec

    overrides = parse_key_values(args.overrides)
    if args.replicas is not None:
        overrides["resources.replicas"] = args.replicas
    return load_search_spec(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from errors import ConfigError

    if args.resume and (args.config or args.overrides or args.replicas is not None):
        raise ConfigError(
            "--resume continues a search with its stored spec: drop --config, --set and --replicas"
        )
    spec = None if args.resume else search_spec_from_args(args)

    from workers.driver import SearchCancelledError
    from workers.entry import open_store, run_search

    store = open_store(args.db)
    # SIGTERM (a scheduler, `kill`) stops the search like Ctrl-C: marked cancelled, resumable.
    # Installed before the search row exists; ensure_ray keeps it across ray.init (and hands
    # it a SIGTERM that came during ray.init, when Ray's own handler is in place).
    interrupt = _Interrupt()
    signal.signal(signal.SIGTERM, interrupt)
    bar = SearchBar()
    search_id: list[str] = []
    try:
        outcome = run_search(
            spec,
            resume=args.resume,
            store=store,
            checkpoint_dir=args.checkpoint_dir,
            on_created=search_id.append,
            on_progress=bar.update,
            should_stop=interrupt.received,
        )
    except (KeyboardInterrupt, SystemExit, SearchCancelledError):
        # SearchCancelledError: the interrupt's exception was lost, should_stop stopped it.
        bar.close()
        if search_id and _mark_interrupted(store, search_id[0]):
            print(
                f"segnas: interrupted; continue with: segnas search --resume {search_id[0]}",
                file=sys.stderr,
            )
        return 130
    finally:
        bar.close()
        store.close()

    if args.json:
        print_json(outcome.model_dump())
        return 0
    from supernet.space import format_arch

    print(f"search {outcome.search_id} {outcome.status}: {outcome.samples} samples")
    print(f"best architecture  {format_arch(outcome.best_arch)}   parameters {outcome.params:,}")
    rows = [[name, f"{value:.4f}"] for name, value in outcome.metrics.items()]
    print_table(rows, ["validation metric", "value"])
    print(
        f"(the best of {outcome.candidates} derived architectures on the validation split: "
        "an optimistic estimate; retrain it for a test score)"
    )
    print(f"reward: {outcome.reward} = {outcome.best_reward:.4f}")
    return 0


class _Interrupt:
    """The SIGTERM handler: raises KeyboardInterrupt, and remembers. An exception raised by a
    signal handler is lost when the handler happens to run inside code whose exceptions
    Python ignores (a ``__del__``, an at-fork hook); ``received`` is the search's
    ``should_stop``, so such a search still stops, at its next step."""

    def __init__(self) -> None:
        self._received = False

    def __call__(self, signum: int, frame: object) -> None:
        self._received = True
        raise KeyboardInterrupt

    def received(self) -> bool:
        return self._received


def _mark_interrupted(store: Any, search_id: str) -> bool:
    """Mark an interrupted search cancelled, error ``interrupted``, unless it had ended
    otherwise (the driver marks it, but the signal can come before the driver handles it, or
    should_stop stopped it); whether it can be resumed."""
    status = store.get(search_id).status
    if status not in ("succeeded", "failed"):
        store.mark_finished(search_id, "cancelled", error="interrupted")
    return status != "succeeded"


class SearchBar:
    """One bar over the whole search, in epochs: each epoch's shared and controller steps,
    then the derive phase as one more. Its total is fixed from the start and it never moves
    back (the controller's steps per epoch are known only once it has reported; until then
    an epoch is taken to have as many as the shared phase)."""

    def __init__(self, file: Any = None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            desc="search", unit="epoch", disable=None, file=file or sys.stderr,
            bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} epochs [{elapsed}<{remaining}{postfix}]",
        )  # fmt: skip
        self._shared_steps: int | None = None
        self._controller_steps: int | None = None

    @property
    def fraction(self) -> float:
        return self._bar.n / self._bar.total if self._bar.total else 0.0

    def update(self, p: Any) -> None:
        if p.phase == "shared":
            self._shared_steps = p.steps
        elif p.phase == "controller":
            self._controller_steps = p.steps
        if self._bar.total is None:
            self._bar.total = p.epochs + 1  # the derive phase counts as one
        if p.phase == "derive":
            done = p.epochs + (p.step / p.steps if p.steps else 1.0)
        else:
            shared = self._shared_steps or 1
            controller = self._controller_steps or shared
            within = p.step if p.phase == "shared" else shared + p.step
            done = p.epoch + min(1.0, within / (shared + controller))
        self._bar.n = max(self._bar.n, done)
        final = p.phase == "derive" and p.step == p.steps
        best = "-" if p.best_reward is None else f"{p.best_reward:.3f}"
        where = "validation split" if final else "one minibatch"
        self._bar.set_postfix_str(
            f"epoch {min(p.epoch + 1, p.epochs)}/{p.epochs} {p.phase} {p.step}/{p.steps} "
            f"best {best} ({where})",
            refresh=False,
        )
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
