"""The web pages in a real browser against a real ``segnas serve``.

Chromium is driven through Debian's ``chromedriver`` (``.ci/run`` installs both with apt-get);
without them the tests skip. The server runs with everything embedded (SQLite, Redis, a local
Ray) in the test's folder, so the page starts a real search and shows it to the end.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from served import Server, running_server, serve_env, wait_until

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SEARCH_FINISH_S = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``segnas serve`` on a free port with a fresh data folder, shared by the module
    (on loopback: without accounts, as ``make demo`` runs it)."""
    with running_server(tmp_path_factory.mktemp("segnas-data")) as running:
        yield running


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``segnas serve --auth required`` with the API only (searches stay queued)."""
    options = ("--auth", "required", "--dispatchers", "0")
    with running_server(tmp_path_factory.mktemp("segnas-data"), *options) as running:
        yield running


@pytest.fixture
def base_url(server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """The server's URL; the server's output is printed after a test that failed."""
    failed_before = request.session.testsfailed
    yield server.base
    if request.session.testsfailed > failed_before:
        server.print_output()  # shown with the failure, as this test's teardown output


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A headless Chromium. The flags keep it from reaching for the (closed) network."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is in the test extras: pip install -e .[test]")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1200",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def tiny_spec_json() -> str:
    return json.dumps(yaml.safe_load(TINY.read_text()))


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def enter_spec(driver, text: str) -> None:
    spec = by_id(driver, "spec-input")
    spec.clear()
    spec.send_keys(text)


def open_index(driver, base: str) -> None:
    driver.get(f"{base}/")
    wait_until("the form", lambda: by_id(driver, "submit").is_enabled(), 30)


def form_error(driver) -> str | None:
    """The start form's error, if it shows one (None too while the browser leaves the page)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", "#form-error")
        return found[0].text if found and found[0].is_displayed() and found[0].text else None
    except StaleElementReferenceException:
        return None


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ('{"epochs": 2,', "JSON"),
        ('{"epochs": -1}', "epochs"),
        ('{"epochs": 1, "colour": "blue"}', "colour"),
    ],
    ids=["not-json", "invalid-value", "unknown-field"],
)
def test_a_bad_spec_shows_the_problem_and_keeps_the_text(
    base_url: str, browser, spec: str, names: str
) -> None:
    open_index(browser, base_url)
    enter_spec(browser, spec)
    by_id(browser, "submit").click()

    message = wait_until("#form-error to show", lambda: form_error(browser), 30)
    assert names in message
    assert by_id(browser, "spec-input").get_attribute("value") == spec
    assert "/searches/" not in browser.current_url


def test_a_search_started_from_the_page_runs_to_its_result(base_url: str, browser) -> None:
    open_index(browser, base_url)
    enter_spec(browser, tiny_spec_json())
    by_id(browser, "name-input").send_keys("browser-test")
    by_id(browser, "submit").click()

    search_url = re.compile(rf"^{re.escape(base_url)}/searches/[0-9a-f]{{32}}$")
    wait_until("the search's page", lambda: search_url.match(browser.current_url), 30)

    def finished() -> str | None:
        status = by_id(browser, "status").text
        return status if status in ("succeeded", "failed", "cancelled") else None

    status = wait_until("#status to read a final status", finished, SEARCH_FINISH_S)
    error = by_id(browser, "error").text
    assert status == "succeeded", f"the search ended {status}: {error}"
    assert by_id(browser, "search-name").text == "browser-test"

    # The final refresh draws the result and the best architecture after the status turns.
    result = wait_until("#result to show", lambda: _shown_text(browser, "result"), 30)
    assert re.search(r"mIoU\s+[01]\.\d{3}", result), result
    chart = by_id(browser, "reward-chart")
    lines = chart.find_elements("css selector", "svg polyline, svg path")  # the curves
    assert lines, chart.get_attribute("innerHTML")[:500]
    layers = yaml.safe_load(TINY.read_text())["space"]["layers"]
    encoders = by_id(browser, "arch-diagram").find_elements("css selector", "svg .node-encoder")
    assert len(encoders) == layers
    assert re.fullmatch(rf"\d( \d){{{layers - 1}}}", by_id(browser, "arch-string").text)
    samples = by_id(browser, "samples").find_elements("css selector", "tr:not(.empty)")
    assert samples
    # Epochs count from 1 everywhere on the page (Progress too); derive rows have none.
    for row in samples:
        phase, epoch = (cell.text for cell in row.find_elements("css selector", "td")[:2])
        assert epoch == "\u2013" if phase == "derive" else 1 <= int(epoch) <= 2, (phase, epoch)
    # What the policy learned: per layer, the share of each cell (an epoch's samples).
    squares = by_id(browser, "cells-heatmap").find_elements("css selector", "rect.heat-cell")
    assert len(squares) == layers * 6
    shares = [float(q.get_attribute("data-share")) for q in squares]
    for layer in range(layers):
        assert abs(sum(shares[6 * layer : 6 * layer + 6]) - 1) < 1e-3
    assert by_id(browser, "cells-epoch-label").text == "2 of 2"  # the latest, tiny's 2 epochs
    # What to do next, as the commands that do it.
    commands = by_id(browser, "next-commands").text
    search_id = browser.current_url.rsplit("/", 1)[-1]
    assert f"segnas retrain --search {search_id} --top-k 3 --random 3" in commands
    assert f"segnas export --search {search_id} --out export-{search_id[:8]}" in commands
    # Which score the best reward is: the result's, on the whole validation split.
    assert by_id(browser, "best-reward").text.endswith("on the validation split")
    # The driver's log: a line per epoch, and the derive phase's pick.
    log = wait_until("the log", lambda: "derive: " in by_id(browser, "log").text and
                     by_id(browser, "log").text, 30)  # fmt: skip
    assert "epoch 1/2: shared loss" in log and "epoch 2/2: shared loss" in log, log[-2000:]
    # How long it took (nothing left to wait for), on its page and in the list.
    duration = re.compile(r"\d+ s|\d+ min \d+ s")
    assert by_id(browser, "p-elapsed-label").text == "took"
    took = by_id(browser, "p-elapsed").text
    assert duration.fullmatch(took), took
    assert by_id(browser, "p-remaining").text == "\u2013"
    open_index(browser, base_url)
    cells = wait_until("its row", lambda: row_cells(browser, search_id), 30)  # once listed
    assert cells[6] == took
    formats = browser.execute_script("return [0, 45.4, 192, 7500, -1].map(SEGNAS.formatDuration)")
    assert formats == ["0 s", "45 s", "3 min 12 s", "2 h 05 min", "\u2013"]
    # While it runs: elapsed, and what is left at the pace so far (none before 2 %).
    times = browser.execute_script(
        "const s = {status: 'running', started_at: '2026-01-01T00:00:00Z',"
        "           progress: {fraction: 0.25}};"
        "const t = SEGNAS.searchTimes(s, Date.parse('2026-01-01T00:01:00Z'));"
        "const early = SEGNAS.searchTimes({...s, progress: {fraction: 0.01}}, Date.now());"
        "return [t.elapsed, t.remaining, early.remaining];"
    )
    assert times == [60, 180, None]


def row_cells(driver, search_id: str) -> list[str] | None:
    """The texts of the list row of ``search_id``; None until it is drawn (or while a poll
    redraws it)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements("css selector", f'tr[data-id="{search_id}"] td')
        return [cell.text for cell in found] or None
    except StaleElementReferenceException:
        return None


def _shown_text(driver, element_id: str) -> str | None:
    element = by_id(driver, element_id)
    return element.text if element.is_displayed() and element.text else None


def test_an_evaluation_shows_on_the_index_and_its_own_page(server: Server, browser) -> None:
    from storage.evaluations import EvaluationStore
    from storage.searches import SearchStore

    summary = json.loads((ROOT / "docs/results/evaluate-independent/summary.json").read_text())
    store = SearchStore(f"sqlite:///{server.log_path.parent / 'segnas.db'}")
    try:
        evaluations = EvaluationStore(store)
        evaluation_id = "b" * 32
        evaluations.open(evaluation_id, spec={"name": "page-test"}, settings=summary["settings"])
        evaluations.finish(evaluation_id, "succeeded", summary=summary)
    finally:
        store.close()

    browser.get(f"{server.base}/")
    card = lambda: by_id(browser, "evaluations-card").is_displayed()  # noqa: E731
    wait_until("the evaluations card", card, 30)
    assert "page-test" in by_id(browser, "evaluations").text

    browser.get(f"{server.base}/evaluations/{evaluation_id}")

    def drawn() -> str | None:  # textContent: the headers' CSS changes their case on screen
        text = by_id(browser, "table-one").get_attribute("textContent") or ""
        return text if "enas_accuracy" in text else None

    table = wait_until("Table 1", drawn, 30)
    assert "param_matched" in table and "mean IoU" in table
    largest = summary["methods"]["largest"]["test_miou_mean"]
    assert f"{largest:.3f}" in table
    findings = by_id(browser, "findings").text
    assert "Kendall tau" in findings and "not met" in findings
    assert by_id(browser, "status").text == "succeeded"
    assert by_id(browser, "evaluation-name").text == "page-test"


def test_the_api_docs_render_offline_under_the_pages_csp(base_url: str, browser) -> None:
    browser.get(f"{base_url}/docs")

    def operations() -> int | None:
        count = len(browser.find_elements("css selector", ".opblock"))
        return count or None

    count = wait_until("Swagger UI's operations", operations, 30)
    assert count >= 10  # /searches, its sub-resources, /evaluations, /healthz
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []  # nothing refused by the CSP, nothing fetched from elsewhere


# Accounts: two users, each signed in in turn, each seeing their own searches only.


def make_user(server: Server, name: str) -> str:
    """``segnas user add`` and ``segnas token create --json`` on the server's database."""
    env = serve_env(server.log_path.parent)
    cli = [sys.executable, "-m", "segnas.cli"]
    subprocess.run([*cli, "user", "add", name], env=env, check=True, capture_output=True)
    made = subprocess.run(
        [*cli, "token", "create", "--user", name, "--json"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(made.stdout.strip().splitlines()[-1])["token"]


def sign_in(driver, token: str) -> None:
    wait_until("the sign-in form", lambda: _present(driver, "token-input"), 30)
    by_id(driver, "token-input").send_keys(token)
    by_id(driver, "signin-submit").click()
    wait_until("the signed-in user", lambda: _present(driver, "whoami"), 30)


def _present(driver, element_id: str) -> bool:
    from selenium.common.exceptions import NoSuchElementException

    try:
        return by_id(driver, element_id).is_displayed()
    except NoSuchElementException:
        return False


def listed_ids(driver) -> set[str]:
    links = by_id(driver, "searches").find_elements("css selector", "td.mono a")
    return {link.get_attribute("title") for link in links}


def test_two_users_sign_in_and_see_only_their_own_searches(auth_server: Server, browser) -> None:
    tokens = {name: make_user(auth_server, name) for name in ("ada", "bob")}
    ids = {}
    for name, token in tokens.items():
        answer = httpx.post(
            f"{auth_server.base}/searches", json=yaml.safe_load(TINY.read_text()),
            headers={"Authorization": f"Bearer {token}", "X-Requested-With": "t"}, timeout=30,
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        ids[name] = answer.json()["id"]
    assert httpx.get(f"{auth_server.base}/searches", timeout=30).status_code == 401

    browser.get(f"{auth_server.base}/")
    sign_in(browser, tokens["ada"])
    assert "signed in as ada" in by_id(browser, "whoami").text
    wait_until("ada's search in the list", lambda: ids["ada"] in listed_ids(browser), 30)
    assert ids["bob"] not in listed_ids(browser)
    [row] = by_id(browser, "searches").find_elements("css selector", "tr:not(.empty)")
    assert row.find_elements("css selector", "td")[2].text == "ada"  # the owner column

    # Bob's search is not ada's to see: its page says there is no such search.
    browser.get(f"{auth_server.base}/searches/{ids['bob']}")
    wait_until("the not-found state", lambda: by_id(browser, "status").text == "not found", 30)
    browser.get(f"{auth_server.base}/searches/{ids['ada']}")
    wait_until("ada's search", lambda: by_id(browser, "status").text == "queued", 30)

    browser.get(f"{auth_server.base}/")
    wait_until("the sign-out button", lambda: _present(browser, "signout"), 30)
    by_id(browser, "signout").click()
    sign_in(browser, tokens["bob"])
    wait_until("bob's search in the list", lambda: ids["bob"] in listed_ids(browser), 30)
    assert ids["ada"] not in listed_ids(browser)

    # A wrong token is refused on the form, and nothing is stored.
    by_id(browser, "signout").click()
    wait_until("the sign-in form", lambda: _present(browser, "token-input"), 30)
    by_id(browser, "token-input").send_keys("segnas_not-a-real-token-at-all")
    by_id(browser, "signin-submit").click()
    wait_until("the refusal", lambda: by_id(browser, "signin-error").text, 30)
    assert "unknown or revoked" in by_id(browser, "signin-error").text


# The page's polls of one search fail, as if the network dropped them, until
# ``window.__pollsBlocked`` is false; its other requests (the cancel) go through.
BLOCK_POLLS = """
const path = arguments[0], realFetch = window.fetch.bind(window);
window.__pollsBlocked = true;
window.fetch = (url, init) => {
  const get = !init || !init.method || init.method === "GET";
  if (window.__pollsBlocked && get && new URL(url, location.href).pathname === path) {
    return Promise.reject(new TypeError("blocked by the test"));
  }
  return realFetch(url, init);
};
"""


def no_sideways_scroll(driver) -> bool:
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def test_cancel_asks_first_and_a_search_that_ended_meanwhile_is_not_a_failure(
    auth_server: Server, browser
) -> None:
    token = make_user(auth_server, "cleo")
    answer = httpx.post(
        f"{auth_server.base}/searches", json=yaml.safe_load(TINY.read_text()),
        headers={"Authorization": f"Bearer {token}", "X-Requested-With": "t"}, timeout=30,
    )  # fmt: skip
    search_id = answer.json()["id"]
    page = f"{auth_server.base}/searches/{search_id}"
    browser.get(f"{auth_server.base}/")
    sign_in(browser, token)
    browser.get(page)
    wait_until("the cancel button", lambda: _present(browser, "cancel"), 30)
    assert by_id(browser, "status").text == "queued"
    browser.set_window_size(500, 900)  # narrow, the button shown: nothing scrolls sideways
    assert no_sideways_scroll(browser)
    browser.set_window_size(1280, 1200)

    # Asked first: no, and nothing happens.
    browser.execute_script("window.confirm = () => false;")
    by_id(browser, "cancel").click()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(page, headers=headers, timeout=30).json()["status"] == "queued"

    # The page stops seeing changes (its polls blocked), the search ends meanwhile (cancelled
    # from elsewhere), then the click: a 409, told as such, not as a failure.
    browser.execute_script(BLOCK_POLLS, f"/searches/{search_id}")
    ended = httpx.post(f"{page}/cancel", headers={**headers, "X-Requested-With": "t"}, timeout=30)
    assert ended.json()["status"] == "cancelled"
    browser.execute_script("window.confirm = () => true;")
    by_id(browser, "cancel").click()
    note = wait_until("the note", lambda: by_id(browser, "cancel-note").text, 30)
    assert note.startswith("Nothing to cancel: ") and "already finished (cancelled)" in note
    assert not by_id(browser, "cancel").is_displayed()
    assert "Cancel failed" not in by_id(browser, "connection").text
    browser.execute_script("window.__pollsBlocked = false;")
    wait_until("the badge", lambda: by_id(browser, "status").text == "cancelled", 30)

    # Its spec is on its page, and "New search from it" puts it in the start form.
    spec = httpx.get(page, headers=headers, timeout=30).json()["spec"]
    assert json.loads(by_id(browser, "spec").text) == spec
    by_id(browser, "clone").click()
    wait_until("the start form", lambda: by_id(browser, "submit").is_enabled(), 30)
    assert by_id(browser, "name-input").get_attribute("value") == f"{spec['name']} (copy)"
    cloned = json.loads(by_id(browser, "spec-input").get_attribute("value"))
    assert cloned == {k: v for k, v in spec.items() if k != "name"}
    browser.refresh()  # taken once: a reload shows the example again
    wait_until("the start form", lambda: by_id(browser, "submit").is_enabled(), 30)
    assert json.loads(by_id(browser, "spec-input").get_attribute("value")) != cloned

    # At 500 px the page does not scroll sideways.
    browser.set_window_size(500, 900)
    browser.get(page)
    wait_until("the page", lambda: by_id(browser, "status").text == "cancelled", 30)
    assert no_sideways_scroll(browser)
    browser.get(f"{auth_server.base}/")
    wait_until("the list", lambda: search_id in listed_ids(browser), 30)
    assert no_sideways_scroll(browser)


def row_texts(driver) -> list[str] | None:
    """The list's rows as text (None while a poll is redrawing them)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = by_id(driver, "searches").find_elements("css selector", "tr:not(.empty)")
        return [row.text for row in found]
    except StaleElementReferenceException:
        return None


def test_the_list_filters_by_name_and_status_pages_and_shows_errors(
    auth_server: Server, browser
) -> None:
    from storage.searches import SearchStore

    admin = (auth_server.log_path.parent / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin}", "X-Requested-With": "t"}
    body = yaml.safe_load(TINY.read_text())
    ids = {}
    for name in [f"bulk-{i:02d}" for i in range(22)] + ["special-one"]:
        answer = httpx.post(
            f"{auth_server.base}/searches", json={**body, "name": name}, headers=headers, timeout=30
        )
        ids[name] = answer.json()["id"]
    store = SearchStore(f"sqlite:///{auth_server.log_path.parent / 'segnas.db'}")
    try:
        store.mark_finished(ids["bulk-03"], "failed", error="ReplicaError: out of memory")
    finally:
        store.close()

    browser.get(f"{auth_server.base}/")
    sign_in(browser, admin)
    by_id(browser, "filter-q").send_keys("bulk-")

    def names() -> list[str] | None:
        texts = row_texts(browser)
        return (
            None
            if texts is None
            else [re.search(r"bulk-\d\d|special-one", t).group() for t in texts]
        )

    wait_until("a page of 20", lambda: names() == [f"bulk-{i:02d}" for i in range(21, 1, -1)], 30)
    assert by_id(browser, "page-older").is_displayed()
    assert not by_id(browser, "page-newer").is_displayed()
    by_id(browser, "page-older").click()
    wait_until("the older page", lambda: names() == ["bulk-01", "bulk-00"], 30)
    assert not by_id(browser, "page-older").is_displayed()
    by_id(browser, "page-newer").click()
    wait_until("the first page again", lambda: (names() or [""])[0] == "bulk-21", 30)

    by_id(browser, "filter-q").clear()
    by_id(browser, "filter-q").send_keys("SPECIAL")
    wait_until("the one match", lambda: names() == ["special-one"], 30)

    from selenium.webdriver.support.ui import Select

    by_id(browser, "filter-q").clear()
    Select(by_id(browser, "filter-status")).select_by_visible_text("failed")
    wait_until("the failed one", lambda: names() == ["bulk-03"], 30)
    error = browser.find_element("css selector", "#searches .row-error")
    assert error.text == "ReplicaError: out of memory"
    by_id(browser, "filter-q").send_keys("nothing-like-it")
    wait_until("no match", lambda: "No search matches." in by_id(browser, "searches").text, 30)


def sample_rows(driver) -> list[dict[str, str]] | None:
    """The samples table's rows: each cell by its column (None while it is being redrawn)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        rows = by_id(driver, "samples").find_elements("css selector", "tr:not(.empty)")
        out = []
        for row in rows:
            cells = row.find_elements("css selector", "td")
            named = {c.get_attribute("data-metric"): c.text for c in cells[4:]}
            count = row.find_elements("css selector", "td[data-count]")
            out.append({"arch": cells[3].text, "count": count[0].text if count else "", **named})
        return out
    except StaleElementReferenceException:
        return None


def test_the_samples_table_sorts_filters_folds_and_pages(auth_server: Server, browser) -> None:
    from selenium.webdriver.support.ui import Select

    from storage.searches import SampleRecord, SearchStore

    admin = (auth_server.log_path.parent / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin}", "X-Requested-With": "t"}
    body = {**yaml.safe_load(TINY.read_text()), "name": "samples-table"}
    search_id = httpx.post(
        f"{auth_server.base}/searches", json=body, headers=headers, timeout=30
    ).json()["id"]
    layers = body["space"]["layers"]

    def scored(i: int, phase: str, arch: list[int], reward: float) -> SampleRecord:
        return SampleRecord(
            phase=phase, epoch=0 if phase == "controller" else 1, step=i // 5, index=i % 5,
            arch=arch, reward=reward, accuracy=0.5, mean_precision=0.5, mean_recall=0.5,
            miou=reward, miou_plus=reward, policy_version=0, params=10_000 + 100 * i,
        )  # fmt: skip

    # 25 controller samples, reward i / 100 (i = 0..24); the derive phase scored `1 1 ...`
    # three times and `2 2 ...` once.
    rows = [scored(i, "controller", [i % 3] * layers, i / 100) for i in range(25)]
    rows += [scored(i, "derive", [1] * layers, 0.5) for i in range(3)]
    rows.append(scored(3, "derive", [2] * layers, 0.4))
    store = SearchStore(f"sqlite:///{auth_server.log_path.parent / 'segnas.db'}")
    try:
        store.add_samples(search_id, rows)
    finally:
        store.close()

    browser.get(f"{auth_server.base}/")
    sign_in(browser, admin)
    browser.get(f"{auth_server.base}/searches/{search_id}")

    def rewards() -> list[str] | None:
        found = sample_rows(browser)
        return None if found is None else [r["reward"] for r in found]

    # Newest first, 20 to a page: the derive phase's four, then controller rewards 0.24 down.
    newest = ["0.400", "0.500", "0.500", "0.500", *[f"{i / 100:.3f}" for i in range(24, 8, -1)]]
    wait_until("the newest page", lambda: rewards() == newest, 30)
    # Reward against size: a dot per sample (each with its tooltip), and over them the Pareto
    # front of all samples: here one point, the derive phase's `1 1 1` at 10,000 parameters,
    # which no larger sample beats (the controller's best is 0.24).
    dots = "#size-chart circle.dot-sample title, #size-chart circle.dot-derive title"
    wait_until("the size chart", lambda: len(browser.find_elements("css selector", dots)) == 29, 30)
    front = browser.find_elements("css selector", "#size-chart circle.dot-front title")
    assert [t.get_attribute("textContent") for t in front] == [
        f"on the front: {' '.join(['1'] * layers)}, reward 0.500, 10,000 parameters (derive)"
    ]
    by_id(browser, "samples-next").click()
    wait_until(
        "the second page", lambda: rewards() == [f"{i / 100:.3f}" for i in range(8, -1, -1)], 30
    )
    assert by_id(browser, "samples-next").get_attribute("disabled") is not None
    by_id(browser, "samples-first").click()
    wait_until("the first page again", lambda: rewards() == newest, 30)

    # By reward: largest first, then smallest first.
    header = browser.find_element("css selector", '#samples-table th[data-sort="reward"] button')
    header.click()
    wait_until("sorted by reward", lambda: (rewards() or [""])[:4] == ["0.500"] * 3 + ["0.400"], 30)
    assert (
        browser.find_element("css selector", '#samples-table th[data-sort="reward"]').get_attribute(
            "aria-sort"
        )
        == "descending"
    )
    header.click()
    wait_until("smallest first", lambda: (rewards() or [""])[:3] == ["0.000", "0.010", "0.020"], 30)

    # The derive phase, folded: each architecture once, with its count.
    Select(by_id(browser, "f-phase")).select_by_value("derive")
    by_id(browser, "f-fold").click()
    one, two = " ".join(["1"] * layers), " ".join(["2"] * layers)
    wait_until(
        "the folded derive phase",
        lambda: (
            [(r["arch"], r["count"]) for r in sample_rows(browser) or []]
            == [(two, "1"), (one, "3")]
        ),
        30,
    )
    # A cell filter: the controller samples with cell 2 at the first layer.
    Select(by_id(browser, "f-phase")).select_by_value("controller")
    Select(by_id(browser, "f-cell")).select_by_value("2")
    Select(by_id(browser, "f-layer")).select_by_value("0")
    expected = [f"{i / 100:.3f}" for i in range(25) if i % 3 == 2]  # still smallest first
    wait_until("cell 2 at layer 1", lambda: rewards() == expected, 30)


def tick(driver, css: str) -> bool:
    """Tick the checkbox ``css`` names; False when a poll redrew it meanwhile (try again)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        box = driver.find_element("css selector", css)
        if not box.is_selected():
            box.click()
        return box.is_selected()
    except StaleElementReferenceException:
        return False


def test_two_searches_picked_in_the_list_are_compared_side_by_side(
    auth_server: Server, browser
) -> None:
    from storage.searches import SampleRecord, SearchStore

    admin = (auth_server.log_path.parent / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin}", "X-Requested-With": "t"}
    body = yaml.safe_load(TINY.read_text())
    ids = []
    for name, reward in [("cmp-miou", "miou"), ("cmp-accuracy", "accuracy")]:
        answer = httpx.post(
            f"{auth_server.base}/searches", json={**body, "name": name, "reward": reward},
            headers=headers, timeout=30,
        )  # fmt: skip
        ids.append(answer.json()["id"])
    store = SearchStore(f"sqlite:///{auth_server.log_path.parent / 'segnas.db'}")
    try:
        for n, search_id in enumerate(ids):  # 4 and 6 controller steps of 2 samples
            store.add_samples(search_id, [
                SampleRecord(
                    phase="controller", epoch=0, step=step, index=i, arch=[0, 1, 2],
                    reward=0.1 * step + 0.05 * n, accuracy=0.9, mean_precision=0.5,
                    mean_recall=0.5, miou=0.3, miou_plus=0.4, policy_version=step,
                )
                for step in range(4 + 2 * n) for i in range(2)
            ])  # fmt: skip
    finally:
        store.close()

    browser.get(f"{auth_server.base}/")
    sign_in(browser, admin)
    by_id(browser, "filter-q").send_keys("cmp-")
    wait_until(
        "both rows", lambda: len(browser.find_elements("css selector", "[data-pick]")) == 2, 30
    )
    assert by_id(browser, "compare").get_attribute("disabled") is not None
    for search_id in ids:
        wait_until("its box ticked", lambda: tick(browser, f'[data-pick="{search_id}"]'), 30)  # noqa: B023
    by_id(browser, "compare").click()
    wait_until("the compare page", lambda: "/compare?ids=" in browser.current_url, 30)
    rows = lambda: browser.find_elements("css selector", "#compare-rows tr[data-id]")  # noqa: E731
    wait_until("both searches", lambda: len(rows()) == 2, 30)
    assert [r.find_elements("css selector", "td")[3].text for r in rows()] == ["miou", "accuracy"]
    curves = browser.find_elements("css selector", "#compare-chart polyline[data-series]")
    assert [c.get_attribute("data-series") for c in curves] == ["cmp-miou", "cmp-accuracy"]
    assert [len(c.get_attribute("points").split()) for c in curves] == [4, 6]
    diff = {
        r.find_elements("css selector", "td")[0].text: [
            c.text for c in r.find_elements("css selector", "td")[1:]
        ]
        for r in browser.find_elements("css selector", "#diff-rows tr")
    }
    assert diff["reward"] == ['"miou"', '"accuracy"'] and diff["name"] == [
        '"cmp-miou"',
        '"cmp-accuracy"',
    ]
    assert "space.layers" not in diff  # the same in both: not shown


def test_the_start_form_takes_yaml_and_offers_the_configs_as_presets(
    auth_server: Server, browser
) -> None:
    from selenium.webdriver.support.ui import Select

    admin = (auth_server.log_path.parent / "admin-token").read_text().strip()
    browser.get(f"{auth_server.base}/")
    sign_in(browser, admin)
    presets = lambda: by_id(browser, "preset").find_elements("css selector", "option")  # noqa: E731
    wait_until("the presets", lambda: len(presets()) > 1, 30)
    assert "configs/tiny.yaml" in [o.text for o in presets()]
    Select(by_id(browser, "preset")).select_by_value("tiny")
    assert by_id(browser, "spec-input").get_attribute("value") == TINY.read_text()
    assert by_id(browser, "preset-note").text  # the config's first comment line

    # YAML the server refuses to read: the reason, in the form.
    enter_spec(browser, "a: &x [1, 2]\nb: *x\n")
    by_id(browser, "submit").click()
    error = wait_until("the error", lambda: form_error(browser), 30)
    assert "aliases" in error

    # The preset as it is: a search of it, with its page.
    Select(by_id(browser, "preset")).select_by_value("")  # the example, then tiny again
    Select(by_id(browser, "preset")).select_by_value("tiny")
    by_id(browser, "name-input").send_keys("from-yaml")
    by_id(browser, "submit").click()
    wait_until("its page", lambda: "/searches/" in browser.current_url or form_error(browser), 30)
    assert "/searches/" in browser.current_url, form_error(browser)
    wait_until("its spec", lambda: by_id(browser, "spec").text.startswith("{"), 30)
    spec = json.loads(by_id(browser, "spec").text)
    assert spec["name"] == "from-yaml"
    assert spec["space"]["layers"] == yaml.safe_load(TINY.read_text())["space"]["layers"]


def test_a_twelve_layer_drawing_scrolls_in_its_card_at_1400_px(
    auth_server: Server, browser
) -> None:
    from storage.searches import SearchStore

    admin = (auth_server.log_path.parent / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin}", "X-Requested-With": "t"}
    body = {**yaml.safe_load(TINY.read_text()), "name": "twelve-layers"}
    body["space"] = {**body["space"], "layers": 12}
    created = httpx.post(f"{auth_server.base}/searches", json=body, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    search_id = created.json()["id"]
    store = SearchStore(f"sqlite:///{auth_server.log_path.parent / 'segnas.db'}")
    try:  # the best so far, as a running search's driver reports it
        progress = {"epoch": 0, "epochs": 2, "phase": "controller", "step": 1, "steps": 3,
                    "samples": 4}  # fmt: skip
        store.update_progress(
            search_id, progress, best_arch=[0, 5, 5, 2, 2, 2, 4, 5, 3, 5, 3, 4], best_reward=0.5
        )
    finally:
        store.close()
    browser.set_window_size(1400, 1000)
    browser.get(f"{auth_server.base}/")
    sign_in(browser, admin)
    browser.get(f"{auth_server.base}/searches/{search_id}")
    drawn = "#arch-diagram .diagram-scroll svg"
    wait_until("the drawing", lambda: browser.find_elements("css selector", drawn), 30)
    sizes = browser.execute_script(
        """const box = document.querySelector('#arch-diagram .diagram-scroll');
        const svg = box.querySelector('svg');
        return [box.clientWidth, box.scrollWidth, svg.getBoundingClientRect().width,
                svg.querySelectorAll('rect.box').length, getComputedStyle(box).overflowX];"""
    )
    box_width, scroll_width, svg_width, boxes, overflow = sizes
    assert boxes == 2 * 12 + 2  # every layer of encoder and decoder, the input and the output
    # Wider than its card: it scrolls there, whole (nothing cut off), and the page does not.
    assert svg_width > box_width and scroll_width >= svg_width and overflow in ("auto", "scroll")
    assert no_sideways_scroll(browser)


def test_a_finished_search_draws_its_retrained_networks_front(auth_server: Server, browser) -> None:
    """The Retrained card: test mIoU against parameters of every retrained network, and their
    own Pareto front (the issue asks for the front of the retrained networks beside the
    samples' one)."""
    from storage.retrains import RetrainRecord, RetrainStore
    from storage.searches import ResultRecord, SearchStore

    admin = (auth_server.log_path.parent / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {admin}", "X-Requested-With": "t"}
    body = {**yaml.safe_load(TINY.read_text()), "name": "retrained-front"}
    search_id = httpx.post(
        f"{auth_server.base}/searches", json=body, headers=headers, timeout=30
    ).json()["id"]

    def trained(source: str, rank: int, arch: list[int], params: int, miou: float):
        return RetrainRecord(
            source=source, rank=rank, arch=arch, shared_score=None, status="succeeded",
            epochs=1, params=params, accuracy=0.9, mean_precision=0.5, mean_recall=0.5,
            miou=miou, miou_plus=0.8, val=None, config={}, weights_path=None, error=None,
            seconds=1.0,
        )  # fmt: skip

    # On the front: the 2,000-parameter network (0.30), then the 6,000 one (0.55); the
    # 4,000-parameter random baseline (0.25) is beaten by the smaller one.
    retrained = [
        trained("enas", 0, [0, 0, 0], 6_000, 0.55),
        trained("pareto", 0, [4, 4, 4], 2_000, 0.30),
        trained("random", 0, [1, 2, 3], 4_000, 0.25),
    ]
    store = SearchStore(f"sqlite:///{auth_server.log_path.parent / 'segnas.db'}")
    try:
        store.mark_running(search_id)
        store.set_result(
            search_id, ResultRecord(arch=[0, 0, 0], reward=0.5, metrics={}, params=6_000)
        )
        store.mark_finished(search_id, "succeeded")
        RetrainStore(store).save(search_id, retrained)
    finally:
        store.close()

    browser.get(f"{auth_server.base}/")
    sign_in(browser, admin)
    browser.get(f"{auth_server.base}/searches/{search_id}")
    dots = "#retrain-chart circle.dot-sample title, #retrain-chart circle.dot-derive title"
    wait_until(
        "the retrained chart", lambda: len(browser.find_elements("css selector", dots)) == 3, 30
    )
    baselines = browser.find_elements("css selector", "#retrain-chart circle.dot-derive title")
    assert [t.get_attribute("textContent") for t in baselines] == [
        "1 2 3: test mIoU 0.250, 4,000 parameters (random)"
    ]
    front = browser.find_elements("css selector", "#retrain-chart circle.dot-front title")
    assert [t.get_attribute("textContent") for t in front] == [
        "on the front: 4 4 4, test mIoU 0.300, 2,000 parameters (pareto)",
        "on the front: 0 0 0, test mIoU 0.550, 6,000 parameters (enas)",
    ]
    axis = browser.find_elements("css selector", "#retrain-chart text")
    assert "test mIoU" in [t.get_attribute("textContent") for t in axis]
