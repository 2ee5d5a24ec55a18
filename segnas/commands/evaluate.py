"""``segnas evaluate``: the search phase measured against its controls (``workers.evaluate``).

Run the same command again to continue an interrupted evaluation: its id is a digest of the
spec and the settings, and whatever it stored is not run twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from segnas.commands.options import (
    add_db_argument,
    add_json_argument,
    add_overrides_argument,
    parse_key_values,
    print_json,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="search spec (default: the default search, configs/shapes.yaml)"
    )
    add_overrides_argument(parser, what="a spec field of every search")
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds (3)")
    parser.add_argument(
        "--uniform", type=int, default=30, help="uniform architectures retrained as truth (30)"
    )
    parser.add_argument("--epochs", type=int, help="epochs of every search (default: the spec's)")
    parser.add_argument(
        "--rewards",
        default="accuracy,miou,miou_plus",
        help="rewards of the ENAS searches, comma-separated (accuracy,miou,miou_plus)",
    )
    parser.add_argument(
        "--parallel", type=int, default=1, help="searches run at once (1); each needs its CPUs"
    )
    group = parser.add_argument_group("retraining")
    group.add_argument("--train-seeds", type=int, default=2, help="seeds per architecture (2)")
    group.add_argument("--retrain-epochs", type=int, default=10, help="epochs of each (10)")
    group.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    group.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial (1)")
    group.add_argument(
        "--match-tolerance",
        type=float,
        default=0.1,
        help="param_matched: relative distance to the ENAS pick's parameters (0.1)",
    )
    parser.add_argument(
        "--out", type=Path, help="also write summary.json and the figures (PNG) to this folder"
    )
    add_db_argument(parser)
    parser.add_argument(
        "--checkpoint-dir", type=Path, help="checkpoint folder (default: DATA_DIR/checkpoints)"
    )
    add_json_argument(parser)


def settings_from_args(args: argparse.Namespace) -> Any:
    from workers.evaluate import EvaluateSettings

    rewards = tuple(r.strip() for r in args.rewards.split(",") if r.strip())
    return EvaluateSettings(
        seeds=args.seeds,
        rewards=rewards,
        uniform=args.uniform,
        epochs=args.epochs,
        train_seeds=args.train_seeds,
        retrain_epochs=args.retrain_epochs,
        batch_size=args.batch_size,
        cpus_per_trial=args.cpus_per_trial,
        match_tolerance=args.match_tolerance,
        parallel=args.parallel,
    )


def run(args: argparse.Namespace) -> int:
    from searchspec.spec import load_search_spec

    base = load_search_spec(args.config, parse_key_values(args.overrides))
    settings = settings_from_args(args)

    return run_and_report(
        base, settings, db=args.db, checkpoint_dir=args.checkpoint_dir, out=args.out,
        as_json=args.json,
    )  # fmt: skip


def run_and_report(
    base: Any,
    settings: Any,
    *,
    db: str | None,
    checkpoint_dir: Path | None,
    out: Path | None,
    as_json: bool,
) -> int:
    """Run (or continue) the evaluation with progress bars, write ``out`` if given, print its
    summary (``segnas evaluate`` and ``segnas reproduce --seeds``)."""
    from workers.entry import default_checkpoint_dir, open_store
    from workers.evaluate import Evaluation

    store = open_store(db)
    try:
        with StageBars() as bars:
            evaluation = Evaluation(
                base,
                settings,
                store=store,
                checkpoint_dir=checkpoint_dir or default_checkpoint_dir(),
                on_progress=bars.update,
            )
            print(f"segnas: evaluation {evaluation.id}", file=sys.stderr)
            summary = evaluation.run()
    finally:
        store.close()
    if out is not None:
        write_outputs(summary, out)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
    return 0


def write_outputs(summary: dict[str, Any], out: Path) -> list[Path]:
    """``summary.json``, ``table.txt`` and the two figures in ``out``."""
    import json

    from reports.evaluation import format_observations, format_table
    from reports.figures import evaluation_methods_png, shared_vs_retrained_png

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = format_table(summary)
    if "paper" in summary:
        lines += ["", *format_observations(summary["paper"])]
    (out / "table.txt").write_text("\n".join(lines) + "\n")
    return [
        out / "summary.json",
        out / "table.txt",
        evaluation_methods_png(summary, out / "methods.png"),
        shared_vs_retrained_png(summary, out / "shared_vs_retrained.png"),
    ]


def print_summary(summary: dict[str, Any]) -> None:
    from reports.evaluation import format_observations, format_table

    print(
        f"evaluation {summary['evaluation_id']}: {summary['seeds']} seeds, "
        f"{summary['architectures_retrained']} architectures retrained; retrained test "
        "metrics, mean ± sd over seeds"
    )
    for line in format_table(summary):
        print(line)
    for line in format_observations(summary["paper"]) if "paper" in summary else []:
        print(line)
    tau, sd, se = summary["kendall_tau"], summary["kendall_tau_sd"], summary["kendall_tau_se"]
    for name in tau:
        if tau[name] is None:
            print(f"kendall tau ({name} supernet): undefined")
            continue
        spread = "" if sd[name] is None else f" ± {sd[name]:.3f} over seeds"
        print(
            f"kendall tau ({name} supernet, shared score vs retrained {summary['metric']}): "
            f"{tau[name]:.3f}{spread} (SE of one seed's tau {se[name]:.3f})"
        )
    truth = summary.get("ground_truth")
    if truth and truth["tau"] is not None:
        print(
            f"ground truth: kendall tau between training seeds {truth['tau']:.3f} over "
            f"{truth['architectures']} uniform architectures (the ceiling for the above); "
            f"sd across seeds {truth['within_sd']:.4f}, between architectures "
            f"{truth['between_sd']:.4f}"
        )
    goal = summary["goal"]
    if "margins" in goal:
        margins = ", ".join(f"{k} {v:+.4f}" for k, v in goal["margins"].items())
        print(
            f"goal: {goal['best_enas']} beats the controls by more than {goal['larger_sd']:.4f} "
            f"({margins}): {'met' if goal['beats_controls'] else 'not met'}; tau >= "
            f"{goal['tau_goal']}: {'met' if goal['tau_met'] else 'not met'}"
        )
    size = summary.get("size_goal")
    if size and "margins" in size:
        margins = ", ".join(f"{k} {v:+.4f}" for k, v in size["margins"].items())
        print(
            f"size goal: {size['method']} within {size['target']} parameters "
            f"({'yes' if size['within_target'] else 'no'}: {size['params']}) and beats the "
            f"controls by more than {size['larger_sd']:.4f} ({margins}): "
            f"{'met' if size['met'] else 'not met'}"
        )


class StageBars:
    """One tqdm bar per stage of the evaluation."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def update(self, progress: Any) -> None:
        from tqdm import tqdm

        bar = self._bars.get(progress.stage)
        if bar is None:
            for other in self._bars.values():
                other.close()
            bar = self._bars[progress.stage] = tqdm(
                desc=progress.stage, total=progress.total, disable=None, file=sys.stderr
            )
        bar.total = progress.total
        bar.n = progress.done
        bar.set_postfix_str(progress.detail, refresh=False)
        bar.refresh()

    def __enter__(self) -> StageBars:
        return self

    def __exit__(self, *_exc: object) -> None:
        for bar in self._bars.values():
            bar.close()
