"""The results of one nightly: the table and night over night, as frozen records.

Pure functions over plain data (task states, task records, JUnit test cases), so the
same code makes the summary under `airflow dags test`, under a scheduler, and in tests.
`Results.to_json()` is results.json; `Results.from_json()` reads it back (an older file too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from include.nightly_ci.names import run_kind
from include.nightly_ci.plan import Plan, is_selected
from include.nightly_ci.records import FAILING_STATES, UPSTREAM, TaskRecord
from include.nightly_ci.report.triage import Triage, passed

BAD_CASE = ("failed", "error")


@dataclass(frozen=True)
class Row:
    """One job of the table: a build, push or test task."""

    task_id: str
    job: str  # the name a person reads: "Build vllm (amd64)", "vllm-amd64-unit"
    kind: str  # build | push | test
    status: str
    runner: str = "N/A"
    duration_min: float | None = None
    log_url: str = ""
    artifacts_url: str = ""
    tests: dict[str, int] = field(default_factory=dict)
    failure_class: str | None = None
    failed_cases: tuple[str, ...] = ()
    muted: bool = False  # a suite failed only on flaky or quarantined cases: not red
    blocked_by: tuple[str, ...] = ()  # did not run: the failed tasks that stopped it (Plan.needs)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        lists = {k: tuple(known.get(k) or ()) for k in ("failed_cases", "blocked_by")}
        return cls(**{**known, **lists})

    @property
    def is_root_failure(self) -> bool:
        """Failed by itself (not upstream_failed), and red (not muted)."""
        return self.status == "failed" and not self.muted

    @property
    def ran(self) -> bool:
        return self.status in ("success", "failed", "skipped")


@dataclass(frozen=True)
class Change:
    """What changed since the previous night, for jobs or for test cases."""

    new_failures: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    still_failing: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(**{k: tuple(data.get(k) or ()) for k in ("new_failures", "fixed", "still_failing")})


@dataclass(frozen=True)
class NightOverNight:
    """The comparison with the previous completed nightly (none: nothing to compare with)."""

    previous_run_id: str | None = None
    previous_logical_date: str | None = None
    jobs: Change = Change()
    cases: Change = Change()
    # How many cases each list of `cases` had before it was cut for XCom (None: not cut).
    case_counts: dict[str, int] | None = None

    def case_count(self, key: str) -> int:
        return self.case_counts[key] if self.case_counts else len(getattr(self.cases, key))

    def to_json(self) -> dict[str, Any]:
        if self.previous_run_id is None:
            return {"previous": None}
        return {
            "previous": {"run_id": self.previous_run_id, "logical_date": self.previous_logical_date},
            "jobs": _plain(asdict(self.jobs)),
            "cases": _plain(asdict(self.cases)),
            **({"case_counts": dict(self.case_counts)} if self.case_counts else {}),
        }

    def cut(self, keep: int) -> NightOverNight:
        """At most KEEP test cases per list, with the full counts."""
        counts = {key: self.case_count(key) for key in ("new_failures", "fixed", "still_failing")}
        kept = Change(*(tuple(getattr(self.cases, key)[:keep]) for key in counts))
        return replace(self, cases=kept, case_counts=counts)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NightOverNight:
        previous = data.get("previous")
        if not previous:
            return cls()
        return cls(
            previous["run_id"],
            previous.get("logical_date"),
            Change.from_json(data.get("jobs") or {}),
            Change.from_json(data.get("cases") or {}),
            dict(data["case_counts"]) if data.get("case_counts") else None,
        )


SHOWN_CASES = 20  # test cases named per list (new, fixed, still failing); the rest are counted

Cases = dict[str, dict[str, str]]  # task id -> {test case -> passed|failed|error|skipped}


def _plain(value: Any) -> Any:
    """VALUE as JSON holds it: tuples become lists, so to_json() equals what a reader loads."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Results:
    """The results of one nightly: results.json, the summary's XCom, Slack's source."""

    dag_id: str
    run_id: str
    logical_date: str
    run_url: str
    rows: tuple[Row, ...] = ()
    cases: Cases = field(default_factory=dict)
    night_over_night: NightOverNight = NightOverNight()
    files: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # what the summary could not read, and skipped
    commit: str | None = None
    triage: Triage = field(default_factory=Triage)

    @property
    def passed(self) -> int:
        return sum(r.status == "success" for r in self.rows)

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def skipped(self) -> int:
        return sum(r.status == "skipped" for r in self.rows)

    @property
    def failed(self) -> int:
        """Jobs that failed by themselves: the night's root failures."""
        return len(self.root_failures)

    @property
    def muted(self) -> int:
        return sum(r.status == "failed" and r.muted for r in self.rows)

    @property
    def not_run(self) -> int:
        """Jobs that never ran: upstream_failed (a job they need failed), or no state at all."""
        return sum(not r.ran for r in self.rows)

    @property
    def root_failures(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.is_root_failure)

    @property
    def success(self) -> bool:
        """No job failed: a skipped one (a suite whose marker selects no test) is listed,
        not a failure (L4: it once posted "Failed" with no failed job), and a suite that
        failed only on flaky or quarantined cases is recorded, not red."""
        return passed(self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "logical_date": self.logical_date,
            "run_url": self.run_url,
            "passed": self.passed,
            "failed": self.failed,
            "not_run": self.not_run,
            "total": self.total,
            "success": self.success,
            "rows": [_plain(asdict(r)) for r in self.rows],
            "cases": self.cases,
            "night_over_night": self.night_over_night.to_json(),
            **({"files": self.files} if self.files else {}),
            **({"warnings": list(self.warnings)} if self.warnings else {}),
            "commit": self.commit,
            "triage": self.triage.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        return cls(
            dag_id=data.get("dag_id", ""),
            run_id=data["run_id"],
            logical_date=data["logical_date"],
            run_url=data.get("run_url", ""),
            rows=tuple(Row.from_json(r) for r in data.get("rows") or ()),
            cases=dict(data.get("cases") or {}),
            night_over_night=NightOverNight.from_json(data.get("night_over_night") or {}),
            files=dict(data.get("files") or {}),
            warnings=tuple(data.get("warnings") or ()),
            commit=data.get("commit"),
            triage=Triage.from_json(data.get("triage") or {}),
        )

    def with_files(self, files: dict[str, str]) -> Results:
        return replace(self, files=files)

    def for_xcom(self) -> dict[str, Any]:
        """What the verdict and Slack need, and where the whole is: not every test case of
        the night (megabytes a night in the metadata database and the execution API: L5).
        results.json in the store keeps everything."""
        rows = tuple(replace(r, failed_cases=()) for r in self.rows)
        short = replace(
            self,
            rows=rows,
            cases={},
            night_over_night=self.night_over_night.cut(SHOWN_CASES),
            triage=self.triage.cut(SHOWN_CASES),
        )
        return short.to_json()


def _blocked_by(task_id: str, needs: Mapping[str, tuple[str, ...]], states: Mapping[str, str]) -> tuple[str, ...]:
    """The failed tasks that kept TASK_ID from running: up its needs, through the tasks
    that did not run either, to the ones that failed."""
    found: list[str] = []
    todo, seen = list(needs.get(task_id, ())), set()
    while todo:
        up = todo.pop(0)
        if up in seen:
            continue
        seen.add(up)
        if states.get(up) == "failed":
            found.append(up)
        elif states.get(up) == "upstream_failed":
            todo += needs.get(up, ())
    return tuple(found)


def _row(task_id: str, job: str, kind: str, status: str, rec: TaskRecord | None, extra: dict[str, Any]) -> Row:
    failure = None
    if status == "upstream_failed":
        failure = UPSTREAM
    elif status == "failed":
        failure = (rec.failure_class if rec else None) or "infra"  # died without a record
    if rec is None:
        return Row(task_id, job, kind, status, failure_class=failure, **extra)
    return Row(
        task_id,
        job,
        kind,
        status,
        runner=f"{rec.pool or '?'} @ {rec.host or '?'}",
        duration_min=round(rec.duration_sec / 60, 1),
        tests=dict(rec.counts or {}),
        failure_class=failure,
        **extra,
    )


def build_rows(
    plan: Plan,
    states: Mapping[str, str],
    records: Mapping[str, TaskRecord],
    cases: Cases,
    log_url: Callable[[str, int | None], str],
    artifacts_url: Callable[[str], str],
    selected: tuple[list[str], list[str]] | None = None,
) -> list[Row]:
    """One row per build, push and test task, by framework, arch and stage, for the cells
    the run's Params selected (SELECTED: frameworks, arches; None: all)."""
    rows = []
    resolve = plan.resolve.task_id
    if states.get(resolve) in FAILING_STATES:  # why every cell's row below says upstream (H6)
        rec = records.get(resolve)
        links = {"log_url": log_url(resolve, rec.try_number), "artifacts_url": ""} if rec else {}
        rows.append(_row(resolve, plan.resolve.display_name, "source", states[resolve], rec, links))
    for cell in plan.cells:
        if selected and not is_selected(cell.framework, cell.arch, *selected):
            continue
        for task in cell.tasks():
            rec = records.get(task.task_id)
            status = states.get(task.task_id) or (rec.state if rec else None) or "none"
            extra: dict[str, Any] = {
                "failed_cases": tuple(sorted(c for c, s in cases.get(task.task_id, {}).items() if s in BAD_CASE))
            }
            if status == "upstream_failed":
                extra["blocked_by"] = _blocked_by(task.task_id, plan.needs, states)
            if rec is not None:
                extra |= {
                    "log_url": log_url(task.task_id, rec.try_number),
                    "artifacts_url": artifacts_url(task.task_id),
                }
            rows.append(_row(task.task_id, task.display_name, task.stage, status, rec, extra))
    return rows


def _bad_cases(cases: Cases, statuses: Iterable[str] = BAD_CASE) -> set[str]:
    return {f"{t}::{c}" for t, cs in cases.items() for c, s in cs.items() if s in statuses}


def compare(now: list[Row], now_cases: Cases, before: Results | None) -> NightOverNight:
    """New failures, fixed and still failing, per job and per test case, against BEFORE
    (the previous completed nightly's results). A job counts when it failed by itself: one
    that did not run (upstream_failed) is neither failing nor fixed, so 14 jobs after a
    broken build no longer bury it among the night's new failures."""
    if before is None:
        return NightOverNight()
    was_failing = {r.task_id for r in before.rows if r.status == "failed"}
    was_case = _bad_cases(before.cases)
    is_failing = {r.task_id for r in now if r.status == "failed"}
    passing = {r.task_id for r in now if r.status == "success"}
    is_case = _bad_cases(now_cases)
    passing_case = _bad_cases(now_cases, ("passed",))
    return NightOverNight(
        previous_run_id=before.run_id,
        previous_logical_date=before.logical_date,
        jobs=Change(
            tuple(sorted(is_failing - was_failing)),
            tuple(sorted(was_failing & passing)),
            tuple(sorted(is_failing & was_failing)),
        ),
        cases=Change(
            tuple(sorted(is_case - was_case)), tuple(sorted(was_case & passing_case)), tuple(sorted(is_case & was_case))
        ),
    )


def cells_of(rows: Iterable[Row]) -> set[str]:
    return {r.task_id.split(".")[0] for r in rows}


def previous_results(
    candidates: Iterable[Results], *, dag_id: str, run_id: str, logical_date: str, cells: set[str]
) -> Results | None:
    """The baseline of night over night: the run just before LOGICAL_DATE (by logical
    date: a backfilled older night compares with the night before it) of the same DAG and
    kind that covered every cell of this one. A two-cell manual run or another DAG's run
    sharing the store once became the nightly's baseline (M9)."""
    kind = run_kind(run_id)
    older = [
        c
        for c in candidates
        if c.logical_date < logical_date
        and c.dag_id == dag_id
        and run_kind(c.run_id) == kind
        and cells <= cells_of(c.rows)
    ]
    return max(older, key=lambda c: c.logical_date, default=None)


def summarize(
    plan: Plan,
    run_id: str,
    logical_date: str,
    run_url: str,
    rows: list[Row],
    cases: Cases,
    before: Results | None,
    warnings: Iterable[str] = (),
    triage: Triage | None = None,
    commit: str | None = None,
) -> Results:
    return Results(
        dag_id=plan.dag_id,
        run_id=run_id,
        logical_date=logical_date,
        run_url=run_url,
        rows=tuple(rows),
        cases=cases,
        night_over_night=compare(rows, cases, before),
        warnings=tuple(warnings),
        commit=commit,
        triage=triage or Triage(),
    )
