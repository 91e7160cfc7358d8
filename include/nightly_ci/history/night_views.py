"""One night's lists for the triage page: new failures (failed tonight, not on the night
before of that suite), still failing, fixed, flaky and quarantined cases, and the active
quarantine. A night's failing cases come from ix_nci_cases_suite_outcome; the nights
before from ix_nci_nights_dag_night."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.nightly_ci.history.records import BAD
from include.nightly_ci.history.records import FLAKY as FLAKY_VERDICT
from include.nightly_ci.history.records import PASSED as CASE_PASSED
from include.nightly_ci.history.views import CaseRun, NightLists, case_query, case_run, last_nights, night_of

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from include.nightly_ci.history.store import HistoryStore

LOOKBACK_NIGHTS = 30  # how far back "the night before" of a suite that skipped nights is looked for
_CHUNK = 900  # bound parameters per IN (...): SQLite allows 999 in older builds


def night_lists(store: HistoryStore, dag_id: str, kind: str, run_id: str | None) -> NightLists | None:
    """RUN_ID's (None: the latest night's) lists; None when the store has no such night."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    n = t.nights.c
    with store.engine.connect() as conn:
        if run_id is None:
            latest = last_nights(conn, dag_id, kind, 1)
            tonight = latest[0] if latest else None
        else:
            query = select(n.id, n.run_id, n.night, n.commit, n.run_url, n.success, n.kind)
            tonight = conn.execute(query.where(n.dag_id == dag_id, n.run_id == run_id)).first()
        if tonight is None:
            return None
        night_kind = getattr(tonight, "kind", kind)
        bad = _night_cases(conn, tonight.id, BAD)
        quarantined = _night_cases(conn, tonight.id, None, quarantined=True)
        previous = _previous_suites(conn, dag_id, night_kind, tonight)
        before = _cases_of_suites(conn, list(previous.values()), BAD)
        bad_before = {(r.cell, r.suite, r.name) for r in before}
        fixed = _fixed(conn, tonight.id, [r for r in before if r.verdict != FLAKY_VERDICT and not r.quarantined])
    entries = store.quarantine(dag_id)
    counting = [r for r in bad if r.verdict != FLAKY_VERDICT and not r.quarantined]
    return NightLists(
        night_of(tonight),
        new_failures=tuple(case_run(r) for r in counting if (r.cell, r.suite, r.name) not in bad_before),
        still_failing=tuple(case_run(r) for r in counting if (r.cell, r.suite, r.name) in bad_before),
        fixed=fixed,
        flaky=tuple(case_run(r) for r in bad if r.verdict == FLAKY_VERDICT),
        quarantined=tuple(case_run(r) for r in quarantined),
        entries=tuple(entries),
    )


def _night_cases(
    conn: Connection, night_id: int, outcomes: tuple[str, ...] | None, quarantined: bool = False
) -> list[Any]:
    from include.nightly_ci.history import tables as t

    query = case_query().where(t.suites.c.night_id == night_id)
    if outcomes is not None:
        query = query.where(t.cases.c.outcome.in_(outcomes))
    if quarantined:
        query = query.where(t.cases.c.quarantined.is_(True))
    return list(conn.execute(query.order_by(t.suites.c.cell, t.suites.c.suite, t.tests.c.name)))


def _previous_suites(conn: Connection, dag_id: str, kind: str, tonight: Any) -> dict[tuple[str, str], int]:
    """(cell, suite) -> the suite id of the latest earlier night that ran that suite."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    s = t.suites.c
    earlier = {row.id: row.night for row in last_nights(conn, dag_id, kind, LOOKBACK_NIGHTS, before=tonight.night)}
    query = select(s.id, s.night_id, s.cell, s.suite).where(s.night_id.in_(list(earlier)), s.tests.is_not(None))
    latest: dict[tuple[str, str], tuple[datetime, int]] = {}
    for row in conn.execute(query):
        key, when = (row.cell, row.suite), earlier[row.night_id]
        if key not in latest or when > latest[key][0]:
            latest[key] = (when, row.id)
    return {key: suite_id for key, (_, suite_id) in latest.items()}


def _cases_of_suites(conn: Connection, suite_ids: list[int], outcomes: tuple[str, ...]) -> list[Any]:
    from include.nightly_ci.history import tables as t

    if not suite_ids:
        return []
    query = case_query().where(t.cases.c.suite_id.in_(suite_ids), t.cases.c.outcome.in_(outcomes))
    return list(conn.execute(query))


def _fixed(conn: Connection, night_id: int, failed_before: list[Any]) -> tuple[CaseRun, ...]:
    """Of FAILED_BEFORE (the night before's failures that counted), those passing tonight in
    the same cell and suite."""
    from include.nightly_ci.history import tables as t

    wanted = {(r.cell, r.suite, r.name) for r in failed_before}
    ids = sorted({r.test_key for r in failed_before})
    rows = []
    for i in range(0, len(ids), _CHUNK):
        query = case_query().where(
            t.suites.c.night_id == night_id,
            t.cases.c.test_id.in_(ids[i : i + _CHUNK]),
            t.cases.c.outcome == CASE_PASSED,
        )
        rows += [r for r in conn.execute(query) if (r.cell, r.suite, r.name) in wanted]
    return tuple(case_run(r) for r in sorted(rows, key=lambda r: (r.cell, r.suite, r.name)))
