"""The history store on real databases: SQLite in a file and Postgres from Debian's
packages, started here. Migrations, a night's write and re-write, and the reads the
night's rules make."""

from __future__ import annotations

import dataclasses

import pytest

from include.nightly_ci.errors import HistoryConfigError, HistoryUnavailable
from include.nightly_ci.history.records import (
    FLAKY,
    FROM_CONFIG,
    FROM_FLAKES,
    CaseRecord,
    NightRecord,
    QuarantineEntry,
    SuiteRecord,
)
from include.nightly_ci.history.store import HistoryStore, url_of

DAG = "nightly_ci"


def night(n: int, kind: str = "nightly") -> NightRecord:
    return NightRecord(
        DAG, f"scheduled__2026-11-{n:02d}T08:00:00+00:00", f"2026-11-{n:02d}T08:00:00+00:00", kind, "c" * 40
    )


def suite(cell: str = "vllm_amd64", name: str = "unit", tests: int | None = 3) -> SuiteRecord:
    return SuiteRecord(cell, name, f"{cell}.tests.{name}", "success", "passed", None, "reg/x@sha256:" + "a" * 64,
                       "gpu-1", 1, tests, 12.5)  # fmt: skip


def cases(outcomes: dict[str, str], cell: str = "vllm_amd64", name: str = "unit", **extra) -> list[CaseRecord]:
    return [CaseRecord(cell, name, test, outcome, 0.1, **extra) for test, outcome in outcomes.items()]


def test_migrate_is_idempotent_and_makes_the_tables_of_the_model(store):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from include.nightly_ci.history.tables import VERSION_TABLE, metadata

    assert store.migrate() == store.migrate() == "0003"
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), metadata)
    assert diff == []


def test_a_rewritten_night_replaces_the_first_write(store):
    assert store.write_night(night(1), [suite()], cases({"t::a": "passed", "t::b": "failed"})) == 2
    store.write_night(night(1), [suite()], cases({"t::a": "passed", "t::b": "passed", "t::c": "passed"}))
    got = store.previous_outcomes(DAG, "nightly", night(2).night, [("vllm_amd64", "unit", t) for t in "abc"])
    assert got == {}  # keys are test ids, not letters: nothing matches
    keys = [("vllm_amd64", "unit", f"t::{t}") for t in "abc"]
    assert store.previous_outcomes(DAG, "nightly", night(2).night, keys) == dict.fromkeys(keys, "passed")
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        from include.nightly_ci.history import tables as t

        assert conn.execute(select(func.count()).select_from(t.nights)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(t.cases)).scalar() == 3


def test_the_previous_outcome_is_of_the_latest_earlier_night_that_ran_the_suite(store):
    store.write_night(night(1), [suite()], cases({"t::a": "failed"}))
    # Night 2 did not run the suite (its build failed): no cases, no count.
    store.write_night(night(2), [suite(tests=None)], [])
    store.write_night(night(3, kind="manual"), [suite()], cases({"t::a": "passed"}))  # another kind
    store.write_night(night(5), [suite()], cases({"t::a": "passed"}))  # after: not "previous"
    key = ("vllm_amd64", "unit", "t::a")
    assert store.previous_outcomes(DAG, "nightly", night(4).night, [key]) == {key: "failed"}
    assert store.previous_outcomes(DAG, "nightly", night(1).night, [key]) == {}
    assert store.previous_outcomes("other_dag", "nightly", night(4).night, [key]) == {}


def test_a_failure_found_flaky_reads_flaky_the_night_after(store):
    store.write_night(night(1), [suite()], cases({"t::f": "failed"}, verdict=FLAKY, reruns=("passed",)))
    key = ("vllm_amd64", "unit", "t::f")
    assert store.previous_outcomes(DAG, "nightly", night(2).night, [key]) == {key: FLAKY}


def test_flaky_nights_count_the_nights_before_tonight(store):
    for n in (1, 2, 4, 5):
        store.write_night(night(n), [suite()], cases({"t::f": "failed"}, verdict=FLAKY, reruns=("failed", "passed")))
    store.write_night(night(6), [suite()], cases({"t::f": "failed"}, verdict=FLAKY))  # tonight: not counted
    tonight = night(6).night
    assert store.flaky_nights(DAG, "nightly", tonight, ["t::f", "t::none"], nights=2) == {"t::f": 2}  # 5, 4
    assert store.flaky_nights(DAG, "nightly", tonight, ["t::f"], nights=3) == {"t::f": 3}  # 5, 4, 2: nights that ran
    assert store.flaky_nights(DAG, "nightly", tonight, ["t::f"], nights=9) == {"t::f": 4}
    assert store.flaky_nights(DAG, "manual", tonight, ["t::f"], nights=9) == {}


def test_clean_nights_count_back_to_a_failure_over_nights_without_the_test(store):
    store.write_night(night(1), [suite()], cases({"t::a": "passed", "t::b": "passed"}))
    store.write_night(night(2), [suite()], cases({"t::a": "failed", "t::b": "passed"}))
    store.write_night(night(3), [suite()], cases({"t::a": "passed", "t::b": "passed"}))
    store.write_night(night(4), [suite()], cases({"t::b": "skipped"}))
    store.write_night(night(5), [suite()], cases({"t::a": "passed", "t::b": "passed"}))
    got = store.clean_nights(DAG, "nightly", night(6).night, ["t::a", "t::b", "t::*", "x::*"], limit=10)
    assert got == {"t::a": 2, "t::b": 4, "t::*": 2, "x::*": 0}  # night 4 ran neither: not counted, not a break
    assert store.clean_nights(DAG, "nightly", night(4).night, ["t::b"], limit=10) == {"t::b": 3}
    assert store.clean_nights(DAG, "nightly", night(6).night, ["t::b"], limit=2) == {"t::b": 1}


def test_quarantine_add_list_and_release(store):
    entry = QuarantineEntry("t::a*", "@alice", "flaky GPU", "https://issues/1", None, FROM_CONFIG, night(1).night)
    auto = QuarantineEntry("t::b", "@ops", "flaky on 2 nights", origin=FROM_FLAKES, added=night(1).night)
    store.add_quarantine(DAG, [entry, auto])
    assert [e.pattern for e in store.quarantine(DAG)] == ["t::a*", "t::b"]
    store.release_quarantine(DAG, [QuarantineEntry("t::b", "", "", origin=FROM_FLAKES, released=night(3).night,
                                                   released_why="7 clean nights in a row")])  # fmt: skip
    assert [e.pattern for e in store.quarantine(DAG)] == ["t::a*"]
    every = store.quarantine(DAG, include_released=True)
    assert [(e.pattern, e.released_why) for e in every] == [("t::a*", None), ("t::b", "7 clean nights in a row")]
    assert store.quarantine("other_dag") == []


def test_a_store_that_is_down_says_where_without_the_password(postgres, tmp_path):
    url = postgres.url.replace(f":{postgres.port}/", ":1/")
    with pytest.raises(HistoryUnavailable, match=r"127\.0\.0\.1:1/airflow: migrating the schema failed") as err:
        HistoryStore(url).migrate()
    assert postgres.password not in str(err.value)


def test_connections_postgres_sqlite_and_refused(tmp_path, monkeypatch, postgres):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_H_SQLITE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "h.db")}))
    assert url_of("h_sqlite") == f"sqlite:///{tmp_path / 'h.db'}"
    pg = {"conn_type": "postgres", "host": "127.0.0.1", "port": postgres.port, "login": "airflow",
          "password": postgres.password, "schema": "airflow"}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_H_PG", json.dumps(pg))
    history = HistoryStore(url_of("h_pg"))
    assert history.migrate() == "0003"
    history.close()
    monkeypatch.setenv("AIRFLOW_CONN_H_HTTP", json.dumps({"conn_type": "http", "host": "x"}))
    with pytest.raises(HistoryConfigError, match="'h_http' is of type 'http'"):
        url_of("h_http")
    with pytest.raises(HistoryConfigError, match="'h_missing' is not defined"):
        url_of("h_missing")


def test_a_finding_is_saved_over_its_earlier_state_and_read_back(store):
    from include.nightly_ci.history import findings

    first = findings.CulpritFinding(DAG, "scheduled__n2", night(2).night, "vllm_amd64", "unit", ("t::a", "t::b"),
                                    "a" * 40, "b" * 40)  # fmt: skip
    findings.save(store, first)
    done = findings.save(store, dataclasses.replace(
        first, status=findings.CULPRIT, culprit="c" * 40, parent="d" * 40, author="Ann <ann@example.com>",
        subject="route everything to the first worker", rounds=3, builds=9, gpu_seconds=812.5,
        evidence=({"commit": "c" * 40, "runs": ["failed", "failed", "failed"]},),
    ))  # fmt: skip
    other = findings.save(store, dataclasses.replace(first, nightly_run_id="scheduled__n3", night=night(3).night))
    got = findings.load(store, DAG)
    assert [(f.nightly_run_id, f.status) for f in got] == [("scheduled__n3", "searching"), ("scheduled__n2", "culprit")]
    assert got[1] == done and got[0] == other
    assert findings.load(store, DAG, "scheduled__n2") == [done]
    with pytest.raises(ValueError, match="status 'blamed' is not one of"):
        dataclasses.replace(first, status="blamed")


def test_a_search_starts_from_the_latest_earlier_night_that_ran_the_suite(store):
    from include.nightly_ci.history.findings import SuiteNight, suite_before

    store.write_night(night(1), [suite()], cases({"t::a": "passed"}))
    store.write_night(night(2), [suite(tests=None)], [])  # its build failed: the suite did not run
    store.write_night(night(3, kind="manual"), [suite()], cases({"t::a": "passed"}))  # another kind
    got = suite_before(store, DAG, "nightly", night(4).night, "vllm_amd64", "unit")
    assert got == SuiteNight(night(1).run_id, night(1).night, "c" * 40, "reg/x@sha256:" + "a" * 64)
    assert suite_before(store, DAG, "nightly", night(1).night, "vllm_amd64", "unit") is None
    assert suite_before(store, DAG, "nightly", night(4).night, "vllm_amd64", "e2e") is None


def test_a_regression_the_culprit_finder_found_flaky_reads_flaky_and_counts_for_the_quarantine(store):
    """The culprit finder's hand-off (findings.mark_flaky): the night's regressed cases of
    the tests its search found flaky read flaky, so the next night reruns them and the
    quarantine rule counts that night; other tests, suites and nights keep their verdict."""
    from sqlalchemy import select

    from include.nightly_ci.history import findings, rules
    from include.nightly_ci.history import tables as t
    from include.nightly_ci.history.records import REGRESSION

    bad = {"t::f": "failed", "t::other": "failed"}
    for n in (1, 2):
        store.write_night(night(n), [suite(), suite(name="e2e")],
                          cases(bad, verdict=REGRESSION, reruns=("failed", "failed"))
                          + cases({"t::f": "failed"}, name="e2e", verdict=REGRESSION, reruns=("failed",))
                          + cases({"t::ok": "passed"}))  # fmt: skip
    key = ("vllm_amd64", "unit", "t::f")
    assert findings.mark_flaky(store, DAG, night(1).run_id, "vllm_amd64", "unit", ["t::f"]) == 1
    after_one = store.flaky_nights(DAG, "nightly", night(3).night, ["t::f", "t::other"], nights=13)
    assert after_one == {"t::f": 1}  # one flaky night: not yet quarantined
    assert findings.mark_flaky(store, DAG, night(2).run_id, "vllm_amd64", "unit", ["t::f", "t::ok"]) == 1
    assert findings.mark_flaky(store, DAG, night(2).run_id, "vllm_amd64", "unit", ["t::f"]) == 0  # once is enough
    assert findings.mark_flaky(store, DAG, "manual__by_hand", "vllm_amd64", "unit", ["t::f"]) == 0  # not recorded
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.nights.c.run_id, t.suites.c.suite, t.tests.c.name, t.cases.c.verdict, t.cases.c.reruns)
            .select_from(t.cases.join(t.tests).join(t.suites).join(t.nights))
            .where(t.nights.c.run_id == night(2).run_id)
        ).all()
    got = {(suite_name, name): (verdict, reruns) for _, suite_name, name, verdict, reruns in rows}
    assert got == {
        ("unit", "t::f"): (FLAKY, "failed,failed"),  # the reruns the night saw are kept
        ("unit", "t::other"): (REGRESSION, "failed,failed"),
        ("e2e", "t::f"): (REGRESSION, "failed"),
        ("unit", "t::ok"): (None, None),
    }
    previous = store.previous_outcomes(DAG, "nightly", night(3).night, [key, ("vllm_amd64", "e2e", "t::f")])
    assert previous == {key: FLAKY, ("vllm_amd64", "e2e", "t::f"): "failed"}  # rerun, not known-failing
    counts = store.flaky_nights(DAG, "nightly", night(3).night, ["t::f", "t::other"], nights=13)
    assert counts == {"t::f": 2}
    added = rules.flaky_entries(counts, [], nights=2, window=14, owner="@ops", night=night(3).night)
    assert [(e.pattern, e.origin) for e in added] == [("t::f", FROM_FLAKES)]


def test_a_finding_is_started_only_once_and_a_later_start_leaves_it_as_it_stands(store):
    from include.nightly_ci.history import findings

    first = findings.CulpritFinding(DAG, "scheduled__n2", night(2).night, "vllm_amd64", "unit", ("t::a",),
                                    "a" * 40, "b" * 40)  # fmt: skip
    assert findings.save_new(store, first)
    done = findings.save(store, dataclasses.replace(first, status=findings.CULPRIT, culprit="c" * 40, rounds=2))
    assert not findings.save_new(store, first)  # the nightly's announce task, cleared and run again
    assert findings.load(store, DAG) == [done]
    assert findings.save_new(store, dataclasses.replace(first, suite="e2e"))  # another regression of the night
