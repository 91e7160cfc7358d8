"""The history store: a database behind an Airflow connection (postgres, or sqlite for the
local setup), its migrations, a night's write and the reads tonight's rules need.

Writing a night replaces whatever that run wrote before, in one transaction: a cleared
and re-run summary leaves one copy of the night, never two or half of one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import HistoryConfigError, HistoryUnavailable
from include.nightly_ci.history.records import (
    BAD,
    FLAKY,
    CaseRecord,
    NightRecord,
    QuarantineEntry,
    SuiteRecord,
    iso_utc,
    to_utc,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).with_name("migrations")
# Nights looked back at for "the night before" of a suite that did not run every night.
LOOKBACK_NIGHTS = 30
_CHUNK = 900  # bound parameters per IN (...): SQLite allows 999 in older builds


def url_of(conn_id: str) -> str:
    """The SQLAlchemy URL of Airflow connection CONN_ID: postgres through the provider's
    hook, sqlite from the connection's host (the database file)."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and its kin: say which, and what to make
        raise HistoryConfigError(
            f"history connection {conn_id!r} is not defined: make it (postgres, or sqlite with the"
            f" database file as host), or set history.conn_id to null ({type(exc).__name__})"
        ) from None
    if conn.conn_type == "sqlite":
        if not conn.host:
            raise HistoryConfigError(f"history connection {conn_id!r}: a sqlite connection needs the file as host")
        return f"sqlite:///{conn.host}"
    if conn.conn_type in ("postgres", "postgresql"):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return str(PostgresHook(postgres_conn_id=conn_id).sqlalchemy_url.render_as_string(hide_password=False))
    raise HistoryConfigError(
        f"history connection {conn_id!r} is of type {conn.conn_type!r}: the history store takes postgres or sqlite"
    )


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class HistoryStore:
    """One history database. Every public method is one transaction."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine, event

        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            # Cascading deletes and a writer that waits for another instead of failing.
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

    @classmethod
    def from_connection(cls, conn_id: str) -> HistoryStore:
        return cls(url_of(conn_id))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self, what: str) -> Iterator[Connection]:
        """One transaction; a database that does not answer is HistoryUnavailable, saying
        WHAT failed where (without the password)."""
        from sqlalchemy.exc import InterfaceError, OperationalError

        try:
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            raise HistoryUnavailable(f"history store {where}: {what} failed: {str(exc).splitlines()[0]}") from exc

    # ------------------------------------------------------------ schema

    def migrate(self) -> str:
        """Bring the schema to the newest migration (a no-op when it is); the revision."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        from include.nightly_ci.history.tables import VERSION_TABLE

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.begin("migrating the schema") as conn:
            if conn.dialect.name == "postgresql":  # two summaries at once: one migrates, one waits
                from sqlalchemy import text

                conn.execute(text("SELECT pg_advisory_xact_lock(7317001)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            revision = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
        return revision or ""

    # ------------------------------------------------------------ a night

    def write_night(
        self, night: NightRecord, suite_rows: Iterable[SuiteRecord], case_rows: Iterable[CaseRecord]
    ) -> int:
        """Replace NIGHT's rows with these; how many cases were written."""
        from sqlalchemy import delete, insert

        from include.nightly_ci.history import tables as t

        suite_list, case_list = list(suite_rows), list(case_rows)
        with self.begin(f"writing {night.run_id}") as conn:
            conn.execute(delete(t.nights).where(t.nights.c.dag_id == night.dag_id, t.nights.c.run_id == night.run_id))
            night_id = _new_id(
                conn,
                insert(t.nights).values(
                    dag_id=night.dag_id,
                    run_id=night.run_id,
                    night=to_utc(night.night),
                    kind=night.kind,
                    commit=night.commit,
                    run_url=night.run_url,
                    success=night.success,
                    recorded_at=datetime.now(UTC),
                ),
            )
            suite_ids = {}
            for s in suite_list:
                suite_ids[(s.cell, s.suite)] = _new_id(conn, insert(t.suites).values(night_id=night_id, **asdict(s)))
            names = self._intern(conn, {c.test_id for c in case_list})
            rows = [
                {
                    "suite_id": suite_ids[(c.cell, c.suite)],
                    "test_id": names[c.test_id],
                    "outcome": c.outcome,
                    "duration_sec": c.duration_sec,
                    "verdict": c.verdict,
                    "reruns": ",".join(c.reruns) or None,
                    "quarantined": c.quarantined,
                }
                for c in case_list
                if (c.cell, c.suite) in suite_ids
            ]
            if rows:
                conn.execute(insert(t.cases), rows)
        return len(rows)

    @staticmethod
    def _intern(conn: Connection, names: set[str]) -> dict[str, int]:
        """The id of every name, adding the new ones (a name another summary adds at the
        same moment is taken as it is: ON CONFLICT DO NOTHING, then read)."""
        from sqlalchemy import select
        from sqlalchemy.dialects import postgresql, sqlite

        from include.nightly_ci.history import tables as t

        def read(chunk: list[str]) -> dict[str, int]:
            query = select(t.tests.c.name, t.tests.c.id).where(t.tests.c.name.in_(chunk))
            return {name: id_ for name, id_ in conn.execute(query).tuples()}

        found: dict[str, int] = {}
        for chunk in _chunks(sorted(names)):
            found |= read(chunk)
        new = sorted(names - found.keys())
        if new:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            conn.execute(insert(t.tests).on_conflict_do_nothing(), [{"name": n} for n in new])
            for chunk in _chunks(new):
                found |= read(chunk)
        return found

    def recorded_runs(self, dag_id: str) -> set[str]:
        """The run ids of DAG_ID the store holds."""
        from sqlalchemy import select

        from include.nightly_ci.history import tables as t

        with self.begin("listing the recorded runs") as conn:
            return set(conn.execute(select(t.nights.c.run_id).where(t.nights.c.dag_id == dag_id)).scalars())

    # ------------------------------------------------------------ what tonight's rules need

    def _earlier_nights(
        self, conn: Connection, dag_id: str, kind: str, night: str, limit: int
    ) -> list[tuple[int, datetime]]:
        from sqlalchemy import select

        from include.nightly_ci.history import tables as t

        n = t.nights.c
        query = (
            select(n.id, n.night)
            .where(n.dag_id == dag_id, n.kind == kind, n.night < to_utc(night))
            .order_by(n.night.desc())
            .limit(limit)
        )
        return [(row.id, row.night) for row in conn.execute(query)]

    def previous_outcomes(
        self, dag_id: str, kind: str, night: str, keys: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], str]:
        """For each (cell, suite, test id) of KEYS: its outcome on the latest earlier night
        of DAG_ID and KIND on which that suite of that cell ran; absent: never seen there.
        A failure found flaky then reads "flaky": that night it did not fail for good, so
        tonight's failure is new, and rerun."""
        from sqlalchemy import select

        from include.nightly_ci.history import tables as t

        wanted = set(keys)
        if not wanted:
            return {}
        with self.begin("reading the nights before") as conn:
            nights = self._earlier_nights(conn, dag_id, kind, night, LOOKBACK_NIGHTS)
            order = {night_id: i for i, (night_id, _) in enumerate(nights)}
            pairs = {(cell, suite) for cell, suite, _ in wanted}
            latest: dict[tuple[str, str], tuple[int, int]] = {}  # (cell, suite) -> (night order, suite id)
            s = t.suites.c
            query = select(s.id, s.night_id, s.cell, s.suite).where(s.night_id.in_(list(order)), s.tests.is_not(None))
            for row in conn.execute(query):
                key = (row.cell, row.suite)
                if key in pairs and (key not in latest or order[row.night_id] < latest[key][0]):
                    latest[key] = (order[row.night_id], row.id)
            suite_of = {suite_id: key for key, (_, suite_id) in latest.items()}
            names = sorted({test for _, _, test in wanted})
            found = {}
            for chunk in _chunks(names):
                query = (
                    select(t.cases.c.suite_id, t.tests.c.name, t.cases.c.outcome, t.cases.c.verdict)
                    .join(t.tests, t.tests.c.id == t.cases.c.test_id)
                    .where(t.tests.c.name.in_(chunk), t.cases.c.suite_id.in_(list(suite_of)))
                )
                for case in conn.execute(query):
                    cell, suite = suite_of[case.suite_id]
                    if (cell, suite, case.name) in wanted:
                        found[(cell, suite, case.name)] = FLAKY if case.verdict == FLAKY else case.outcome
        return found

    def flaky_nights(self, dag_id: str, kind: str, night: str, names: Iterable[str], nights: int) -> dict[str, int]:
        """On how many of the NIGHTS nights before NIGHT each of NAMES was found flaky, in
        any cell or suite (tonight is the caller's: it is not written yet)."""
        from sqlalchemy import select

        from include.nightly_ci.history import tables as t

        names = sorted(set(names))
        if not names or nights < 1:
            return {}
        with self.begin("reading flaky nights") as conn:
            night_ids = [i for i, _ in self._earlier_nights(conn, dag_id, kind, night, nights)]
            seen: dict[str, set[int]] = {}
            for chunk in _chunks(names):
                query = (
                    select(t.tests.c.name, t.suites.c.night_id)
                    .select_from(t.cases.join(t.tests).join(t.suites))
                    .where(t.tests.c.name.in_(chunk), t.suites.c.night_id.in_(night_ids), t.cases.c.verdict == FLAKY)
                )
                for row in conn.execute(query):
                    seen.setdefault(row.name, set()).add(row.night_id)
        return {name: len(found) for name, found in seen.items()}

    def clean_nights(self, dag_id: str, kind: str, night: str, patterns: Iterable[str], limit: int) -> dict[str, int]:
        """For each pattern: the nights before NIGHT, newest first back to the first failure
        of a test it matches, on which a test it matches ran (within LIMIT nights). A night
        it did not run (a failed build) neither counts nor breaks the run."""
        from sqlalchemy import select

        from include.nightly_ci.history import tables as t

        patterns = sorted(set(patterns))
        if not patterns or limit < 1:
            return dict.fromkeys(patterns, 0)
        with self.begin("reading clean nights") as conn:
            nights = [i for i, _ in self._earlier_nights(conn, dag_id, kind, night, limit)]
            all_names = conn.execute(select(t.tests.c.id, t.tests.c.name)).tuples().all()
            matched = {p: {i for i, name in all_names if fnmatch.fnmatchcase(name, p)} for p in patterns}
            ids = sorted(set().union(*matched.values()))
            ran: dict[int, dict[int, bool]] = {n: {} for n in nights}  # night -> test id -> failed
            for chunk in _chunks(ids):
                query = (
                    select(t.suites.c.night_id, t.cases.c.test_id, t.cases.c.outcome)
                    .select_from(t.cases.join(t.suites))
                    .where(t.cases.c.test_id.in_(chunk), t.suites.c.night_id.in_(nights))
                )
                for row in conn.execute(query):
                    if row.outcome != "skipped":
                        per = ran[row.night_id]
                        per[row.test_id] = per.get(row.test_id, False) or row.outcome in BAD
        counts = {}
        for pattern, tests in matched.items():
            count = 0
            for night_id in nights:
                outcomes = [failed for test, failed in ran[night_id].items() if test in tests]
                if any(outcomes):
                    break
                count += bool(outcomes)
            counts[pattern] = count
        return counts

    # ------------------------------------------------------------ the quarantine

    def quarantine(self, dag_id: str, include_released: bool = False) -> list[QuarantineEntry]:
        from sqlalchemy import select

        from include.nightly_ci.history import tables as t

        q = t.quarantine.c
        query = select(t.quarantine).where(q.dag_id == dag_id).order_by(q.added, q.id)
        if not include_released:
            query = query.where(q.released.is_(None))
        with self.begin("reading the quarantine") as conn:
            rows = conn.execute(query).mappings().all()
        return [
            QuarantineEntry(
                pattern=r["pattern"],
                owner=r["owner"],
                reason=r["reason"],
                issue=r["issue"],
                expires=r["expires"],
                origin=r["origin"],
                added=iso_utc(r["added"]),
                released=iso_utc(r["released"]) if r["released"] else None,
                released_why=r["released_why"],
            )
            for r in rows
        ]

    def add_quarantine(self, dag_id: str, entries: Iterable[QuarantineEntry]) -> None:
        from sqlalchemy import insert

        from include.nightly_ci.history import tables as t

        rows = [
            {
                "dag_id": dag_id,
                "pattern": e.pattern,
                "origin": e.origin,
                "owner": e.owner,
                "reason": e.reason,
                "issue": e.issue,
                "expires": e.expires,
                "added": to_utc(e.added),
            }
            for e in entries
        ]
        if rows:
            with self.begin("adding to the quarantine") as conn:
                conn.execute(insert(t.quarantine), rows)

    def release_quarantine(self, dag_id: str, released: Iterable[QuarantineEntry]) -> None:
        """Mark each of RELEASED (pattern, origin, its released night and why) released."""
        from sqlalchemy import update

        from include.nightly_ci.history import tables as t

        q = t.quarantine.c
        with self.begin("releasing from the quarantine") as conn:
            for e in released:
                assert e.released is not None, e
                conn.execute(
                    update(t.quarantine)
                    .where(q.dag_id == dag_id, q.pattern == e.pattern, q.origin == e.origin, q.released.is_(None))
                    .values(released=to_utc(e.released), released_why=e.released_why)
                )


def _new_id(conn: Connection, statement: Any) -> int:
    """The primary key an INSERT of one row made."""
    key = conn.execute(statement).inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return int(key[0])


def same_night(a: str, b: str) -> bool:
    """Whether two ISO times are the same instant, whatever their zones' spelling."""
    return to_utc(a) == to_utc(b)
