"""GET /searches/{id}/log: the driver's log, a bounded chunk at a time, whole lines, without
the server's data folder path."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from test_api import UNKNOWN_ID, assert_problem, submit

from service.logs import MAX_CHUNK


def data_dir(api: TestClient) -> Path:
    return api.app.state.settings.data_dir  # type: ignore[attr-defined,no-any-return]


def test_the_log_is_read_in_chunks_from_the_offset_of_the_last(api: TestClient) -> None:
    search_id = submit(api)["id"]
    url = f"/searches/{search_id}/log"
    assert api.get(url).json() == {"text": "", "offset": 0, "next": 0, "size": 0, "exists": False}
    log = data_dir(api) / "logs" / f"{search_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"--- attempt 1 ---\ncheckpoint in {data_dir(api)}/checkpoints/x\n")
    first = api.get(url).json()
    assert first["text"] == "--- attempt 1 ---\ncheckpoint in $SEGNAS_DATA_DIR/checkpoints/x\n"
    assert first["exists"] and first["next"] == first["size"] == log.stat().st_size
    with log.open("a") as f:
        f.write("epoch 1/2: shared loss 0.5\n")
    more = api.get(url, params={"offset": first["next"]}).json()
    assert more["text"] == "epoch 1/2: shared loss 0.5\n" and more["offset"] == first["next"]
    nothing = api.get(url, params={"offset": more["next"]}).json()
    assert nothing["text"] == "" and nothing["next"] == more["next"]


def test_a_long_log_comes_in_whole_lines_of_at_most_64_kib(api: TestClient) -> None:
    search_id = submit(api)["id"]
    log = data_dir(api) / "logs" / f"{search_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"line {i:06d} " + "x" * 90 + "\n" for i in range(2000)]  # ~200 KB
    log.write_text("".join(lines))
    url = f"/searches/{search_id}/log"
    tail = api.get(url).json()  # no offset: the end, from a line boundary
    assert len(tail["text"].encode()) <= MAX_CHUNK and tail["next"] == tail["size"]
    assert tail["text"].endswith(lines[-1]) and tail["text"].startswith("line ")
    read, offset = "", 0
    while True:  # from the start, chunk by chunk: every line once
        chunk = api.get(url, params={"offset": offset}).json()
        if not chunk["text"]:
            break
        assert chunk["text"].endswith("\n") and len(chunk["text"].encode()) <= MAX_CHUNK
        read, offset = read + chunk["text"], chunk["next"]
    assert read == "".join(lines)


def test_the_log_of_an_unknown_search_or_a_bad_offset(api: TestClient) -> None:
    assert_problem(api.get(f"/searches/{UNKNOWN_ID}/log"), 404, "no search")
    url = f"/searches/{submit(api)['id']}/log"
    for offset in ("-1", "x", str(2**63)):
        assert_problem(api.get(url, params={"offset": offset}), 422, "offset")
