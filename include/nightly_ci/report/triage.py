"""Tonight's failed test cases told apart, with the history store: flaky (a rerun of the
same image passed), regression or still failing; what the quarantine muted, and its news
(added, released, expired); and suites whose test count fell.

The night is written to the history store here, after its rules ran, in one transaction
that replaces any earlier write of the same run. With no store (none configured, or
down), the same rules run against the previous night's results.json and the config's
quarantine, and the night can be brought in later with `history import`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from include.nightly_ci.history import rules
from include.nightly_ci.history.records import (
    BAD,
    FLAKY,
    FROM_CONFIG,
    VERDICTS,
    CaseRecord,
    NightRecord,
    QuarantineEntry,
    SuiteRecord,
)
from include.nightly_ci.plan import Plan
from include.nightly_ci.records import FAILING_STATES, TaskRecord

if TYPE_CHECKING:
    from include.nightly_ci.history.store import HistoryStore
    from include.nightly_ci.report.results import Results, Row

QUARANTINED = "quarantined"
Reruns = dict[tuple[str, str], tuple[str, ...]]  # (task id, test id) -> the reruns' outcomes
Durations = dict[str, dict[str, float]]  # task id -> test id -> seconds


def case_key(task_id: str, test: str) -> str:
    """How the results name one case of one suite (as night over night does)."""
    return f"{task_id}::{test}"


def entry_json(entry: QuarantineEntry) -> dict[str, Any]:
    data = asdict(entry)
    data["expires"] = entry.expires.isoformat() if entry.expires else None
    return data


def entry_from_json(data: Mapping[str, Any]) -> QuarantineEntry:
    known = {k: v for k, v in data.items() if k in QuarantineEntry.__dataclass_fields__}
    expires = known.get("expires")
    return QuarantineEntry(**{**known, "expires": date.fromisoformat(expires) if expires else None})


@dataclass(frozen=True)
class Triage:
    """What the failed cases of the night are, and what the quarantine did."""

    verdicts: dict[str, str] = field(default_factory=dict)  # case key -> flaky | regression | still_failing
    reruns: dict[str, list[str]] = field(default_factory=dict)  # case key -> the reruns' outcomes
    quarantined: dict[str, str] = field(default_factory=dict)  # case key -> the pattern that muted it
    drift: tuple[rules.Drift, ...] = ()
    added: tuple[QuarantineEntry, ...] = ()
    released: tuple[QuarantineEntry, ...] = ()
    expired: tuple[QuarantineEntry, ...] = ()
    history: str = ""  # where the night was recorded, or why it was not
    counts: dict[str, int] | None = None  # before cut(): cases per verdict, and "quarantined"

    def of(self, verdict: str) -> list[str]:
        return sorted(k for k, v in self.verdicts.items() if v == verdict)

    def count(self, what: str) -> int:
        """Cases of a verdict (or "quarantined"), as many as there were before cut()."""
        if self.counts is not None:
            return self.counts.get(what, 0)
        return len(self.quarantined) if what == QUARANTINED else len(self.of(what))

    def cut(self, keep: int) -> Triage:
        """At most KEEP cases per verdict and of the muted ones, with the full counts (XCom)."""
        kept = {k for verdict in VERDICTS for k in self.of(verdict)[:keep]}
        muted = dict(sorted(self.quarantined.items())[:keep])
        return replace(
            self,
            verdicts={k: v for k, v in self.verdicts.items() if k in kept},
            reruns={k: v for k, v in self.reruns.items() if k in kept},
            quarantined=muted,
            counts={what: self.count(what) for what in (*VERDICTS, QUARANTINED)},
        )

    def muted(self, key: str) -> bool:
        """Whether a failed case does not make the night red: flaky, or quarantined."""
        return self.verdicts.get(key) == FLAKY or key in self.quarantined

    def to_json(self) -> dict[str, Any]:
        return {
            "verdicts": dict(self.verdicts),
            "reruns": {k: list(v) for k, v in self.reruns.items()},
            "quarantined": dict(self.quarantined),
            "drift": [asdict(d) for d in self.drift],
            "quarantine": {
                "added": [entry_json(e) for e in self.added],
                "released": [entry_json(e) for e in self.released],
                "expired": [entry_json(e) for e in self.expired],
            },
            "history": self.history,
            **({"counts": dict(self.counts)} if self.counts is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Triage:
        news = data.get("quarantine") or {}
        return cls(
            verdicts=dict(data.get("verdicts") or {}),
            reruns={k: list(v) for k, v in (data.get("reruns") or {}).items()},
            quarantined=dict(data.get("quarantined") or {}),
            drift=tuple(rules.Drift(**d) for d in data.get("drift") or ()),
            added=tuple(entry_from_json(e) for e in news.get("added") or ()),
            released=tuple(entry_from_json(e) for e in news.get("released") or ()),
            expired=tuple(entry_from_json(e) for e in news.get("expired") or ()),
            history=str(data.get("history") or ""),
            counts=dict(data["counts"]) if data.get("counts") is not None else None,
        )


def test_counts(rows: tuple[Row, ...] | list[Row]) -> dict[str, int]:
    """Each test row's count: cases run, or collected in a dry run."""
    found = {}
    for r in rows:
        count = r.tests.get("tests", r.tests.get("collected"))
        if r.kind == "test" and count is not None:
            found[r.task_id] = int(count)
    return found


def configured(plan: Plan) -> list[QuarantineEntry]:
    return [
        QuarantineEntry(q.pattern, q.owner, q.reason, q.issue, q.expires, FROM_CONFIG) for q in plan.history.quarantine
    ]


@dataclass(frozen=True)
class Night:
    """Everything the summary read of one run, for the rules and the history store."""

    plan: Plan
    record: NightRecord
    rows: tuple[Row, ...]
    records: Mapping[str, TaskRecord]
    cases: Mapping[str, Mapping[str, str]]
    durations: Durations
    reruns: Reruns

    def failed(self) -> dict[tuple[str, str, str], tuple[str, str]]:
        """(cell, suite, test) -> (task id, test) of every failed case of a suite."""
        where = self.plan.suites
        return {
            (*where[task_id], test): (task_id, test)
            for task_id, outcomes in self.cases.items()
            if task_id in where
            for test, outcome in outcomes.items()
            if outcome in BAD
        }


def _previous_from(before: Results | None, plan: Plan) -> dict[tuple[str, str, str], str]:
    """The night before's outcomes from its results.json, when there is no history store."""
    if before is None:
        return {}
    where, verdicts = plan.suites, before.triage.verdicts
    return {
        (*where[task_id], test): FLAKY if verdicts.get(case_key(task_id, test)) == FLAKY else outcome
        for task_id, outcomes in before.cases.items()
        if task_id in where
        for test, outcome in outcomes.items()
    }


def decide(
    night: Night,
    previous: Mapping[tuple[str, str, str], str],
    active: list[QuarantineEntry],
    before: Results | None,
) -> Triage:
    """Verdicts, muting and drift: the rules, without the store."""
    verdicts, reruns, quarantined = {}, {}, {}
    when = night.record.night
    for where, (task_id, test) in night.failed().items():
        key = case_key(task_id, test)
        tries = night.reruns.get((task_id, test), ())
        verdicts[key] = rules.verdict(tries, previous.get(where))
        if tries:
            reruns[key] = list(tries)
        entry = rules.muting(test, active, when)
        if entry is not None:
            quarantined[key] = entry.pattern
    drift = rules.drift(
        test_counts(night.rows), test_counts(before.rows) if before else {}, night.plan.history.drift_share
    )
    return Triage(verdicts=verdicts, reruns=reruns, quarantined=quarantined, drift=drift)


def without_store(night: Night, before: Results | None, why: str) -> Triage:
    """The rules against the night before's results.json and the config's quarantine."""
    active = [e for e in configured(night.plan) if rules.is_active(e, night.record.night)]
    decided = decide(night, _previous_from(before, night.plan), active, before)
    expired = tuple(e for e in configured(night.plan) if not rules.is_active(e, night.record.night))
    return replace(decided, expired=expired, history=why)


def with_store(night: Night, store: HistoryStore, before: Results | None, log: Callable[[str], None]) -> Triage:
    """The rules with the history store, the night written, the quarantine updated."""
    plan, rec, h = night.plan, night.record, night.plan.history
    store.migrate()
    failed = night.failed()
    previous = store.previous_outcomes(rec.dag_id, rec.kind, rec.night, failed)
    stored = store.quarantine(rec.dag_id, include_released=True)
    config = rules.config_changes(configured(plan), stored, rec.night)
    active = [e for e in stored if e.released is None and not _in(e, config.released)] + list(config.added)
    active = [e for e in active if rules.is_active(e, rec.night)]
    decided = decide(night, previous, active, before)
    # Tonight counts as one flaky night; the store knows the nights before it.
    flaky = {test for where, (task_id, test) in failed.items() if decided.verdicts[case_key(task_id, test)] == FLAKY}
    counts = store.flaky_nights(rec.dag_id, rec.kind, rec.night, flaky, h.window_nights - 1)
    auto = rules.flaky_entries(
        {test: counts.get(test, 0) + 1 for test in flaky},
        active,
        nights=h.flaky_nights,
        window=h.window_nights,
        owner=h.auto_owner or _ops_group(plan.slack.ops_group_id),
        night=rec.night,
    )
    clean = _clean_counts(night, store, active)
    releases = rules.clean_releases(active, clean, after=h.release_after_clean_nights, night=rec.night)
    rec = replace(rec, success=passed(mute(night.rows, decided)))
    written = store.write_night(rec, suite_records(night), case_records(night, decided))
    store.add_quarantine(rec.dag_id, [*config.added, *auto])
    store.release_quarantine(rec.dag_id, [*config.released, *releases])
    log(f"History: {written} test cases of {rec.run_id} recorded; quarantine +{len(config.added) + len(auto)}")
    return replace(decided, history="recorded", **_news(store, rec, config.expired))


def _ops_group(group_id: str | None) -> str:
    """The Slack ops group as a mention Slack renders (as the failure message names it)."""
    return f"<!subteam^{group_id}|@ops-support>" if group_id else "@ops-support"


def _in(entry: QuarantineEntry, entries: tuple[QuarantineEntry, ...]) -> bool:
    return any(e.pattern == entry.pattern and e.origin == entry.origin for e in entries)


def _clean_counts(night: Night, store: HistoryStore, active: list[QuarantineEntry]) -> dict[str, int]:
    """Clean nights in a row of each active entry, tonight included (tonight is not written yet)."""
    import fnmatch

    rec, limit = night.record, night.plan.history.release_after_clean_nights
    earlier = store.clean_nights(rec.dag_id, rec.kind, rec.night, [e.pattern for e in active], limit - 1)
    counts = {}
    tonight = [(test, o) for outcomes in night.cases.values() for test, o in outcomes.items() if o != "skipped"]
    for e in active:
        ran = [o for test, o in tonight if fnmatch.fnmatchcase(test, e.pattern)]
        if any(o in BAD for o in ran):
            counts[e.pattern] = 0
        else:
            counts[e.pattern] = earlier.get(e.pattern, 0) + bool(ran)
    return counts


def _news(store: HistoryStore, rec: NightRecord, expired: tuple[QuarantineEntry, ...]) -> dict[str, Any]:
    """Tonight's additions and releases as the store holds them: a re-run of the same
    summary tells the same news."""
    from include.nightly_ci.history.store import same_night

    every = store.quarantine(rec.dag_id, include_released=True)
    return {
        "added": tuple(e for e in every if same_night(e.added, rec.night)),
        "released": tuple(e for e in every if e.released and same_night(e.released, rec.night)),
        "expired": expired,
    }


def _all_muted(row: Row, triage: Triage) -> bool:
    """A suite that failed only on flaky or quarantined cases: recorded, not red."""
    return (
        row.kind == "test"
        and row.status == "failed"
        and row.failure_class == "test"
        and bool(row.failed_cases)
        and all(triage.muted(case_key(row.task_id, c)) for c in row.failed_cases)
    )


def mute(rows: tuple[Row, ...] | list[Row], triage: Triage) -> list[Row]:
    """ROWS, each suite that failed only on muted cases marked so."""
    return [replace(r, muted=True) if _all_muted(r, triage) else r for r in rows]


def passed(rows: tuple[Row, ...] | list[Row]) -> bool:
    """The night's verdict: no job failed, but for suites failed only on muted cases."""
    return not any(r.status in FAILING_STATES and not r.muted for r in rows)


def suite_records(night: Night) -> list[SuiteRecord]:
    where = night.plan.suites
    found = []
    for row in night.rows:
        if row.task_id not in where:
            continue
        cell, suite = where[row.task_id]
        rec = night.records.get(row.task_id)
        found.append(
            SuiteRecord(
                cell=cell,
                suite=suite,
                task_id=row.task_id,
                status=row.status,
                outcome=rec.outcome if rec else None,
                failure_class=row.failure_class,
                image=rec.image if rec else None,
                host=rec.host if rec else None,
                try_number=rec.try_number if rec else None,
                tests=test_counts([row]).get(row.task_id),  # None: it did not run
                duration_sec=rec.duration_sec if rec else None,
            )
        )
    return found


def case_records(night: Night, triage: Triage) -> list[CaseRecord]:
    where = night.plan.suites
    return [
        CaseRecord(
            cell=where[task_id][0],
            suite=where[task_id][1],
            test_id=test,
            outcome=outcome,
            duration_sec=night.durations.get(task_id, {}).get(test),
            verdict=triage.verdicts.get(case_key(task_id, test)),
            reruns=tuple(triage.reruns.get(case_key(task_id, test), ())),
            quarantined=case_key(task_id, test) in triage.quarantined,
        )
        for task_id, outcomes in night.cases.items()
        if task_id in where
        for test, outcome in outcomes.items()
    ]
