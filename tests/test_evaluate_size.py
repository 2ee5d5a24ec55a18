"""``segnas evaluate`` on a size-aware reward, run for real (tiny config, a local Ray): the
unconstrained search beside the others, its pick trained again at fewer channels, the size
goal. A file of its own, so that the test runner puts it beside test_evaluate.py's small
evaluation rather than after it."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from searchspec.spec import load_search_spec
from storage.evaluations import EvaluationStore
from workers.entry import open_store
from workers.evaluate import EvaluateSettings, Evaluation, whole_params

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def test_a_size_aware_evaluation_shrinks_the_unconstrained_pick(ray_data_dir: Path) -> None:
    store = open_store(f"sqlite:///{ray_data_dir / 'segnas.db'}")
    sized = {"metric": "miou", "cost": "params", "target": 1_500, "weight": -0.5}
    base = load_search_spec(TINY, {"reward": sized})
    settings = EvaluateSettings(
        seeds=1, rewards=("miou",), uniform=0, epochs=1, train_seeds=1, retrain_epochs=1,
        batch_size=16, parallel=2,
    )  # fmt: skip
    evaluation = Evaluation(base, settings, store=store, checkpoint_dir=ray_data_dir / "ck")
    summary = evaluation.run()

    methods = summary["methods"]
    assert set(methods) == {
        "enas_miou", "random_ws", "largest", "param_matched", "param_matched_miou",
        "unconstrained", "unconstrained_shrunk",
    }  # fmt: skip
    searches = summary["searches"]
    assert set(searches) == {"0/enas_miou", "0/random_ws", "0/unconstrained"}
    unconstrained = store.get(searches["0/unconstrained"]).spec
    assert unconstrained["reward_cost"] is None  # the metric alone
    assert store.get(searches["0/enas_miou"]).spec["reward_cost"]["target"] == 1_500

    [pick] = methods["enas_miou"]["archs"]
    [free] = methods["unconstrained"]["archs"]
    assert methods["unconstrained_shrunk"]["archs"] == [free]
    [full] = methods["unconstrained"]["per_seed_params"]
    [small] = methods["unconstrained_shrunk"]["per_seed_params"]
    [ours] = methods["enas_miou"]["per_seed_params"]
    space = evaluation._space()
    assert ours == whole_params(space, pick) and full == whole_params(space, free)
    [channels] = methods["unconstrained_shrunk"].get("channels", [None])
    if channels is None:  # already no larger than the size-aware pick: itself
        assert small == full
    else:  # the width whose parameters come closest to the size-aware pick's
        assert 1 <= channels < base.space.channels and small < full
        narrower = space.model_copy(update={"channels": channels})
        assert small == whole_params(narrower, free)
        rows = [r for r in EvaluationStore(store).trainings(evaluation.id) if r.channels]
        assert [(r.arch, r.channels) for r in rows] == [(free, channels)]
    goal = summary["size_goal"]
    assert goal["target"] == 1_500 and goal["params"] == [ours]
    assert goal["within_target"] == (ours <= 1_500)
    assert set(goal["margins"]) == {"param_matched", "unconstrained_shrunk"}
    store.close()
