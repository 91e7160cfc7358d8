"""What the triage page reads from the history store: the matrix of cells by nights, a
suite's and a test's history, and one night's lists. Plain frozen records out, no
SQLAlchemy objects.

Every read is a few index range scans, never a scan of the cases table: the nights come
from ix_nci_nights_dag_night, a night's suites from their unique (night, cell, suite)
key, a suite's failing cases from ix_nci_cases_suite_outcome (suite, outcome, verdict,
quarantined: it covers what the squares need), one test's rows from ix_nci_cases_test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.nightly_ci.history.records import BAD, QuarantineEntry, iso_utc
from include.nightly_ci.history.records import FLAKY as FLAKY_VERDICT
from include.nightly_ci.history.records import PASSED as CASE_PASSED

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql import Select

    from include.nightly_ci.history.store import HistoryStore

# A square's (or a suite's) state, best to worst; "not run": no suite of the cell ran.
NOT_RUN, PASSED, FLAKY, FAILED = "not_run", "passed", "flaky", "failed"
_RANK = {NOT_RUN: 0, PASSED: 1, FLAKY: 2, FAILED: 3}


@dataclass(frozen=True)
class Night:
    run_id: str
    night: str  # ISO, UTC
    commit: str | None
    run_url: str
    success: bool | None


@dataclass(frozen=True)
class Square:
    """One cell in one night: the worst state of its suites."""

    cell: str
    run_id: str
    state: str
    failed: int = 0  # failing cases that count (not flaky, not quarantined)
    soft: int = 0  # failing cases that do not: flaky or quarantined
    suites: tuple[str, ...] = ()  # "suite: state" for each suite, for the square's title


@dataclass(frozen=True)
class Matrix:
    dag_id: str
    kind: str
    nights: tuple[Night, ...]  # newest first
    cells: tuple[str, ...]
    squares: dict[tuple[str, str], Square] = field(default_factory=dict)  # (cell, run_id) -> square

    def square(self, cell: str, run_id: str) -> Square:
        return self.squares.get((cell, run_id), Square(cell, run_id, NOT_RUN))


@dataclass(frozen=True)
class SuiteNight:
    """One suite of one cell in one night."""

    run_id: str
    night: str
    commit: str | None
    run_url: str
    state: str
    status: str
    outcome: str | None
    failure_class: str | None
    task_id: str
    try_number: int | None
    image: str | None
    host: str | None
    tests: int | None
    duration_sec: float | None
    passed: int = 0
    failed: int = 0
    flaky: int = 0
    quarantined: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class CaseRun:
    """One test case in one suite of one night."""

    run_id: str
    night: str
    cell: str
    suite: str
    test_id: str
    outcome: str
    verdict: str | None
    reruns: tuple[str, ...]
    quarantined: bool
    duration_sec: float | None
    task_id: str
    try_number: int | None
    image: str | None
    run_url: str


@dataclass(frozen=True)
class TestHistory:
    """One test over the last nights, and its current failure streak: the first night of it
    and the last good night before it (None: it passes now, or never passed)."""

    __test__ = False  # not a pytest class

    test_id: str
    nights: tuple[Night, ...]  # the last N nights of the DAG, newest first
    runs: tuple[CaseRun, ...]  # its rows in those nights
    first_bad: Night | None
    last_good: Night | None


@dataclass(frozen=True)
class NightLists:
    night: Night
    new_failures: tuple[CaseRun, ...]
    still_failing: tuple[CaseRun, ...]
    fixed: tuple[CaseRun, ...]
    flaky: tuple[CaseRun, ...]
    quarantined: tuple[CaseRun, ...]
    entries: tuple[QuarantineEntry, ...]  # the active quarantine


def suite_state(status: str, outcome: str | None, failed: int, soft: int) -> str:
    """A suite's state from its task's status and its failing cases: failed cases that all
    are flaky or quarantined make it FLAKY (they do not gate the verdict)."""
    if failed:
        return FAILED
    if soft:
        return FLAKY
    if status == "failed" or outcome in ("failed", "error", "timeout"):
        return FAILED  # no failing case, yet it failed: a crash, a timeout, the infrastructure
    if status == "success":
        return PASSED
    return NOT_RUN  # skipped, upstream_failed (its build failed), removed, ...


def night_of(row: Any) -> Night:
    return Night(row.run_id, iso_utc(row.night), row.commit, row.run_url, row.success)


def _nights_query(dag_id: str, kind: str, limit: int | None, before: datetime | None = None, *columns: Any) -> Select:
    """The last LIMIT nights (all: None) of DAG_ID and KIND, before BEFORE if given, newest
    first: COLUMNS of them (default: what Night needs, and the id)."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    n = t.nights.c
    query = select(*(columns or (n.id, n.run_id, n.night, n.commit, n.run_url, n.success)))
    query = query.where(n.dag_id == dag_id, n.kind == kind)
    if before is not None:
        query = query.where(n.night < before)
    return query.order_by(n.night.desc(), n.id.desc()).limit(limit)


def last_nights(
    conn: Connection, dag_id: str, kind: str, limit: int | None, before: datetime | None = None
) -> list[Any]:
    return list(conn.execute(_nights_query(dag_id, kind, limit, before)))


def _bad_counts(conn: Connection, night_ids: Select) -> dict[int, tuple[int, int]]:
    """suite id -> (failing cases that count, failing cases flaky or quarantined), for the
    suites of the nights NIGHT_IDS selects (a subquery: no parameter list to outgrow)."""
    from sqlalchemy import func, select

    from include.nightly_ci.history import tables as t

    c = t.cases.c
    counts: dict[int, tuple[int, int]] = {}
    query = (
        select(c.suite_id, c.verdict, c.quarantined, func.count())
        .select_from(t.cases.join(t.suites))
        .where(t.suites.c.night_id.in_(night_ids), c.outcome.in_(BAD))
        .group_by(c.suite_id, c.verdict, c.quarantined)
    )
    for suite_id, verdict, quarantined, count in conn.execute(query).tuples():
        hard, soft = counts.get(suite_id, (0, 0))
        if verdict == FLAKY_VERDICT or quarantined:
            soft += count
        else:
            hard += count
        counts[suite_id] = (hard, soft)
    return counts


def matrix(store: HistoryStore, dag_id: str, kind: str, limit: int) -> Matrix:
    """The last LIMIT nights of DAG_ID and KIND by its cells, each square its cell's worst suite."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    s = t.suites.c
    ids = _nights_query(dag_id, kind, limit, None, t.nights.c.id)
    with store.engine.connect() as conn:
        nights = last_nights(conn, dag_id, kind, limit)
        run_of = {row.id: row.run_id for row in nights}
        suites = list(
            conn.execute(select(s.id, s.night_id, s.cell, s.suite, s.status, s.outcome).where(s.night_id.in_(ids)))
        )
        counts = _bad_counts(conn, ids)
    found: dict[tuple[str, str], list[tuple[str, str, int, int]]] = {}
    for row in suites:
        hard, soft = counts.get(row.id, (0, 0))
        state = suite_state(row.status, row.outcome, hard, soft)
        found.setdefault((row.cell, run_of[row.night_id]), []).append((row.suite, state, hard, soft))
    squares = {}
    for (cell, run_id), parts in found.items():
        worst = max((state for _, state, _, _ in parts), key=_RANK.__getitem__)
        squares[(cell, run_id)] = Square(
            cell,
            run_id,
            worst,
            sum(p[2] for p in parts),
            sum(p[3] for p in parts),
            tuple(f"{name}: {state}" for name, state, _, _ in sorted(parts)),
        )
    cells = tuple(sorted({cell for cell, _ in found}, key=lambda c: _cell_order(suites, c)))
    return Matrix(dag_id, kind, tuple(night_of(row) for row in nights), cells, squares)


def _cell_order(suites: list[Any], cell: str) -> int:
    """Cells in the order the store first holds them (the plan's order, as written)."""
    return min(row.id for row in suites if row.cell == cell)


def suite_history(
    store: HistoryStore, dag_id: str, kind: str, cell: str, suite: str, limit: int
) -> tuple[SuiteNight, ...]:
    """CELL's SUITE in each of the last LIMIT nights that ran it (or held it, not run), newest first."""
    from sqlalchemy import func, select

    from include.nightly_ci.history import tables as t

    s, c = t.suites.c, t.cases.c
    with store.engine.connect() as conn:
        nights = {row.id: row for row in last_nights(conn, dag_id, kind, limit)}
        rows = list(
            conn.execute(select(t.suites).where(s.night_id.in_(list(nights)), s.cell == cell, s.suite == suite))
        )
        tally: dict[int, dict[str, int]] = {row.id: {} for row in rows}
        if tally:
            query = (
                select(c.suite_id, c.outcome, c.verdict, c.quarantined, func.count())
                .where(c.suite_id.in_(list(tally)))
                .group_by(c.suite_id, c.outcome, c.verdict, c.quarantined)
            )
            for suite_id, outcome, verdict, quarantined, count in conn.execute(query).tuples():
                key = _tally_key(outcome, verdict, quarantined)
                tally[suite_id][key] = tally[suite_id].get(key, 0) + count
    found = []
    for row in rows:
        n, counts = nights[row.night_id], tally[row.id]
        state = suite_state(
            row.status, row.outcome, counts.get("failed", 0), counts.get("flaky", 0) + counts.get("quarantined", 0)
        )
        found.append(
            SuiteNight(
                n.run_id,
                iso_utc(n.night),
                n.commit,
                n.run_url,
                state,
                row.status,
                row.outcome,
                row.failure_class,
                row.task_id,
                row.try_number,
                row.image,
                row.host,
                row.tests,
                row.duration_sec,
                **{k: counts.get(k, 0) for k in ("passed", "failed", "flaky", "quarantined", "skipped")},
            )
        )
    return tuple(sorted(found, key=lambda r: r.night, reverse=True))


def _tally_key(outcome: str, verdict: str | None, quarantined: bool) -> str:
    if outcome in BAD:
        return FLAKY if verdict == FLAKY_VERDICT else "quarantined" if quarantined else "failed"
    return outcome  # passed | skipped


def case_query() -> Any:
    """Cases with their suite and night, as CaseRun wants them."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    c, s, n = t.cases.c, t.suites.c, t.nights.c
    night = (n.id.label("night_id"), n.run_id, n.night, n.commit, n.run_url, n.success)
    suite = (s.id.label("suite_id"), s.cell, s.suite, s.task_id, s.try_number, s.image)
    case = (t.tests.c.name, c.test_id.label("test_key"), c.outcome, c.verdict, c.reruns, c.quarantined, c.duration_sec)
    return select(*night, *suite, *case).select_from(t.cases.join(t.tests).join(t.suites).join(t.nights))


def case_run(row: Any) -> CaseRun:
    return CaseRun(
        row.run_id,
        iso_utc(row.night),
        row.cell,
        row.suite,
        row.name,
        row.outcome,
        row.verdict,
        tuple(row.reruns.split(",")) if row.reruns else (),
        bool(row.quarantined),
        row.duration_sec,
        row.task_id,
        row.try_number,
        row.image,
        row.run_url,
    )


def test_history(store: HistoryStore, dag_id: str, kind: str, test_id: str, limit: int) -> TestHistory | None:
    """TEST_ID in the last LIMIT nights, and its current failure streak over all nights; None
    when the store has never seen it."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    with store.engine.connect() as conn:
        key = conn.execute(select(t.tests.c.id).where(t.tests.c.name == test_id)).scalar()
        if key is None:
            return None
        shown = last_nights(conn, dag_id, kind, limit)
        query = case_query().where(t.cases.c.test_id == key, t.nights.c.dag_id == dag_id, t.nights.c.kind == kind)
        rows = list(conn.execute(query.order_by(t.nights.c.night.desc(), t.suites.c.cell, t.suites.c.suite)))
    first_bad, last_good = _streak(rows)
    ids = {row.id for row in shown}
    return TestHistory(
        test_id,
        tuple(night_of(row) for row in shown),
        tuple(case_run(r) for r in rows if r.night_id in ids),
        first_bad,
        last_good,
    )


def _streak(rows: list[Any]) -> tuple[Night | None, Night | None]:
    """ROWS newest first: a night is bad when a failure that counts (not flaky) happened in
    any cell or suite, good when the test ran and passed everywhere; other nights (not run,
    skipped, only flaky failures) neither extend nor end the streak."""
    verdicts: dict[int, tuple[Any, str | None]] = {}  # night id -> (row, "bad" | "good" | None)
    for row in rows:
        if row.outcome in BAD and row.verdict != FLAKY_VERDICT:
            mark = "bad"
        elif row.outcome == CASE_PASSED:
            mark = "good"
        else:
            mark = None
        _, before = verdicts.get(row.night_id, (row, None))
        verdicts[row.night_id] = (row, "bad" if "bad" in (mark, before) else mark or before)
    first_bad = None
    for row, mark in verdicts.values():  # dicts keep insertion order: newest first
        if mark == "bad":
            first_bad = row
        elif mark == "good":
            return (night_of(first_bad), night_of(row)) if first_bad else (None, None)
    return (night_of(first_bad), None) if first_bad else (None, None)
