"""What the triage page reads of the culprit finder's findings (history/findings.py): the
findings of one test, and every finding of a DAG. A finding is shown with its night, so
both join the night (its kind, and a night page to link to); one night's findings are
findings.load."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from include.nightly_ci.history import findings as fd
from include.nightly_ci.history.findings import STATUSES, CulpritFinding

if TYPE_CHECKING:
    from sqlalchemy.sql import Select

    from include.nightly_ci.history.store import HistoryStore

# Rows a test's LIKE may read to keep LIMIT findings: it matches the id's JSON text, which
# another id can hold inside its own quotes (x"a), so a few matches are dropped after it.
_TEST_SCAN = 200


def _query(dag_id: str, kind: str) -> Select:
    """DAG_ID's findings of KIND's nights, newest night first."""
    from sqlalchemy import and_, select

    from include.nightly_ci.history import tables as t

    f, n = t.findings.c, t.nights.c
    on_night = and_(n.dag_id == f.dag_id, n.run_id == f.nightly_run_id)
    return (
        select(t.findings)
        .select_from(t.findings.join(t.nights, on_night))
        .where(f.dag_id == dag_id, n.kind == kind)
        .order_by(f.night.desc(), f.cell, f.suite)
    )


def _read(store: HistoryStore, query: Select, what: str) -> list[CulpritFinding]:
    with store.begin(f"reading {what}") as conn:
        rows = conn.execute(query).mappings().all()
    return [fd.from_row(dict(r)) for r in rows]


def recent(store: HistoryStore, dag_id: str, kind: str, status: str | None, limit: int) -> list[CulpritFinding]:
    """DAG_ID's last LIMIT findings of KIND's nights (of STATUS only, when given), newest night first."""
    from include.nightly_ci.history import tables as t

    if status is not None and status not in STATUSES:
        raise ValueError(f"no finding status {status!r}: one of {', '.join(STATUSES)}")
    query = _query(dag_id, kind).limit(limit)
    if status is not None:
        query = query.where(t.findings.c.status == status)
    return _read(store, query, f"the findings of {dag_id}")


def for_test(store: HistoryStore, dag_id: str, kind: str, test_id: str, limit: int) -> list[CulpritFinding]:
    """The last LIMIT findings of DAG_ID (KIND's nights) whose tests include TEST_ID, newest night first."""
    from include.nightly_ci.history import tables as t

    # The tests column is a JSON list: the id's JSON string, as a LIKE pattern with its
    # wildcards escaped. SQLite's LIKE ignores ASCII case: the exact test is made below.
    pattern = "%" + _like_escaped(json.dumps(test_id)) + "%"
    query = _query(dag_id, kind).where(t.findings.c.tests.like(pattern, escape="\\")).limit(_TEST_SCAN)
    found = _read(store, query, f"the findings of {test_id}")
    return [f for f in found if test_id in f.tests][:limit]


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def status_words(finding: CulpritFinding) -> str:
    """Where FINDING stands, in words a reader of the page or of Slack understands."""
    if finding.status == fd.SEARCHING:
        return f"searching: {finding.rounds} round{'s' if finding.rounds != 1 else ''} so far"
    return _WORDS.get(finding.status, finding.status)


_WORDS = {
    fd.CULPRIT: "culprit found and verified",
    fd.EXTERNAL: "external: the last good night's image fails too (the cause is outside the commits)",
    fd.FLAKY: "flaky: a candidate failed only some of its runs; handed to the flake handling, nobody blamed",
    fd.UNVERIFIED: "not verified: the commit the search ended on did not fail while its parent passed",
    fd.PARTIAL: "GPU budget spent: the range as far as it was narrowed",
    fd.TOO_LONG: "not searched: more commits than culprit.max_commits",
}
