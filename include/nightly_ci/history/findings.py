"""The culprit finder's findings in the history store: one per regression of a night (a
cell's suite), written at each step of its search, so the triage page and Slack always
show where it stands, and a re-run step rewrites its own row instead of adding one."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.nightly_ci.history.records import iso_utc, to_utc

if TYPE_CHECKING:
    from include.nightly_ci.history.store import HistoryStore

# Where a finding stands.
SEARCHING = "searching"
CULPRIT = "culprit"  # found and verified: the culprit fails, its parent passes
EXTERNAL = "external"  # the last good night's image fails too: the cause is outside the range
FLAKY = "flaky"  # a candidate failed once in r runs: handed to the flake handling, nobody blamed
UNVERIFIED = "unverified"  # the search ended on a commit that verification did not confirm
PARTIAL = "partial"  # the GPU budget was spent: the range as far as it was narrowed
TOO_LONG = "too_long"  # more commits than culprit.max_commits: not searched
STATUSES = (SEARCHING, CULPRIT, EXTERNAL, FLAKY, UNVERIFIED, PARTIAL, TOO_LONG)


@dataclass(frozen=True)
class CulpritFinding:
    """One regression's search: its range, where it stands, what it cost, and the evidence."""

    dag_id: str
    nightly_run_id: str  # the night that found the regression
    night: str  # its logical date, ISO
    cell: str
    suite: str
    tests: tuple[str, ...]
    good_commit: str
    bad_commit: str
    status: str = SEARCHING
    culprit: str | None = None
    parent: str | None = None
    author: str | None = None
    subject: str | None = None
    rounds: int = 0
    builds: int = 0
    gpu_seconds: float = 0.0
    evidence: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # the runs that decided
    updated: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")


def save(store: HistoryStore, finding: CulpritFinding) -> CulpritFinding:
    """Write FINDING over any earlier state of the same regression; what was written."""
    from sqlalchemy import delete, insert

    from include.nightly_ci.history import tables as t

    written = replace(finding, updated=datetime.now(UTC).isoformat())
    f = t.findings.c
    with store.begin(f"saving the finding of {finding.cell}/{finding.suite} of {finding.nightly_run_id}") as conn:
        conn.execute(
            delete(t.findings).where(
                f.dag_id == finding.dag_id,
                f.nightly_run_id == finding.nightly_run_id,
                f.cell == finding.cell,
                f.suite == finding.suite,
            )
        )
        conn.execute(insert(t.findings).values(**_row(written)))
    return written


def save_new(store: HistoryStore, finding: CulpritFinding) -> bool:
    """Write FINDING unless its regression has a finding already; whether it was written.
    The nightly's announce task starts a finding: run again (cleared by hand), it must not
    undo what the culprit DAG has advanced or ended since. One statement: two at once write one."""
    from sqlalchemy.dialects import postgresql, sqlite

    from include.nightly_ci.history import tables as t

    written = replace(finding, updated=datetime.now(UTC).isoformat())
    with store.begin(f"starting the finding of {finding.cell}/{finding.suite} of {finding.nightly_run_id}") as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        done = conn.execute(insert(t.findings).values(**_row(written)).on_conflict_do_nothing())
    return bool(done.rowcount)


def mark_flaky(store: HistoryStore, dag_id: str, run_id: str, cell: str, suite: str, tests: Iterable[str]) -> int:
    """The hand-off of a search that ended FLAKY to the nightly's flake handling: RUN_ID's
    cases of TESTS in CELL's SUITE, regressions, read flaky from now on (their outcome and
    reruns as the night saw them stay; its FLAKY finding, kept beside, says why). So that
    night counts as a flaky night of each for the quarantine, and the next night reruns them
    instead of taking them as known-failing. Rows changed: 0 for a night the store lacks."""
    from sqlalchemy import select, update

    from include.nightly_ci.history import tables as t
    from include.nightly_ci.history.records import FLAKY as FLAKY_VERDICT
    from include.nightly_ci.history.records import REGRESSION
    from include.nightly_ci.history.store import _chunks

    n, s, c = t.nights.c, t.suites.c, t.cases.c
    suite_ids = (
        select(s.id)
        .select_from(t.suites.join(t.nights))
        .where(n.dag_id == dag_id, n.run_id == run_id, s.cell == cell, s.suite == suite)
    )
    names, changed = sorted(set(tests)), 0
    with store.begin(f"marking {len(names)} test(s) of {cell}/{suite} of {run_id} flaky") as conn:
        for chunk in _chunks(names):
            test_ids = select(t.tests.c.id).where(t.tests.c.name.in_(chunk))
            query = update(t.cases).where(c.suite_id.in_(suite_ids), c.test_id.in_(test_ids), c.verdict == REGRESSION)
            changed += conn.execute(query.values(verdict=FLAKY_VERDICT)).rowcount
    return changed


def _row(finding: CulpritFinding) -> dict[str, Any]:
    row = {name: getattr(finding, name) for name in CulpritFinding.__dataclass_fields__}
    row["tests"] = json.dumps(list(finding.tests))
    row["evidence"] = json.dumps(list(finding.evidence))
    row["night"], row["updated"] = to_utc(finding.night), to_utc(finding.updated)
    return row


def load(store: HistoryStore, dag_id: str, nightly_run_id: str | None = None) -> list[CulpritFinding]:
    """The findings of DAG_ID (of one night), newest night first."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    f = t.findings.c
    query = select(t.findings).where(f.dag_id == dag_id).order_by(f.night.desc(), f.cell, f.suite)
    if nightly_run_id is not None:
        query = query.where(f.nightly_run_id == nightly_run_id)
    with store.begin("reading the findings") as conn:
        rows = conn.execute(query).mappings().all()
    return [from_row(dict(r)) for r in rows]


def from_row(row: dict[str, Any]) -> CulpritFinding:
    """A finding as a row of nci_findings holds it (every reader of findings uses this)."""
    row.pop("id")
    row["tests"] = tuple(json.loads(row["tests"]))
    row["evidence"] = tuple(json.loads(row["evidence"]))
    for key in ("night", "updated"):
        row[key] = iso_utc(row[key])
    return CulpritFinding(**row)


@dataclass(frozen=True)
class SuiteNight:
    """A suite of a cell on one night, as a search starts from it: its commit and image."""

    run_id: str
    night: str
    commit: str | None
    image: str | None


def suite_before(store: HistoryStore, dag_id: str, kind: str, night: str, cell: str, suite: str) -> SuiteNight | None:
    """CELL's SUITE on the latest night of DAG_ID and KIND before NIGHT on which it ran:
    where a regression's search starts (its last good commit, and the image to replay)."""
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    n, s = t.nights.c, t.suites.c
    query = (
        select(n.run_id, n.night, n.commit, s.image)
        .select_from(t.suites.join(t.nights))
        .where(n.dag_id == dag_id, n.kind == kind, n.night < to_utc(night))
        .where(s.cell == cell, s.suite == suite, s.tests.is_not(None))
        .order_by(n.night.desc())
        .limit(1)
    )
    with store.begin(f"reading {cell}/{suite} before {night}") as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return SuiteNight(row.run_id, iso_utc(row.night), row.commit, row.image)
