"""From search to result, as a user runs it: ``segnas reproduce`` (a Ray Tune grid of searches,
then retraining as Tune trials), ``segnas retrain``, ``segnas report``, ``segnas export``, in
separate processes on the tiny config, and the rows they leave behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.retrains import RetrainStore
from storage.searches import SearchStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
METRICS = ("accuracy", "mean_precision", "mean_recall", "miou", "miou_plus")


def segnas(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEGNAS_DATA_DIR": str(data), "RAY_AUTH_MODE": "disabled"}
    for name in ("DATABASE_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "segnas.cli", *argv],
        cwd=data.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def last_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny reproduction: 3 searches, 2 best architectures each, 2 shared baselines."""
    data = tmp_path_factory.mktemp("reproduce") / "data"
    out = data.parent / "report"
    done = segnas(
        data,
        "reproduce", "--config", str(TINY), "--epochs", "2", "--top-k", "2", "--random", "2",
        "--batch-size", "16", "--out", str(out), "--json",
    )  # fmt: skip
    return {"data": data, "out": out, "json": last_json(done)}


@pytest.fixture
def store(reproduced: dict[str, Any]) -> Iterator[SearchStore]:
    store = SearchStore(f"sqlite:///{reproduced['data'] / 'segnas.db'}")
    yield store
    store.close()


def search_ids(reproduced: dict[str, Any]) -> list[str]:
    return [s["search_id"] for s in reproduced["json"]["report"]["searches"]]


def test_reproduce_runs_one_search_per_reward_and_reports_table_one(
    reproduced: dict[str, Any], store: SearchStore
) -> None:
    report = reproduced["json"]["report"]
    assert [s["reward"] for s in report["searches"]] == ["accuracy", "miou", "miou_plus"]
    for search_id in search_ids(reproduced):
        record = store.get(search_id)
        assert record.status == "succeeded"
        assert record.spec["reward"] == store.get(search_id).spec["reward"]
    assert {store.get(i).spec["reward"] for i in search_ids(reproduced)} == {
        "accuracy", "miou", "miou_plus"
    }  # fmt: skip

    out = reproduced["out"]
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "reward_curves.png"} <= names
    for reward in ("accuracy", "miou", "miou_plus"):
        assert {f"cell_frequency_{reward}.png", f"best_arch_{reward}.png"} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    for row in ("accuracy", "mean precision", "mean recall", "mean IoU", "parameters"):
        assert f"| {row}" in markdown
    assert "| test split | accuracy | mIoU | mIoU+ |" in markdown
    assert "Kendall" in markdown and "random" in markdown
    # Table 1's numbers are the retrained best architectures' test metrics in the database.
    for column in report["searches"]:
        best = RetrainStore(store).list(column["search_id"])[0]
        assert (best.source, best.rank) == ("enas", 0)
        assert column["best"]["test"]["miou"] == pytest.approx(best.miou)
        assert column["best"]["arch"] == best.arch == store.result(column["search_id"]).arch


def test_every_search_has_its_best_retrained_and_the_shared_baselines(
    reproduced: dict[str, Any], store: SearchStore
) -> None:
    baselines = None
    for search_id in search_ids(reproduced):
        rows = RetrainStore(store).list(search_id)
        enas = [r for r in rows if r.source == "enas"]
        random_ = [r for r in rows if r.source == "random"]
        assert [r.rank for r in enas] == list(range(len(enas))) and 1 <= len(enas) <= 2
        assert [r.rank for r in random_] == [0, 1]
        # Ranked by the derive phase's shared-weight score, best first.
        scores = [r.shared_score for r in enas]
        assert scores == sorted(scores, reverse=True)
        for r in rows:
            assert r.status == "succeeded" and r.epochs == 2 and r.error is None
            assert r.params and r.params > 0
            assert r.seconds and r.seconds > 0  # the trial's own time
            assert all(0 <= getattr(r, m) <= 1 for m in METRICS)
            assert Path(r.weights_path).is_file()
        # The baselines are the same architectures, trained once, for every search.
        these = [(r.arch, r.miou, r.weights_path) for r in random_]
        assert baselines is None or these == baselines
        baselines = these
        assert not {tuple(r.arch) for r in random_} & {tuple(r.arch) for r in enas}


def test_retrain_json_prints_every_architecture_and_replaces_the_rows(
    reproduced: dict[str, Any], store: SearchStore
) -> None:
    search_id = search_ids(reproduced)[1]
    before = RetrainStore(store).list(search_id)
    done = segnas(
        reproduced["data"],
        "retrain", "--search", search_id, "--top-k", "1", "--epochs", "1", "--batch-size", "16",
        "--json",
    )  # fmt: skip
    printed = last_json(done)
    assert printed["search_id"] == search_id
    first = printed["retrains"][0]
    assert {"arch", "params", *METRICS, "shared_score"} <= set(first)
    assert (first["source"], first["rank"], first["epochs"]) == ("enas", 0, 1)
    after = RetrainStore(store).list(search_id)
    # Rank 0 was retrained again (one epoch now) and replaced; the other rows stay.
    assert len(after) == len(before)
    assert after[0].arch == before[0].arch and after[0].epochs == 1
    assert after[0].id != before[0].id
    # New weights in a file of their own: rows of the other searches (the same architecture,
    # trained once for all of them) still point at the 2-epoch weights they were tested with.
    assert after[0].weights_path != before[0].weights_path
    assert Path(before[0].weights_path).is_file()


def test_export_runs_without_segnas_and_matches_segnas_own_network(
    reproduced: dict[str, Any], store: SearchStore, tmp_path: Path
) -> None:
    import torch

    from supernet.export import load_child

    search_id = search_ids(reproduced)[0]
    out = tmp_path / "export"
    printed = last_json(segnas(reproduced["data"], "export", "--search", search_id,
                               "--out", str(out), "--json"))  # fmt: skip
    card = printed["card"]
    best = RetrainStore(store).list(search_id)[0]
    assert card["arch"] == best.arch
    assert card["metrics"]["miou"] == pytest.approx(best.miou)
    assert card["source"]["search_id"] == search_id
    size = card["input_size"]
    image = torch.rand(
        1, card["in_channels"], size, size, generator=torch.Generator().manual_seed(0)
    )
    torch.save(image, tmp_path / "image.pt")
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        assert importlib.util.find_spec("segnas") is None, "segnas is importable"
        assert importlib.util.find_spec("supernet") is None, "supernet is importable"
        import json, torch
        card = json.load(open({str(out / "card.json")!r}))
        model = torch.jit.load({str(out)!r} + "/" + card["files"]["torchscript"])
        torch.save(model(torch.load({str(tmp_path / "image.pt")!r})), {str(tmp_path / "out.pt")!r})
        """
    )
    # -I -S: no site-packages (where segnas's editable install hooks in); torch's own folder only.
    site = str(Path(torch.__file__).resolve().parents[1])
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.append({site!r})\n{script}"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    scripted = torch.load(tmp_path / "out.pt")
    assert scripted.shape == (1, card["num_classes"], size, size)
    with torch.no_grad():
        own = load_child(out)(image)
    assert torch.allclose(scripted, own, atol=1e-5)


def test_report_of_stored_searches_and_the_refusals(
    reproduced: dict[str, Any], tmp_path: Path
) -> None:
    ids = search_ids(reproduced)
    printed = last_json(segnas(reproduced["data"], "report", "--searches", ",".join(ids[::-1]),
                               "--out", str(tmp_path / "again"), "--json"))  # fmt: skip
    assert [s["search_id"] for s in printed["report"]["searches"]] == ids[::-1]
    assert (tmp_path / "again" / "report.md").is_file()

    unknown = segnas(reproduced["data"], "report", "--searches", "f" * 32, "--out", str(tmp_path))
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == f"segnas: error: no search with id {'f' * 32!r}"
    no_rows = segnas(reproduced["data"], "export", "--search", "f" * 32, "--out", str(tmp_path))
    assert no_rows.returncode == 2 and "no search with id" in no_rows.stderr
    bad_arch = segnas(reproduced["data"], "export", "--search", ids[0], "--arch", "9 9 9",
                      "--out", str(tmp_path / "x"))  # fmt: skip
    assert bad_arch.returncode == 2 and "has no retrain of 9 9 9" in bad_arch.stderr


def test_retrain_refuses_a_search_that_has_not_succeeded(
    reproduced: dict[str, Any], store: SearchStore
) -> None:
    queued = store.create({"epochs": 1}).id
    done = segnas(reproduced["data"], "retrain", "--search", queued)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        f"segnas: error: search {queued} is queued: only a search that succeeded"
    )
