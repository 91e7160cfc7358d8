"""What crosses into and out of the history store: plain frozen records, no SQLAlchemy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime


def to_utc(iso: str) -> datetime:
    """An ISO time as the store keeps it: UTC (a time without a zone is taken as UTC)."""
    when = datetime.fromisoformat(iso)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def iso_utc(when: datetime) -> str:
    """A time the store gave back, in ISO and UTC (SQLite gives it back without a zone)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


# A test case's outcome in one run of it (JUnit's words).
PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
BAD = (FAILED, ERROR)

# What a failed case is, once its reruns and its history are known.
FLAKY = "flaky"  # passed at least one rerun of the same image
REGRESSION = "regression"  # failed every rerun, and passed (or was absent) the night before
STILL_FAILING = "still_failing"  # failed the night before too
VERDICTS = (FLAKY, REGRESSION, STILL_FAILING)

# Where a quarantine entry came from.
FROM_CONFIG, FROM_FLAKES = "config", "auto"


@dataclass(frozen=True)
class NightRecord:
    """One run of the nightly, as the history knows it."""

    dag_id: str
    run_id: str
    night: str  # the logical date (ISO, UTC)
    kind: str  # nightly | manual (results.run_kind)
    commit: str | None = None
    run_url: str = ""
    success: bool | None = None  # the verdict, once the summary decided it


@dataclass(frozen=True)
class SuiteRecord:
    """One suite of one cell in one night: where and in what it ran, and how it ended."""

    cell: str
    suite: str
    task_id: str
    status: str  # the task's state: success | failed | skipped | upstream_failed | ...
    outcome: str | None = None  # the suite's: passed | failed | timeout | collected | ...
    failure_class: str | None = None
    image: str | None = None  # the image by digest (repo@sha256:...)
    host: str | None = None
    try_number: int | None = None
    tests: int | None = None  # cases run (or collected, in a dry run)
    duration_sec: float | None = None


@dataclass(frozen=True)
class CaseRecord:
    """One test case of one suite in one night, with its reruns' outcomes."""

    cell: str
    suite: str
    test_id: str  # JUnit's 'classname::name'
    outcome: str  # passed | failed | error | skipped
    duration_sec: float | None = None
    verdict: str | None = None  # for a failed case: flaky | regression | still_failing
    reruns: tuple[str, ...] = ()  # the outcomes of its reruns, in order
    quarantined: bool = False  # matched an active quarantine entry: recorded, does not gate


@dataclass(frozen=True)
class QuarantineEntry:
    """A test id pattern whose failures are recorded but do not make a night red."""

    pattern: str  # an fnmatch pattern over the test id
    owner: str
    reason: str
    issue: str = ""
    expires: date | None = None
    origin: str = FROM_CONFIG  # config | auto
    added: str = ""  # the night it was added (ISO)
    released: str | None = None  # the night it was released, and why
    released_why: str | None = None


@dataclass(frozen=True)
class NightHistory:
    """What tonight's rules need from the nights before (of the same DAG and kind)."""

    previous: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (cell, suite, test) -> outcome
    flaky_nights: dict[str, int] = field(default_factory=dict)  # test id -> nights flaky within the window
    clean_nights: dict[str, int] = field(default_factory=dict)  # pattern -> nights in a row without a failure
