"""Nights told apart with a real history store (SQLite in a file): flaky on the first
night, quarantined on the second, muted after, released after clean nights; config
entries added, expired and removed; a re-run summary tells the same news once."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import pytest

from include.nightly_ci.config.schema import QuarantineItem
from include.nightly_ci.history.records import FLAKY, FROM_CONFIG, FROM_FLAKES, REGRESSION, STILL_FAILING, NightRecord
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.plan import load_plan
from include.nightly_ci.report.results import Results, Row
from include.nightly_ci.report.triage import Night, Triage, mute, passed, with_store, without_store

ROOT = Path(__file__).resolve().parents[2]
UNIT, E2E = "vllm_amd64.tests.unit", "vllm_amd64.tests.e2e_1gpu"
FLAKE, BROKEN = "tests.unit.test_router::test_flaky", "tests.unit.test_router::test_broken"


def make_plan(**history):
    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    settings = {"flaky_nights": 2, "window_nights": 14, "release_after_clean_nights": 2, "auto_owner": "@ops"}
    return dataclasses.replace(plan, history=plan.history.model_copy(update={**settings, **history}))


def night_of(plan, n: int, cases: dict[str, dict[str, str]], reruns=None, counts=None) -> Night:
    when = f"2026-11-{n:02d}T08:00:00+00:00"
    rows = []
    for task_id, outcomes in cases.items():
        bad = tuple(sorted(t for t, o in outcomes.items() if o in ("failed", "error")))
        tests = {"tests": (counts or {}).get(task_id, len(outcomes))}
        rows.append(Row(task_id, task_id, "test", "failed" if bad else "success", tests=tests,
                        failure_class="test" if bad else None, failed_cases=bad))  # fmt: skip
    record = NightRecord(plan.dag_id, f"scheduled__{when}", when, "nightly", f"{n:040x}", "http://ui/run")
    return Night(plan, record, tuple(rows), {}, cases, {}, reruns or {})


@pytest.fixture
def store(tmp_path):
    history = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    yield history
    history.close()


def run(night: Night, store: HistoryStore, before: Results | None = None) -> Triage:
    return with_store(night, store, before, lambda _: None)


def test_a_flaky_case_is_flaky_on_its_first_night_quarantined_on_its_second_muted_then_released(store):
    plan = make_plan()
    fails_rerun_passes = {(UNIT, FLAKE): ("passed", "failed", "passed")}
    first = night_of(plan, 1, {UNIT: {FLAKE: "failed", BROKEN: "failed", "t::ok": "passed"}}, fails_rerun_passes)
    t1 = run(first, store)
    assert t1.verdicts == {f"{UNIT}::{FLAKE}": FLAKY, f"{UNIT}::{BROKEN}": REGRESSION}
    assert t1.added == () and t1.history == "recorded"
    assert not passed(mute(first.rows, t1))  # the regression keeps it red

    second = night_of(plan, 2, {UNIT: {FLAKE: "failed", BROKEN: "failed", "t::ok": "passed"}}, fails_rerun_passes)
    t2 = run(second, store)
    assert t2.verdicts == {f"{UNIT}::{FLAKE}": FLAKY, f"{UNIT}::{BROKEN}": STILL_FAILING}
    assert [(e.pattern, e.origin, e.owner) for e in t2.added] == [(FLAKE, FROM_FLAKES, "@ops")]
    assert "flaky on 2 of the last 14 nights" in t2.added[0].reason

    # Night 3: it fails every rerun, but it is quarantined: recorded, muted; BROKEN is fixed.
    third = night_of(plan, 3, {UNIT: {FLAKE: "failed", BROKEN: "passed"}}, {(UNIT, FLAKE): ("failed",) * 3})
    t3 = run(third, store)
    assert t3.quarantined == {f"{UNIT}::{FLAKE}": FLAKE}
    rows = mute(third.rows, t3)
    assert rows[0].muted and passed(rows)

    # Two clean nights release it (release_after_clean_nights: 2), and it is told.
    run(night_of(plan, 4, {UNIT: {FLAKE: "passed"}}), store)
    t5 = run(night_of(plan, 5, {UNIT: {FLAKE: "passed"}}), store)
    assert [(e.pattern, e.released_why) for e in t5.released] == [(FLAKE, "2 clean nights in a row")]
    assert store.quarantine(plan.dag_id) == []
    # Recorded: one row per case per night, with its verdict and reruns.
    outcomes = store.previous_outcomes(plan.dag_id, "nightly", "2026-11-04T00:00:00+00:00",
                                       [("vllm_amd64", "unit", FLAKE)])  # fmt: skip
    assert outcomes == {("vllm_amd64", "unit", FLAKE): "failed"}


def test_a_rerun_summary_writes_the_night_once_and_tells_the_same_news(store):
    plan = make_plan(flaky_nights=1, auto_owner="")
    plan = dataclasses.replace(plan, slack=plan.slack.model_copy(update={"ops_group_id": "S0OPS"}))
    night = night_of(plan, 1, {UNIT: {FLAKE: "failed"}}, {(UNIT, FLAKE): ("passed",)})
    first, again = run(night, store), run(night, store)
    assert [e.pattern for e in first.added] == [e.pattern for e in again.added] == [FLAKE]
    assert first.added[0].owner == "<!subteam^S0OPS|@ops-support>"  # no auto_owner: the ops group, pinged
    assert len(store.quarantine(plan.dag_id)) == 1
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        from include.nightly_ci.history import tables as t

        assert conn.execute(select(func.count()).select_from(t.cases)).scalar() == 1


def test_config_entries_mute_expire_with_a_ping_and_go_when_removed(store):
    items = [
        QuarantineItem(pattern="tests.e2e.*", owner="<@U0ALICE>", reason="GPU driver", expires=date(2026, 11, 30)),
        QuarantineItem(pattern="tests.old::*", owner="<@U0BOB>", reason="old", expires=date(2026, 11, 1)),
    ]
    plan = make_plan(quarantine=items)
    t1 = run(night_of(plan, 2, {E2E: {"tests.e2e.test_serve::test_stream": "failed"}}), store)
    assert t1.quarantined == {f"{E2E}::tests.e2e.test_serve::test_stream": "tests.e2e.*"}
    assert [e.origin for e in t1.added] == [FROM_CONFIG, FROM_CONFIG]
    assert [(e.pattern, e.owner) for e in t1.expired] == [("tests.old::*", "<@U0BOB>")]
    # Removed from the config: released, saying so; the expired one stays told while listed.
    plan = make_plan(quarantine=items[1:])
    t2 = run(night_of(plan, 3, {E2E: {"tests.e2e.test_serve::test_stream": "failed"}}), store)
    assert [(e.pattern, e.released_why) for e in t2.released] == [("tests.e2e.*", "removed from the config")]
    assert t2.quarantined == {} and [e.pattern for e in t2.expired] == ["tests.old::*"]


def test_without_a_store_the_night_before_comes_from_its_results_and_the_quarantine_from_the_config():
    items = [QuarantineItem(pattern="t::muted", owner="@a", reason="r", expires=date(2026, 12, 31))]
    plan = make_plan(quarantine=items)
    before = Results(plan.dag_id, "scheduled__x", "2026-11-01T08:00:00+00:00", "", cases={UNIT: {"t::old": "failed"}},
                     rows=(Row(UNIT, "u", "test", "failed", tests={"tests": 100}),))  # fmt: skip
    night = night_of(plan, 2, {UNIT: {"t::old": "failed", "t::new": "failed", "t::muted": "failed"}}, counts={UNIT: 70})
    t = without_store(night, before, "not recorded: no history store is configured (history.conn_id)")
    assert t.verdicts[f"{UNIT}::t::old"] == STILL_FAILING and t.verdicts[f"{UNIT}::t::new"] == REGRESSION
    assert t.quarantined == {f"{UNIT}::t::muted": "t::muted"}
    assert [(d.task_id, d.before, d.now) for d in t.drift] == [(UNIT, 100, 70)]
    assert t.history.startswith("not recorded")


def test_the_triage_survives_results_json_and_the_cut_for_xcom():
    t = Triage(
        verdicts={f"{UNIT}::t::{i}": FLAKY for i in range(30)},
        reruns={f"{UNIT}::t::0": ["passed"]},
        quarantined={f"{UNIT}::t::{i}": "t::*" for i in range(25)},
    )
    assert Triage.from_json(t.to_json()) == t
    cut = Triage.from_json(t.cut(20).to_json())
    assert len(cut.verdicts) == 20 and cut.count(FLAKY) == 30 and cut.count("quarantined") == 25
