"""The culprit finder on the triage page (issue 13, point 4): the findings the culprit DAG
saves in the history store show on the night page (with their evidence runs, linked to the
culprit DAG's task instances in the Airflow UI), on the test page and on /findings, with
every stored string as text. The same api-server, store and headless Chromium as
test_triage_page.py (its `airflow` fixture: SQLite, then Postgres)."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote

import pytest

from include.nightly_ci.history import finding_views, findings
from include.nightly_ci.history.findings import CulpritFinding
from include.nightly_ci.history.records import NightRecord
from include.nightly_ci.history.store import HistoryStore
from tests.browser import Browser
from tests.integration import test_triage_page
from tests.integration.test_triage_page import BROKEN, DAG, FLAKY_T, ODD, commit, run_id, shot

pytestmark = [pytest.mark.integration]

# That module's api-server with the plugin and its filled store (SQLite, then Postgres).
airflow = test_triage_page.airflow

CULPRIT_DAG = "nightly_ci_culprit"
SEARCH_RUN = "asset_triggered__2026-11-03T05:00:00+00:00_q1"
CULPRIT = "c0ffee" + "1234567890abcdef" * 2 + "01"
SUBJECT = 'Break <b>core</b> & "quote" <script>alert(1)</script>'


def ran(round_: int, mode: str, sha: str, outcomes: list[str], verdict: str, map_index: int | None) -> dict:
    """An evidence entry; with the culprit DAG's task instance that produced it when MAP_INDEX is given."""
    entry = {"mode": mode, "round": round_, "commit": sha, "image": f"127.0.0.1:5000/nightly/vllm@sha256:{round_:064x}",
             "runs": {BROKEN: outcomes}, "verdict": verdict}  # fmt: skip
    if map_index is not None:
        entry |= {"dag_id": CULPRIT_DAG, "run_id": SEARCH_RUN, "task_id": f"{mode}.run_tests", "map_index": map_index}
    return entry


def the_findings() -> list[CulpritFinding]:
    """Night 3: BROKEN's culprit, found and verified. Night 4: BROKEN still searching (with ODD,
    a test id with markup), and FLAKY_T's failure classed external."""
    found = CulpritFinding(
        DAG, run_id(3), "2026-11-03T02:00:00+00:00", "vllm_amd64", "unit", (BROKEN,), commit(2), commit(3),
        status=findings.CULPRIT, culprit=CULPRIT, parent="p" * 40, author="Ann <ann@example.com>", subject=SUBJECT,
        rounds=3, builds=4, gpu_seconds=5400.0,
        evidence=(ran(0, "replay", commit(2), ["passed", "passed", "passed"], "good", 0),
                  ran(1, "bisect", CULPRIT, ["failed", "failed", "failed"], "bad", 2),
                  ran(3, "verify", CULPRIT, ["failed", "failed", "failed"], "bad", 1),
                  ran(3, "verify", "p" * 40, ["passed", "passed", "passed"], "good", None)),
    )  # fmt: skip
    searching = CulpritFinding(DAG, run_id(4), "2026-11-04T02:00:00+00:00", "vllm_amd64", "unit", (BROKEN, ODD),
                               commit(3), commit(4), rounds=2, builds=2, gpu_seconds=600.0)  # fmt: skip
    external = CulpritFinding(DAG, run_id(4), "2026-11-04T02:00:00+00:00", "trtllm_amd64", "unit", (FLAKY_T,),
                              commit(3), commit(4), status=findings.EXTERNAL, gpu_seconds=120.0,
                              evidence=(ran(0, "replay", commit(3), ["failed", "failed"], "bad", 0),))  # fmt: skip
    return [found, searching, external]


def save_all(store: HistoryStore) -> None:
    for finding in the_findings():
        findings.save(store, finding)
    # Another DAG's finding of the same night: never on this DAG's pages.
    findings.save(store, dataclasses.replace(the_findings()[0], dag_id="other_dag", cell="other_cell"))


def login(b: Browser, base_url: str, password: str) -> None:
    b.goto(f"{base_url}/nightly-ci/")
    b.wait("!!document.querySelector('input[type=password]')", what="Airflow's login form")
    b.type_into("input:not([type=password])", "admin")
    b.type_into("input[type=password]", password)
    b.click("document.querySelector('button[type=submit]')", "the login button")
    b.wait("location.pathname === '/nightly-ci/' && !!document.querySelector('#matrix')", 60, "the matrix")


def rows(b: Browser, selector: str) -> list[str]:
    return b.eval(f"[...document.querySelectorAll({json.dumps(selector)})].map(tr => tr.innerText)")


def test_the_findings_show_on_the_night_the_test_and_the_findings_pages(airflow, tmp_path):
    base_url, password, store, kind = airflow
    tmp_path = tmp_path / kind
    tmp_path.mkdir()
    save_all(store)
    with Browser() as b:
        login(b, base_url, password)
        check_night_with_a_culprit(b, base_url, tmp_path)
        check_night_searching_and_external(b, base_url)
        check_test_page(b, base_url, tmp_path)
        check_findings_page(b, base_url, tmp_path)


def check_night_with_a_culprit(b: Browser, base_url: str, tmp_path) -> None:
    b.goto(f"{base_url}/nightly-ci/night?run_id={quote(run_id(3))}")
    shot(b, tmp_path, "6-night-culprit")
    assert b.eval("document.querySelectorAll('#findings .finding').length") == 1
    text = b.eval("document.querySelector('#findings .finding').innerText")
    assert "vllm_amd64 / unit" in text and BROKEN in text
    assert "culprit found and verified" in text
    assert f"{commit(2)[:12]}..{commit(3)[:12]}" in text
    assert CULPRIT in text and "Ann <ann@example.com>" in text
    assert b.eval("document.querySelector('#findings .subject').textContent") == SUBJECT  # text, never markup
    assert b.eval("document.querySelectorAll('script, #findings b').length") == 0
    assert "3 rounds" in text and "4 builds" in text and "1.50 GPU-hours" in text
    evidence = rows(b, "#findings .evidence tr:not(:first-child)")
    assert len(evidence) == 4
    assert evidence[0].split("\t")[:4] == ["0", "replay", commit(2)[:12], "good"]
    assert "passed, passed, passed" in evidence[0] and BROKEN in evidence[0]
    assert evidence[1].split("\t")[:4] == ["1", "bisect", CULPRIT[:12], "bad"]
    links = b.eval("""[...document.querySelectorAll('#findings .evidence tr')].slice(1).map(tr => {
        const a = tr.querySelector('a'); return a ? [a.getAttribute('href'), a.target] : null })""")
    task = f"{base_url}/dags/{CULPRIT_DAG}/runs/{quote(SEARCH_RUN)}/tasks"
    assert links == [[f"{task}/replay.run_tests/mapped/0", "_top"], [f"{task}/bisect.run_tests/mapped/2", "_top"],
                     [f"{task}/verify.run_tests/mapped/1", "_top"], None]  # fmt: skip
    # The test names open their history.
    test_link = b.eval(f"[...document.querySelectorAll('#findings a')].find(a => a.textContent === {json.dumps(BROKEN)})"
                       ".getAttribute('href')")  # fmt: skip
    assert test_link == f"test?id={quote(BROKEN, safe='')}&kind=nightly"


def check_night_searching_and_external(b: Browser, base_url: str) -> None:
    b.goto(f"{base_url}/nightly-ci/night?run_id={quote(run_id(4))}")
    found = b.eval("[...document.querySelectorAll('#findings .finding')].map(d => [d.dataset.status, d.innerText])")
    assert [status for status, _ in found] == ["external", "searching"]  # by cell
    external, searching = (text for _, text in found)
    assert "external" in external and "the last good night's image fails too" in external and FLAKY_T in external
    assert "searching: 2 rounds so far" in searching and ODD in searching
    assert "Culprit" not in searching  # no culprit yet
    assert b.eval("document.querySelectorAll('script').length") == 0
    b.goto(f"{base_url}/nightly-ci/night?run_id={quote(run_id(1))}")
    assert b.eval("document.querySelector('#findings').textContent") == "None."


def check_test_page(b: Browser, base_url: str, tmp_path) -> None:
    b.goto(f"{base_url}/nightly-ci/test?id={quote(BROKEN)}")
    shot(b, tmp_path, "7-test-findings")
    found = rows(b, "#test-findings tr:not(:first-child)")
    assert len(found) == 2  # newest night first; not the external one (another test), not other_dag's
    assert found[0].startswith("2026-11-04") and "searching: 2 rounds so far" in found[0]
    assert found[1].startswith("2026-11-03") and "culprit found and verified" in found[1]
    assert CULPRIT[:12] in found[1] and SUBJECT in found[1]
    hrefs = b.eval(
        "[...document.querySelectorAll('#test-findings tr td:first-child a')].map(a => a.getAttribute('href'))"
    )
    assert hrefs == [f"night?run_id={quote(run_id(n), safe='')}&kind=nightly#findings" for n in (4, 3)]
    b.click("document.querySelector('#test-findings tr:nth-child(3) td:first-child a')", "the culprit's night")
    b.wait("location.pathname === '/nightly-ci/night' && !!document.querySelector('#findings .evidence')")
    b.goto(f"{base_url}/nightly-ci/test?id={quote(FLAKY_T)}")
    assert [r.split("\t")[0][:10] for r in rows(b, "#test-findings tr:not(:first-child)")] == ["2026-11-04"]


def check_findings_page(b: Browser, base_url: str, tmp_path) -> None:
    b.goto(f"{base_url}/nightly-ci/")
    b.click("[...document.querySelectorAll('nav a')].find(a => a.textContent === 'Culprit finder')", "the nav entry")
    b.wait("location.pathname === '/nightly-ci/findings' && !!document.querySelector('#all-findings')")
    shot(b, tmp_path, "8-findings")
    every = rows(b, "#all-findings tr:not(:first-child)")
    assert len(every) == 3  # other_dag's is not this DAG's
    assert [r[:10] for r in every] == ["2026-11-04", "2026-11-04", "2026-11-03"]
    assert "external" in every[0] and "searching" in every[1]
    assert "culprit found and verified" in every[2] and CULPRIT[:12] in every[2] and SUBJECT in every[2]
    assert b.eval("document.querySelectorAll('script').length") == 0
    b.goto(f"{base_url}/nightly-ci/findings?status=culprit")
    only = rows(b, "#all-findings tr:not(:first-child)")
    assert len(only) == 1 and "vllm_amd64 / unit" in only[0]
    href = b.eval("document.querySelector('#all-findings tr:nth-child(2) td:first-child a').getAttribute('href')")
    assert href == f"night?run_id={quote(run_id(3), safe='')}&kind=nightly#findings"
    b.goto(f"{base_url}/nightly-ci/findings?status=partial")
    assert b.eval("document.querySelector('#all-findings').textContent") == "None."
    b.goto(f"{base_url}/nightly-ci/findings?status=%3Cb%3Enope")
    assert "<b>nope" in b.eval("document.body.innerText") and b.eval("document.querySelectorAll('b').length") == 0


def test_a_tests_findings_match_its_id_exactly(store):
    for n in (3, 4):
        store.write_night(NightRecord(DAG, run_id(n), f"2026-11-0{n}T02:00:00+00:00", "nightly", commit(n)), [], [])
    base = the_findings()[1]
    # Ids LIKE would confuse with t::a_b: a wildcard, another case, one inside another id's quotes.
    for i, tests in enumerate((("t::a_b",), ("t::axb",), ("T::A_B",), ('x"t::a_b',), ("t::a%b", "t::a_b"))):
        findings.save(store, dataclasses.replace(base, cell=f"cell{i}", tests=tests))
    findings.save(store, dataclasses.replace(base, cell="old", night="2026-11-03T02:00:00+00:00",
                                             nightly_run_id=run_id(3), tests=("t::a_b",)))  # fmt: skip
    got = finding_views.for_test(store, DAG, "nightly", "t::a_b", limit=5)
    assert [(f.nightly_run_id, f.cell) for f in got] == [(run_id(4), "cell0"), (run_id(4), "cell4"), (run_id(3), "old")]
    assert [f.cell for f in finding_views.for_test(store, DAG, "nightly", "t::a_b", limit=2)] == ["cell0", "cell4"]
    assert finding_views.for_test(store, DAG, "manual", "t::a_b", limit=5) == []
    assert [f.cell for f in finding_views.for_test(store, DAG, "nightly", "t::a%b", limit=5)] == ["cell4"]
