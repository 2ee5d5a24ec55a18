"""The command line's search bar: a fixed total, never moving back (issue 16)."""

from __future__ import annotations

import io
from types import SimpleNamespace

from segnas.commands.remote import show_progress
from segnas.commands.search import SearchBar


def progress(epoch: int, phase: str, step: int, steps: int, best: float | None = None) -> object:
    return SimpleNamespace(
        epoch=epoch, epochs=2, phase=phase, step=step, steps=steps, best_reward=best
    )


def test_the_bar_never_moves_back_and_ends_full() -> None:
    out = io.StringIO()
    bar = SearchBar(file=out)
    seen = []
    for p in [
        progress(0, "shared", 5, 10), progress(0, "shared", 10, 10),
        # The controller's 30 steps are news to the bar: an epoch is 40 steps, not 20.
        progress(0, "controller", 1, 30, 0.9), progress(0, "controller", 30, 30, 0.95),
        progress(1, "shared", 10, 10, 0.95), progress(1, "controller", 30, 30, 0.96),
        progress(2, "derive", 0, 4, 0.96), progress(2, "derive", 4, 4, 0.91),
    ]:  # fmt: skip
        bar.update(p)
        seen.append(bar.fraction)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert seen[0] > 0 and seen[3] == 1 / 3  # epoch 0 of 2 done, derive still to come
    assert bar._bar.total == 3  # fixed from the first update
    bar.close()


def test_the_best_says_which_score_it_is() -> None:
    bar = SearchBar(file=io.StringIO())
    bar.update(progress(0, "controller", 1, 3, 0.946))
    assert bar._bar.postfix.endswith("best 0.946 (one minibatch)")
    bar.update(progress(2, "derive", 4, 4, 0.918))  # the result, on the whole validation split
    assert bar._bar.postfix.endswith("best 0.918 (validation split)")
    bar.close()


def test_the_remote_bar_says_it_too() -> None:
    from tqdm import tqdm

    with tqdm(total=100, file=io.StringIO()) as bar:
        search = {"status": "running", "best": {"arch": [0], "reward": 0.946}}
        search["progress"] = {"epoch": 0, "epochs": 2, "phase": "controller", "step": 1,
                              "steps": 3, "fraction": 0.2}  # fmt: skip
        show_progress(bar, search)
        assert bar.postfix.endswith("best 0.946 (one minibatch)")
        show_progress(bar, {**search, "status": "succeeded", "best": {"reward": 0.918}})
        assert bar.postfix.endswith("best 0.918 (validation split)")
