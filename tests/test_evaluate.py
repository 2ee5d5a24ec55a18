"""``segnas evaluate``: the controls it builds, the summary it computes, and a small evaluation
run for real (tiny config, a local Ray), interrupted and continued."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from reports.evaluation import (
    Trained,
    format_table,
    kendall_null_se,
    retrained_means,
    seed_agreement,
    summarise,
)
from searchspec.spec import SearchSpec, load_search_spec, parse_search_spec
from storage.evaluations import EvaluationStore
from supernet.space import SearchSpace
from workers.entry import open_store
from workers.evaluate import (
    EvaluateSettings,
    Evaluation,
    Progress,
    arch_params,
    cell_params,
    evaluation_id,
    largest_arch,
    param_matched,
    search_spec,
    shrunk_channels,
    whole_params,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
METRICS = ("accuracy", "mean_precision", "mean_recall", "miou", "miou_plus")


def space(layers: int = 6) -> SearchSpace:
    return SearchSpace(layers=layers, channels=8, num_classes=5)


def test_largest_architecture_is_conv5x5_everywhere() -> None:
    assert largest_arch(space()) == [2] * 6


def test_param_matched_is_within_the_tolerance_and_not_the_target() -> None:
    s = space()
    target = [0, 1, 2, 3, 4, 5]
    for seed in range(5):
        arch = param_matched(s, target, tolerance=0.1, seed=seed)
        assert arch != target
        assert abs(arch_params(s, arch) - arch_params(s, target)) <= 0.1 * arch_params(s, target)
    assert param_matched(s, target, tolerance=0.1, seed=0) == param_matched(
        s, target, tolerance=0.1, seed=0
    )


def test_a_pick_nothing_random_comes_near_gets_the_closest_the_space_has() -> None:
    """All conv5x5 (the largest) has no uniform architecture within 10 % of it: its control is
    the nearest in size, the largest with one layer one cell smaller."""
    s = space()
    per_cell = cell_params(s)
    second = sorted(per_cell)[-2]
    arch = param_matched(s, largest_arch(s), tolerance=0.1, seed=0)
    assert arch != largest_arch(s)
    assert arch_params(s, arch) == 2 * (5 * max(per_cell) + second)


def test_evaluation_id_names_the_inputs() -> None:
    spec = parse_search_spec({})
    settings = EvaluateSettings()
    assert evaluation_id(spec, settings) == evaluation_id(parse_search_spec({}), EvaluateSettings())
    assert evaluation_id(spec, settings) != evaluation_id(spec, EvaluateSettings(seeds=2))
    assert evaluation_id(spec, settings) == evaluation_id(spec, EvaluateSettings(parallel=2))
    assert evaluation_id(spec, settings) != evaluation_id(parse_search_spec({"seed": 1}), settings)


def test_searches_differ_by_seed_and_method() -> None:
    base = parse_search_spec({})
    enas = search_spec(base, 1, "enas_miou_plus", "abc")
    random_ws = search_spec(base, 1, "random_ws", "abc")
    assert (enas.seed, enas.controller.seed, enas.reward) == (1, 1, "miou_plus")
    assert enas.controller.sampler == "policy"
    assert random_ws.controller.sampler == "uniform"
    assert random_ws.reward == base.reward  # the derive phase picks by the spec's reward
    assert search_spec(base, 2, "enas_miou", "abc").seed == 2


def test_settings_refuse_repeated_rewards() -> None:
    with pytest.raises(ValueError, match="distinct"):
        EvaluateSettings(rewards=("miou", "miou"))


def trained(arch: tuple[int, ...], miou: float, params: int = 100) -> Trained:
    return Trained(arch=arch, params=params, seeds=2, metrics={m: miou for m in METRICS})


def at_space_width(*networks: Trained) -> dict[Any, Trained]:
    """``retrained_means``' mapping of networks trained at their space's channels."""
    return {(t.arch, None): t for t in networks}


def test_summary_means_sds_tau_and_goal(tmp_path: Path) -> None:
    uniform = [(0,), (1,), (2,), (3,)]
    truth = at_space_width(*(trained(a, 0.1 * (k + 1)) for k, a in enumerate(uniform)))
    picks = {
        seed: {
            "enas_miou": (5 + seed,),
            "random_ws": (1,),
            "largest": (2,),
            "param_matched": (3,),
        }
        for seed in range(2)
    }
    truth |= at_space_width(trained((5,), 0.9), trained((6,), 0.7))
    # The ENAS supernet ranks the uniform sample right, the uniform one backwards.
    shared = {
        s: {
            "enas": {a: float(k) for k, a in enumerate(uniform)},
            "uniform": {a: float(-k) for k, a in enumerate(uniform)},
        }
        for s in range(2)
    }
    summary = summarise(picks=picks, trained=truth, shared=shared, uniform=uniform, metric="miou")
    enas = summary["methods"]["enas_miou"]
    assert enas["test_miou_mean"] == pytest.approx(0.8)
    assert enas["test_miou_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["methods"]["random_ws"]["test_miou_sd"] == 0.0
    assert summary["kendall_tau"] == {"enas": 1.0, "uniform": -1.0}
    assert summary["kendall_tau_se"]["enas"] == pytest.approx(kendall_null_se(4))
    assert summary["seeds"] == 2
    assert summary["architectures_retrained"] == 6
    goal = summary["goal"]
    assert goal["best_enas"] == "enas_miou"
    assert goal["margins"]["random_ws"] == pytest.approx(0.6)
    assert goal["beats_controls"] and goal["tau_met"] and goal["met"]
    assert summary["methods"]["enas_miou"]["per_seed_miou"] == pytest.approx([0.9, 0.7])
    assert summary["shared_vs_retrained"][0]["enas"][1] == pytest.approx([1.0, 0.2])
    assert goal["matched_control"] == "param_matched"  # an older summary: the one control

    from segnas.commands.evaluate import write_outputs

    written = write_outputs(summary, tmp_path / "out")
    assert [p.name for p in written] == [
        "summary.json", "table.txt", "methods.png", "shared_vs_retrained.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 0 for p in written)
    assert (tmp_path / "out" / "methods.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "enas_miou" in (tmp_path / "out" / "table.txt").read_text()


def test_the_goal_holds_the_best_reward_to_a_control_of_its_own_size() -> None:
    """A reward that picks large networks is compared with a network of that size, not with
    the control matched to another reward's (smaller) picks."""
    truth = at_space_width(
        trained((1,), 0.4), trained((5,), 0.5), trained((8,), 0.9),
        trained((3,), 0.45), trained((9,), 0.85), trained((2,), 0.95),
    )  # fmt: skip
    by_method = {
        "enas_miou": (5,), "enas_miou_plus": (8,), "random_ws": (1,), "largest": (2,),
        "param_matched": (3,), "param_matched_miou": (3,), "param_matched_miou_plus": (9,),
    }  # fmt: skip
    picks = {seed: by_method for seed in range(2)}
    summary = summarise(picks=picks, trained=truth, shared={}, uniform=[], metric="miou")
    goal = summary["goal"]
    assert goal["best_enas"] == "enas_miou_plus"
    assert goal["matched_control"] == "param_matched_miou_plus"
    assert goal["margins"] == pytest.approx({"random_ws": 0.5, "param_matched_miou_plus": 0.05})
    assert goal["beats_controls"]  # both sds are 0 here; 0.05 > 0
    assert "param_matched_miou_plus" in summary["methods"]


def test_retrained_means_keep_one_architecture_at_two_widths_apart() -> None:
    row = dict(
        arch=[1, 2], status="succeeded", params=900, accuracy=0.9, mean_precision=0.5,
        mean_recall=0.5, miou=0.4, miou_plus=0.7,
    )  # fmt: skip
    rows = [
        {**row, "train_seed": 0, "channels": None},
        {**row, "train_seed": 1, "channels": None, "miou": 0.6},
        {**row, "train_seed": 0, "channels": 4, "params": 90, "miou": 0.2},
    ]
    means = retrained_means(rows)
    assert set(means) == {((1, 2), None), ((1, 2), 4)}
    assert means[((1, 2), None)].metrics["miou"] == pytest.approx(0.5)
    assert means[((1, 2), None)].seeds == 2
    shrunk = means[((1, 2), 4)]
    assert (shrunk.channels, shrunk.params, shrunk.metrics["miou"]) == (4, 90, 0.2)


def test_the_size_goal_holds_the_size_aware_pick_to_a_small_random_and_a_shrunk_one() -> None:
    """The size-aware pick (``enas_miou``, the spec's reward weighed by size) against a random
    network of its size and the unconstrained pick at fewer channels (the same architecture
    trained at 8 channels is another network, scored apart)."""
    truth = at_space_width(
        trained((5,), 0.60, params=900), trained((1,), 0.4), trained((3,), 0.50, params=880),
        trained((2,), 0.95), trained((7,), 0.70, params=3_000),
    )  # fmt: skip
    truth[((7,), 8)] = Trained(
        arch=(7,), channels=8, params=910, seeds=2, metrics={m: 0.55 for m in METRICS}
    )
    by_method = {
        "enas_miou": (5,), "random_ws": (1,), "largest": (2,), "param_matched": (3,),
        "param_matched_miou": (3,), "unconstrained": (7,), "unconstrained_shrunk": (7,),
    }  # fmt: skip
    picks = {seed: by_method for seed in range(2)}
    widths = {seed: {"unconstrained_shrunk": 8} for seed in range(2)}
    summary = summarise(
        picks=picks, trained=truth, shared={}, uniform=[], metric="miou", channels=widths,
        size_target=1_000,
    )  # fmt: skip
    methods = summary["methods"]
    assert methods["unconstrained"]["test_miou_mean"] == pytest.approx(0.70)
    assert methods["unconstrained_shrunk"]["test_miou_mean"] == pytest.approx(0.55)
    assert methods["unconstrained_shrunk"]["channels"] == [8, 8]
    assert methods["unconstrained_shrunk"]["params"] == 910
    assert "channels" not in methods["unconstrained"]
    goal = summary["size_goal"]
    assert goal["within_target"] and goal["params"] == [900, 900]
    assert goal["margins"] == pytest.approx({"param_matched": 0.10, "unconstrained_shrunk": 0.05})
    assert goal["met"]
    over = summarise(
        picks=picks, trained=truth, shared={}, uniform=[], metric="miou", channels=widths,
        size_target=800,
    )["size_goal"]  # fmt: skip
    assert not over["within_target"] and not over["met"]
    assert "size_goal" not in summarise(
        picks=picks, trained=truth, shared={}, uniform=[], metric="miou"
    )
    table = format_table(summary)
    assert table[0].split() == ["metric", *methods]  # no name runs into the next
    assert table[-1].split() == ["channels", "-", "-", "-", "-", "-", "-", "8,8"]


def test_shrunk_channels_give_the_parameters_asked_for() -> None:
    big = space()
    arch = [2, 2, 0, 1, 3, 0]
    full = whole_params(big, arch)
    assert shrunk_channels(big, arch, full) == big.channels
    half = shrunk_channels(big, arch, full // 3)
    assert half < big.channels
    at = {
        c: whole_params(big.model_copy(update={"channels": c}), arch)
        for c in (half - 1, half, half + 1)
    }
    assert abs(at[half] - full // 3) <= min(
        abs(at[half - 1] - full // 3), abs(at[half + 1] - full // 3)
    )
    assert shrunk_channels(big, arch, 1) == 1  # nothing is smaller than one channel


def test_a_size_aware_evaluation_adds_the_unconstrained_search() -> None:
    sized = parse_search_spec(
        {"reward": {"metric": "miou", "cost": "params", "target": 10_000, "weight": -0.5}}
    )
    evaluation_methods = Evaluation(
        sized,
        EvaluateSettings(rewards=("miou",)),
        store=None,
        checkpoint_dir=Path("."),  # type: ignore[arg-type]
    ).methods
    assert evaluation_methods == ["enas_miou", "random_ws", "unconstrained"]
    ours = search_spec(sized, 0, "enas_miou", "abc")
    free = search_spec(sized, 0, "unconstrained", "abc")
    assert ours.reward_cost is not None and ours.reward_cost.target == 10_000
    assert free.reward == "miou" and free.reward_cost is None
    assert (free.seed, free.controller.seed) == (ours.seed, ours.controller.seed)


def test_the_default_evaluation_keeps_its_id_across_later_spec_fields() -> None:
    # The evaluation of docs/results.md (2026-12-04): the same command continues it on code
    # that has since added sections (checkpoints, reward_cost) at their defaults.
    settings = EvaluateSettings(seeds=3, uniform=30, train_seeds=2, retrain_epochs=10, parallel=2)
    assert evaluation_id(SearchSpec(), settings) == "0ba5a473de013741d0bc9493942d45ff"


def test_seed_agreement_is_the_ground_truths_own_tau_and_spread() -> None:
    archs = [(0,), (1,), (2,), (3,)]
    seed0 = [0.1, 0.2, 0.3, 0.4]
    seed1 = [0.2, 0.1, 0.4, 0.3]  # two swapped pairs: tau = (4 - 2) / 6
    rows = [
        {"arch": list(a), "train_seed": s, "miou": v}
        for s, values in enumerate((seed0, seed1))
        for a, v in zip(archs, values, strict=True)
    ] + [{"arch": [9], "train_seed": 0, "miou": 0.9}]  # not in the sample: left out
    agreement = seed_agreement(rows, archs, "miou")
    assert agreement["tau_per_pair"] == {"0-1": pytest.approx(1 / 3)}
    assert agreement["tau"] == pytest.approx(1 / 3)
    assert agreement["architectures"] == 4
    assert agreement["within_sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert agreement["between_sd"] == pytest.approx(statistics.stdev([0.15, 0.15, 0.35, 0.35]))
    single = seed_agreement(rows[:4], archs, "miou")
    assert single["tau"] is None and single["within_sd"] is None


class StopHereError(Exception):
    pass


def test_a_small_evaluation_interrupted_then_continued(ray_data_dir: Path) -> None:
    store = open_store(f"sqlite:///{ray_data_dir / 'segnas.db'}")
    base = load_search_spec(TINY)
    settings = EvaluateSettings(
        seeds=2, rewards=("miou",), uniform=3, epochs=1, train_seeds=2, retrain_epochs=1,
        batch_size=16, parallel=2,
    )  # fmt: skip

    def stop_at_first_training(p: Progress) -> None:
        if p.stage == "retrain" and p.done > 0:
            raise StopHereError

    first = Evaluation(
        base, settings, store=store, checkpoint_dir=ray_data_dir / "ck",
        on_progress=stop_at_first_training,
    )  # fmt: skip
    with pytest.raises(StopHereError):
        first.run()
    evaluations = EvaluationStore(store)
    row = evaluations.get(first.id)
    assert row is not None and row.status == "failed"
    searches = dict(row.searches)
    assert len(searches) == 4  # 2 seeds x (enas_miou, random_ws)
    trainings_before = len(evaluations.trainings(first.id))
    assert trainings_before > 0

    stages: list[Progress] = []
    summary: dict[str, Any] = Evaluation(
        base, settings, store=store, checkpoint_dir=ray_data_dir / "ck", on_progress=stages.append
    ).run()

    # Nothing was searched twice, and the trainings stored before were not run again.
    assert evaluations.get(first.id).searches == searches
    assert summary["searches"] == searches
    assert all(store.get(sid).status == "succeeded" for sid in searches.values())
    first_retrain = next(p for p in stages if p.stage == "retrain")
    assert first_retrain.done == trainings_before
    assert evaluations.get(first.id).status == "succeeded"

    methods = summary["methods"]
    assert set(methods) == {
        "enas_miou", "random_ws", "largest", "param_matched", "param_matched_miou"
    }  # fmt: skip
    assert methods["param_matched"]["archs"] == methods["param_matched_miou"]["archs"]
    for entry in methods.values():
        assert len(entry["archs"]) == 2 and entry["retrained"] == 2
        assert 0.0 <= entry["test_miou_mean"] <= 1.0
        assert entry["test_miou_sd"] is not None
    assert methods["largest"]["archs"] == [[2, 2, 2], [2, 2, 2]]
    rows = evaluations.trainings(first.id)
    assert {r.train_seed for r in rows} == {0, 1}
    assert len(rows) == 2 * summary["architectures_retrained"]
    assert len(evaluations.scores(first.id)) == 2 * 2 * 3  # seeds x supernets x uniform
    assert set(summary["kendall_tau"]) == {"enas", "uniform"}
    assert summary["seeds"] == 2
    assert set(summary["ground_truth"]["tau_per_pair"]) == {"0-1"}
    assert summary["ground_truth"]["architectures"] == 3
    assert summary["paper"]["accuracy_order"]["measured"] == ["enas_miou"]
    assert summary["paper"]["large_kernels"]["share"]["largest"] == 1.0
    store.close()


def test_cli_names_a_bad_reward_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SEGNAS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "segnas.cli", "evaluate", "--rewards", "miou,iou"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("segnas: error:") and "rewards" in done.stderr
    assert "Traceback" not in done.stderr


def test_evaluation_rows_on_every_backend(store: Any) -> None:
    from storage.evaluations import ScoreRecord, TrainingRecord

    evaluations = EvaluationStore(store)
    record, created = evaluations.open("e" * 32, spec={"a": 1}, settings={"seeds": 1})
    assert created and record.status == "running" and record.searches == {}
    again, created = evaluations.open("e" * 32, spec={"a": 1}, settings={"seeds": 1})
    assert not created and again.id == record.id
    search = store.create({"epochs": 1}).id
    evaluations.add_search(record.id, "0/enas_miou", search)
    assert evaluations.get(record.id).searches == {"0/enas_miou": search}

    row = dict(
        arch=[0, 1], train_seed=0, status="succeeded", params=10,
        accuracy=0.9, mean_precision=0.5, mean_recall=0.5, miou=0.4, miou_plus=0.7,
    )  # fmt: skip
    evaluations.add_trainings(record.id, [TrainingRecord(**row)])
    evaluations.add_trainings(record.id, [TrainingRecord(**{**row, "miou": 0.5})])  # replaces
    evaluations.add_trainings(record.id, [TrainingRecord(**{**row, "train_seed": 1})])
    assert sorted((r.train_seed, r.miou) for r in evaluations.trainings(record.id)) == [
        (0, 0.5),
        (1, 0.4),
    ]
    # The same architecture at fewer channels is another network: stored beside it.
    evaluations.add_trainings(record.id, [TrainingRecord(**{**row, "channels": 4, "miou": 0.1})])
    rows = evaluations.trainings(record.id)
    assert sorted((r.train_seed, r.channels or 0, r.miou) for r in rows) == [
        (0, 0, 0.5),
        (0, 4, 0.1),
        (1, 0, 0.4),
    ]
    other = "f" * 32  # no such evaluation: counted as none
    assert evaluations.trainings_counts([record.id, other]) == {record.id: 3, other: 0}
    assert evaluations.search_statuses([evaluations.get(record.id)]) == {search: "queued"}
    score = ScoreRecord(search_id=search, arch=[0, 1], metrics={"miou": 0.3})
    evaluations.add_scores(record.id, [score])
    evaluations.add_scores(record.id, [score])  # the same weights: kept once
    assert evaluations.scores(record.id) == [score]
    evaluations.finish(record.id, "succeeded", summary={"seeds": 1})
    done = evaluations.get(record.id)
    assert done.status == "succeeded" and done.summary == {"seeds": 1}


def _method(archs, accuracy_mean, accuracy_sd):
    return {"archs": archs, "test_accuracy_mean": accuracy_mean, "test_accuracy_sd": accuracy_sd}


def test_paper_observations_check_the_accuracy_order_and_the_5x5_share():
    from reports.evaluation import format_observations, paper_observations

    cells = ("conv3x3", "sep3x3", "conv5x5", "sep5x5", "avgpool3x3", "maxpool3x3")
    methods = {
        "enas_accuracy": _method([[2, 3, 2], [2, 2, 0]], 0.95, 0.01),
        "enas_miou_plus": _method([[2, 0, 4]], 0.90, 0.01),
        "enas_miou": _method([[0, 1, 5]], 0.85, 0.01),
        "random_ws": _method([[4, 5, 0]], 0.80, 0.02),
    }
    paper = paper_observations(methods, cells)
    assert paper["accuracy_order"] == {
        "paper": ["enas_accuracy", "enas_miou_plus", "enas_miou"],
        "measured": ["enas_accuracy", "enas_miou_plus", "enas_miou"],
        "holds": True,
        "within_noise": False,
    }
    assert paper["large_kernels"]["share"]["enas_accuracy"] == pytest.approx(5 / 6)
    assert paper["large_kernels"]["uniform_share"] == pytest.approx(1 / 3)
    assert paper["large_kernels"]["holds"]

    methods["enas_miou"] = _method([[2, 3, 3]], 0.945, 0.02)  # more 5x5, and inside the noise
    paper = paper_observations(methods, cells)
    assert paper["accuracy_order"]["measured"] == ["enas_accuracy", "enas_miou", "enas_miou_plus"]
    assert not paper["accuracy_order"]["holds"] and paper["accuracy_order"]["within_noise"]
    assert not paper["large_kernels"]["holds"]
    lines = format_observations(paper)
    assert "does not hold" in lines[0] and "within seed noise" in lines[0]
    assert lines[1].startswith("5x5 cells favoured by the accuracy reward: no")


def test_reproduce_over_seeds_is_the_evaluation_of_segnas_evaluate() -> None:
    from searchspec.spec import load_search_spec
    from segnas.cli import build_parser
    from segnas.commands.evaluate import settings_from_args
    from segnas.commands.reproduce import evaluate_settings
    from workers.evaluate import evaluation_id

    parser = build_parser()
    reproduce = parser.parse_args(["reproduce", "--seeds", "3", "--parallel", "2"])
    evaluate = parser.parse_args(["evaluate", "--seeds", "3", "--parallel", "2"])
    spec = load_search_spec(None)
    assert evaluate_settings(reproduce) == settings_from_args(evaluate)
    assert evaluation_id(spec, evaluate_settings(reproduce)) == evaluation_id(
        spec, settings_from_args(evaluate)
    )
    longer = parser.parse_args(["reproduce", "--seeds", "2", "--epochs", "4"])
    assert evaluate_settings(longer).retrain_epochs == 4


def test_reproduce_over_seeds_refuses_single_seed_options_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segnas.cli", "reproduce", "--seeds", "2", "--top-k", "5"],
        env={**os.environ, "SEGNAS_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "segnas: error: --top-k: only for the single-seed reproduction (without --seeds); "
        "over seeds the controls are random_ws, largest and param_matched, as in segnas evaluate"
    ]
