"""The night's failures told apart, as people read them: the table, Slack and the verdict."""

from __future__ import annotations

from datetime import date

from include.nightly_ci.history.records import FLAKY, FROM_CONFIG, FROM_FLAKES, REGRESSION, QuarantineEntry
from include.nightly_ci.history.rules import Drift
from include.nightly_ci.report.markdown import to_markdown
from include.nightly_ci.report.results import Results, Row
from include.nightly_ci.report.slack import slack_message
from include.nightly_ci.report.triage import Triage, mute, passed

UNIT, E2E = "vllm_amd64.tests.unit", "vllm_amd64.tests.e2e_1gpu"


def results(rows, triage) -> Results:
    return Results("nightly_ci", "scheduled__x", "2026-11-20T08:00:00+00:00", "http://ui/run", rows=tuple(rows),
                   triage=triage)  # fmt: skip


def failed(task_id: str, *cases: str) -> Row:
    return Row(task_id, task_id.replace(".tests.", "-"), "test", "failed", failure_class="test", failed_cases=cases)


def test_a_suite_failed_only_on_flaky_or_quarantined_cases_is_not_red():
    triage = Triage(
        verdicts={f"{UNIT}::t::a": FLAKY, f"{UNIT}::t::b": REGRESSION}, quarantined={f"{UNIT}::t::b": "t::b"}
    )
    rows = mute([failed(UNIT, "t::a", "t::b")], triage)
    assert rows[0].muted and passed(rows)
    assert not mute([failed(UNIT, "t::a", "t::c")], triage)[0].muted  # t::c counts
    timeout = Row(UNIT, "u", "test", "failed", failure_class="timeout", failed_cases=("t::a",))
    assert not mute([timeout], triage)[0].muted  # a suite that timed out is red, whatever its cases
    no_cases = Row(UNIT, "u", "test", "failed", failure_class="test")
    assert not mute([no_cases], triage)[0].muted  # an error with no failed case (a collection error)


def test_the_table_and_slack_tell_regressions_flaky_quarantine_news_and_drift():
    triage = Triage(
        verdicts={f"{UNIT}::t::flaky": FLAKY, f"{UNIT}::t::broken": REGRESSION},
        reruns={f"{UNIT}::t::flaky": ["failed", "passed"], f"{UNIT}::t::broken": ["failed"] * 3},
        drift=(Drift(E2E, 120, 80),),
        added=(QuarantineEntry("t::flaky", "@ops", "flaky on 2 of the last 14 nights", origin=FROM_FLAKES),),
        released=(QuarantineEntry("t::old", "@a", "r", released="2026-11-20", released_why="7 clean nights in a row"),),
        expired=(QuarantineEntry("tests.e2e.*", "<@U0ALICE>", "GPU driver", "", date(2026, 11, 19), FROM_CONFIG),),
    )
    res = results(mute([failed(UNIT, "t::flaky", "t::broken")], triage), triage)
    md = to_markdown(res)
    assert "- Regressions (failed every rerun; passed the night before): 1 test cases" in md
    assert "  - vllm_amd64-unit: `t::broken` (reruns: failed, failed, failed)" in md
    assert "  - vllm_amd64-unit: `t::flaky` (reruns: failed, passed)" in md
    assert "Test count drift: vllm_amd64.tests.e2e_1gpu: 80 tests, 120 the night before (-33%)" in md
    assert "Quarantined tonight: `t::flaky` (owner @ops)" in md
    assert "Released from the quarantine: `t::old` (7 clean nights in a row)" in md
    text = "\n".join(b["text"]["text"] for b in slack_message(res, None)["blocks"] if b.get("text"))
    # The expired entry's owner is pinged by the handle the config gave.
    assert "Quarantine expired on 2026-11-19: `tests.e2e.*` (owner <@U0ALICE>): fix the test, or renew" in text
    assert "Regressions" in text and "t::broken" in text


def test_a_night_red_only_for_flaky_cases_posts_success_and_lists_them():
    triage = Triage(verdicts={f"{UNIT}::t::flaky": FLAKY}, reruns={f"{UNIT}::t::flaky": ["passed"]})
    res = results(mute([failed(UNIT, "t::flaky")], triage), triage)
    assert res.success
    message = slack_message(res, "S0OPS")
    assert message["text"].startswith("*Nightly CI Pipeline - Success ✅*")
    assert "Flaky (passed a rerun of the same image; not red): 1 test cases" in str(message["blocks"])
    assert "| vllm_amd64-unit | failed (flaky or quarantined cases only) |" in to_markdown(res)
    assert Results.from_json(res.to_json()).success  # and so it reads back, and through XCom
    assert Results.from_json(res.for_xcom()).success


def test_only_regressions_that_no_quarantine_holds_go_to_the_culprit_finder():
    from include.nightly_ci.report.announce import regressions

    triage = Triage(
        verdicts={f"{UNIT}::t::b": REGRESSION, f"{UNIT}::t::a": REGRESSION, f"{UNIT}::t::f": FLAKY,
                  f"{E2E}::t::q": REGRESSION, "gone.tests.unit::t::x": REGRESSION},
        quarantined={f"{E2E}::t::q": "t::*"},
    )  # fmt: skip
    suites = {UNIT: ("vllm_amd64", "unit"), E2E: ("vllm_amd64", "e2e_1gpu")}
    assert regressions(results([], triage), suites) == {("vllm_amd64", "unit", UNIT): ("t::a", "t::b")}
