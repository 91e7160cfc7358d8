"""The triage page in a real browser: Airflow's api-server on loopback with the project's
plugin, SimpleAuthManager (a users file, as the local setup), a history store in SQLite
filled with known nights, and headless Chromium (Debian's) driven over CDP. It logs in on
Airflow's own login page, opens the page from Airflow's menu, checks what the page shows
against the store, follows links, and keeps screenshots (also in .local/screenshots/)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from include.nightly_ci.history import views
from include.nightly_ci.history.records import (
    FLAKY,
    FROM_CONFIG,
    REGRESSION,
    STILL_FAILING,
    CaseRecord,
    NightRecord,
    QuarantineEntry,
    SuiteRecord,
)
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.names import tag_safe_run_id
from include.nightly_ci.ui.pages import STATES
from tests.browser import Browser
from tests.services import ROOT, free_port, wait_for, write_config

pytestmark = [pytest.mark.integration]
DAG = "nightly_ci"
CELLS = ("vllm_amd64", "sglang_arm64", "trtllm_amd64")
BROKEN, FIXED, FLAKY_T = (
    "tests/test_core.py::test_broken",
    "tests/test_io.py::test_fixed",
    "tests/test_gpu.py::test_flaky",
)
MUTED, ODD = "tests/test_gpu.py::test_muted", "tests/test_x.py::test_param[<script>alert(1)</script>]"
SHOTS = ROOT / ".local" / "screenshots"


def run_id(n: int) -> str:
    return f"scheduled__2026-11-0{n}T02:00:00+00:00"


def commit(n: int) -> str:
    return f"{n}" * 7 + "abcdef0123456789abcdef0123456789a"


def fill(store: HistoryStore, base_url: str) -> None:
    """Four nights. BROKEN breaks on night 3 in vllm_amd64; FIXED fails on nights 1-2 in
    sglang_arm64 and passes from night 3; FLAKY_T is flaky on night 4 in trtllm_amd64; MUTED
    fails, quarantined, on night 4 in sglang_arm64; trtllm_amd64 did not run on night 2."""
    for n in (1, 2, 3, 4):
        outcomes = {
            "vllm_amd64": {BROKEN: "passed" if n < 3 else "failed", ODD: "passed"},
            "sglang_arm64": {FIXED: "failed" if n < 3 else "passed", MUTED: "failed" if n == 4 else "passed"},
            "trtllm_amd64": {FLAKY_T: "failed" if n == 4 else "passed"} if n != 2 else None,
        }
        verdicts = {BROKEN: REGRESSION if n == 3 else STILL_FAILING, FIXED: STILL_FAILING, FLAKY_T: FLAKY}
        suites, cases = [], []
        for cell, tests in outcomes.items():
            failed = tests is not None and any(o == "failed" for o in tests.values())
            status = "upstream_failed" if tests is None else "failed" if failed else "success"
            suites.append(SuiteRecord(cell, "unit", f"{cell}.tests.unit", status, None if tests is None else
                                      "failed" if failed else "passed", "upstream" if tests is None else None,
                                      f"127.0.0.1:5000/nightly/{cell}@sha256:{n:064x}", f"gpu-{n}", 1,
                                      None if tests is None else len(tests), 30.0))  # fmt: skip
            for test, outcome in (tests or {}).items():
                bad = outcome == "failed"
                cases.append(CaseRecord(cell, "unit", test, outcome, 0.5, verdicts.get(test) if bad and test != MUTED
                                        else None, ("failed", "passed") if bad and test == FLAKY_T else (),
                                        test == MUTED))  # fmt: skip
        url = f"{base_url}/dags/{DAG}/runs/{run_id(n)}"
        night = NightRecord(DAG, run_id(n), f"2026-11-0{n}T02:00:00+00:00", "nightly", commit(n), url, False)
        store.write_night(night, suites, cases)
    entry = QuarantineEntry("tests/test_gpu.py::test_muted*", "@alice", "<b>GPU</b> flake", "javascript:alert(1)",
                            None, FROM_CONFIG, "2026-11-04T02:00:00+00:00")  # fmt: skip
    store.add_quarantine(DAG, [entry])


def write_artifacts(base: Path) -> None:
    folder = base / tag_safe_run_id(run_id(4)) / "vllm_amd64" / "test-unit"
    folder.mkdir(parents=True)
    (folder / "pytest_test_report.xml").write_text(
        '<testsuite name="unit" tests="2" failures="1"><testcase classname="tests/test_core.py" name="test_broken">'
        "<failure>assert 1 == 2</failure></testcase></testsuite>"
    )
    (folder / "output.log").write_text("<html>not html: FAILED tests/test_core.py::test_broken\n")


def history_store(kind: str, root: Path, request) -> tuple[HistoryStore, dict]:
    """The history store on KIND, and its Airflow connection (the config's history.conn_id)."""
    if kind == "sqlite":
        conn = {"conn_type": "sqlite", "host": str(root / "history.db")}
        return HistoryStore(f"sqlite:///{root / 'history.db'}"), conn
    server = request.getfixturevalue("postgres")
    name = f"triage_history_{secrets.token_hex(4)}"  # a database of its own for each module using this fixture
    url = server.createdb(name)
    conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": "airflow",
            "password": server.password, "schema": name}  # fmt: skip
    return HistoryStore(url), conn


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def airflow(request, tmp_path_factory):
    """api-server on 127.0.0.1 with the plugin, its SQLite metadata DB, the history store (on
    SQLite, then on Postgres) and an artifact folder; yields (base URL, password, store, kind)."""
    root = tmp_path_factory.mktemp("triage")
    port, password = free_port(), secrets.token_urlsafe(12)
    base_url = f"http://127.0.0.1:{port}"
    history, conn = history_store(request.param, root, request)
    history.migrate()
    fill(history, base_url)
    write_artifacts(root / "artifacts")
    config = write_config(root / "nightly_ci.yaml", f"artifacts:\n  base: {root / 'artifacts'}\n")
    (root / "passwords.json").write_text(json.dumps({"admin": password}))
    (root / "dags").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(root / "home"),
        "PYTHONPATH": str(ROOT),
        "NIGHTLY_CI_CONFIG": str(config),
        "AIRFLOW_CONN_NIGHTLY_CI_HISTORY": json.dumps(conn),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'airflow.db'}",
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(24),
    }
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    log = (root / "api-server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, (root / "api-server.log").read_text()[-4000:]
        try:
            return requests.get(f"{base_url}/api/v2/monitor/health", timeout=2).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 120, "the api-server")
        yield base_url, password, history, request.param
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        history.close()
        print((root / "api-server.log").read_text()[-3000:])


def test_the_page_refuses_a_request_without_login(airflow):
    base_url, *_ = airflow
    page = f"{base_url}/nightly-ci/"
    assert requests.get(page, timeout=10).status_code == 401  # a script: 401
    browser_like = requests.get(page, headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert browser_like.status_code == 303  # a browser: to Airflow's login, and back here after it
    assert browser_like.headers["location"].startswith("/auth/login?next=")
    forged = requests.get(page, cookies={"_token": "not-a-jwt"}, timeout=10)
    assert forged.status_code in (401, 403) and "matrix" not in forged.text


def shot(browser: Browser, tmp_path: Path, name: str) -> Path:
    path = browser.screenshot(tmp_path / f"triage-{tmp_path.name}-{name}.png")  # tmp_path: the store kind
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)
    return path


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_logged_in_the_page_shows_the_store(airflow, tmp_path):
    base_url, password, store, kind = airflow
    tmp_path = tmp_path / kind
    tmp_path.mkdir()
    with Browser() as b:
        # Not logged in, the page sends the browser to Airflow's own login page.
        b.goto(f"{base_url}/nightly-ci/")
        b.wait("location.pathname.startsWith('/auth/login')", what="Airflow's login page")
        try:
            b.wait("!!document.querySelector('input[type=password]')", what="the login form")
        finally:
            shot(b, tmp_path, "0-login")
        b.type_into("input:not([type=password])", "admin")
        b.type_into("input[type=password]", password)
        b.click("document.querySelector('button[type=submit]')", "the login button")
        # Back where it came from: the matrix.
        b.wait("location.pathname === '/nightly-ci/' && !!document.querySelector('#matrix')", 60, "the matrix")
        assert "_token" in b.cookies()

        # Airflow's menu has the entry: Browse -> Nightly CI triage, the page in Airflow's frame.
        b.goto(f"{base_url}/")
        b.click("[...document.querySelectorAll('button')].find(x => x.textContent.trim() === 'Browse')", "Browse")
        b.click("[...document.querySelectorAll('a')].find(x => x.textContent.trim() === 'Nightly CI triage')",
                "the menu entry")  # fmt: skip
        # Airflow 3.3 puts the frame's own path after the route once the frame has loaded
        # (deep links into a plugin's page): either is the plugin's route.
        b.wait("['/plugin/nightly-ci', '/plugin/nightly-ci/nightly-ci/'].includes(location.pathname)",
               what="the plugin's route")  # fmt: skip
        framed = "document.querySelector('iframe') && document.querySelector('iframe').contentDocument"
        b.wait(f"!!({framed} && {framed}.querySelector('#matrix'))", 30, "the matrix in Airflow's frame")
        shot(b, tmp_path, "1-menu-frame")

        check_matrix(b, base_url, store, tmp_path)
        check_night(b, base_url, tmp_path)
        check_test(b, base_url, tmp_path)
        check_suite_and_files(b, base_url, tmp_path)
        check_missing(b, base_url)


def check_matrix(b: Browser, base_url: str, store: HistoryStore, tmp_path: Path) -> None:
    b.goto(f"{base_url}/nightly-ci/")
    shot(b, tmp_path, "2-matrix")
    cells = b.eval("""[...document.querySelectorAll('#matrix tr')].slice(1).map(tr => ({
        cell: tr.querySelector('th').firstChild.textContent,
        squares: [...tr.querySelectorAll('td.sq')].map(td => ({state: td.classList[1],
            colour: getComputedStyle(td).backgroundColor, href: td.querySelector('a').getAttribute('href'),
            target: td.querySelector('a').target}))}))""")
    expected = views.matrix(store, DAG, "nightly", 14)
    assert [c["cell"] for c in cells] == list(expected.cells) == list(CELLS)
    for row in cells:
        for night, square in zip(expected.nights, row["squares"], strict=True):
            want = expected.square(row["cell"], night.run_id)
            assert square["state"] == want.state, (row["cell"], night.run_id)
            assert square["colour"] == rgb(STATES[want.state][0])
            assert square["href"] == f"{base_url}/dags/{DAG}/runs/{night.run_id}" and square["target"] == "_top"
    by_cell = {c["cell"]: [s["state"] for s in c["squares"]] for c in cells}  # nights 4, 3, 2, 1
    assert by_cell == {
        "vllm_amd64": [views.FAILED, views.FAILED, views.PASSED, views.PASSED],
        "sglang_arm64": [views.FLAKY, views.PASSED, views.FAILED, views.FAILED],
        "trtllm_amd64": [views.FLAKY, views.PASSED, views.NOT_RUN, views.PASSED],
    }


def table_tests(b: Browser, table_id: str) -> list[str]:
    return b.eval(f"[...document.querySelectorAll('#{table_id} tr')].slice(1).map(tr => tr.cells[2].textContent)")


def check_night(b: Browser, base_url: str, tmp_path: Path) -> None:
    # From the matrix, the latest night's header opens its lists.
    b.click("document.querySelector('#matrix tr th:nth-child(2) a')", "the latest night's header")
    b.wait("location.pathname === '/nightly-ci/night' && !!document.querySelector('#still-failing')")
    shot(b, tmp_path, "3-night")
    assert table_tests(b, "still-failing") == [BROKEN]
    assert table_tests(b, "flaky") == [FLAKY_T]
    assert table_tests(b, "quarantined") == [MUTED]
    assert b.eval("document.querySelector('#new-failures').textContent") == "None."
    entry = b.eval("[...document.querySelectorAll('#entries tr')][1].innerText")
    assert "<b>GPU</b> flake" in entry and "@alice" in entry  # escaped: shown as text
    assert b.eval("document.querySelectorAll('#entries a').length") == 0  # javascript: is never a link
    b.goto(f"{base_url}/nightly-ci/night?run_id={quote(run_id(3))}")
    assert table_tests(b, "new-failures") == [BROKEN] and table_tests(b, "fixed") == [FIXED]
    log = b.eval("document.querySelector('#new-failures a[target=_top][href*=\"/tasks/\"]').getAttribute('href')")
    assert log == f"{base_url}/dags/{DAG}/runs/{quote(run_id(3))}/tasks/vllm_amd64.tests.unit?try_number=1"


def check_test(b: Browser, base_url: str, tmp_path: Path) -> None:
    b.goto(f"{base_url}/nightly-ci/night")
    b.click(f"[...document.querySelectorAll('#still-failing a')].find(a => a.textContent === {json.dumps(BROKEN)})")
    b.wait("location.pathname === '/nightly-ci/test' && !!document.querySelector('#streak')")
    shot(b, tmp_path, "4-test")
    assert b.eval("document.querySelector('#first-bad').textContent") == commit(3)
    assert b.eval("document.querySelector('#last-good').textContent") == commit(2)
    assert (
        b.eval("document.querySelector('#commit-range').textContent") == f"git log --oneline {commit(2)}..{commit(3)}"
    )
    states = b.eval("[...document.querySelectorAll('#history td.sq')].map(td => td.classList[1])")
    assert states == [views.FAILED, views.FAILED, views.PASSED, views.PASSED]
    # A test id with markup in it: shown as text, nothing of it runs.
    b.goto(f"{base_url}/nightly-ci/test?id={quote(ODD)}")
    assert b.eval("document.querySelector('h1').textContent") == ODD
    assert b.eval("document.querySelectorAll('script').length") == 0
    assert b.eval("document.querySelector('#streak').textContent") == "Not failing now: no failure streak."


def check_suite_and_files(b: Browser, base_url: str, tmp_path: Path) -> None:
    b.goto(f"{base_url}/nightly-ci/")
    b.click("[...document.querySelectorAll('#matrix th a')].find(a => a.textContent === 'unit')", "vllm_amd64's unit")
    b.wait("location.pathname === '/nightly-ci/suite' && !!document.querySelector('#suite')")
    shot(b, tmp_path, "5-suite")
    rows = b.eval("[...document.querySelectorAll('#suite tr')].slice(1).map(tr => tr.innerText)")
    assert len(rows) == 4 and "gpu-4" in rows[0] and "1 / 1 / 0 / 0 / 0" in rows[0]
    assert b.eval("document.querySelector('#suite a[title*=\"sha256\"]').getAttribute('href')").startswith(
        "http://127.0.0.1:5000/v2/nightly/vllm_amd64/manifests/sha256:"
    )
    b.click("[...document.querySelectorAll('#suite a')].find(a => a.textContent === 'JUnit')", "the JUnit link")
    # The new document loaded, not only its address: between the two there is no documentElement.
    b.wait("location.pathname === '/nightly-ci/artifact' && document.readyState === 'complete'")
    assert "assert 1 == 2" in b.eval("document.documentElement.outerHTML")
    b.goto(f"{base_url}/nightly-ci/artifact?run_id={quote(run_id(4))}"
           "&task_id=vllm_amd64.tests.unit&file=output")  # fmt: skip
    assert b.eval("document.body.innerText").startswith("<html>not html")  # text, never HTML


def check_missing(b: Browser, base_url: str) -> None:
    cookies = b.cookies()
    missing = requests.get(f"{base_url}/nightly-ci/test", params={"id": "<i>nope</i>"}, cookies=cookies, timeout=10)
    assert missing.status_code == 404 and "&lt;i&gt;nope&lt;/i&gt;" in missing.text
    night = requests.get(f"{base_url}/nightly-ci/night", params={"run_id": "no-such"}, cookies=cookies, timeout=10)
    assert night.status_code == 404
