"""The results of one nightly: the table, night over night, and the Slack message.

Pure functions over plain data (task states, task records, JUnit test cases), so the
same code makes the summary under `airflow dags test`, under a scheduler, and in tests.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from include.nightly_ci.plan import Cell, Plan, TestJob
from include.nightly_ci.task_records import UPSTREAM

FAILING_STATES = {"failed", "upstream_failed"}


@dataclass
class Row:
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
    failed_cases: list[str] = field(default_factory=list)


def _job_names(cell: Cell) -> list[tuple[str, str, str]]:
    """(task id, job name, kind) for every build, push and test task of CELL, in order."""
    fw, arch, g = cell.framework, cell.arch, cell.group_id
    jobs = [(f"{g}.build_framework", f"{fw}-framework ({arch})", "build")]
    jobs += [
        (f"{g}.{p.task_id}", f"Push {fw}-framework ({arch}) to {p.registry}", "push") for p in cell.framework_pushes
    ]
    jobs.append((f"{g}.build_runtime", f"Build {fw} ({arch})", "build"))
    jobs += [(f"{g}.{p.task_id}", f"Push {fw} ({arch}) to {p.registry}", "push") for p in cell.runtime_pushes]
    jobs += [(f"{g}.tests.{j.suite}", _test_job_name(cell, j), "test") for j in cell.tests]
    return jobs


def _test_job_name(cell: Cell, job: TestJob) -> str:
    return f"{cell.framework}-{cell.arch}-{job.suite}" + (" (collect only)" if job.mode == "collect" else "")


def junit_cases(xml_text: str) -> dict[str, str]:
    """Every test case of a JUnit report: 'classname::name' -> passed|failed|error|skipped."""
    cases = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        status = "passed"
        for child, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if case.find(child) is not None:
                status = name
                break
        cases[f"{case.get('classname', '')}::{case.get('name', '')}"] = status
    return cases


def build_rows(
    plan: Plan,
    states: dict[str, str],
    records: dict[str, dict[str, Any]],
    cases: dict[str, dict[str, str]],
    log_url: Callable[[str, int | None], str],
    artifacts_url: Callable[[str], str],
    selected: tuple[list[str], list[str]] | None = None,
) -> list[Row]:
    """One row per build, push and test task, by framework, arch and stage, for the cells
    the run's Params selected (SELECTED: frameworks, arches; None: all)."""
    rows = []
    for cell in plan.cells:
        if selected and (cell.framework not in selected[0] or cell.arch not in selected[1]):
            continue
        for task_id, job, kind in _job_names(cell):
            rec = records.get(task_id, {})
            status = states.get(task_id) or rec.get("state") or "none"
            row = Row(task_id, job, kind, status)
            if rec:
                row.runner = f"{rec.get('pool', '?')} @ {rec.get('host', '?')}"
                row.duration_min = round(rec["duration_sec"] / 60, 1)
                row.log_url = log_url(task_id, rec.get("try_number"))
                row.artifacts_url = artifacts_url(task_id)
                row.tests = dict(rec.get("counts") or {})
            if status == "upstream_failed":
                row.failure_class = UPSTREAM
            elif status == "failed":
                row.failure_class = rec.get("failure_class") or "infra"  # died without a record
            row.failed_cases = sorted(c for c, s in cases.get(task_id, {}).items() if s in ("failed", "error"))
            rows.append(row)
    return rows


def compare(now: list[Row], now_cases: dict[str, dict[str, str]], before: dict[str, Any] | None) -> dict[str, Any]:
    """New failures, fixed and still failing, per job and per test case, against BEFORE
    (the previous completed nightly's results.json)."""
    if before is None:
        return {"previous": None}
    was_failing = {r["task_id"] for r in before["rows"] if r["status"] in FAILING_STATES}
    was_case = {
        f"{t}::{c}" for t, cs in before.get("cases", {}).items() for c, s in cs.items() if s in ("failed", "error")
    }
    is_failing = {r.task_id for r in now if r.status in FAILING_STATES}
    passing = {r.task_id for r in now if r.status == "success"}
    is_case = {f"{t}::{c}" for t, cs in now_cases.items() for c, s in cs.items() if s in ("failed", "error")}
    passing_case = {f"{t}::{c}" for t, cs in now_cases.items() for c, s in cs.items() if s == "passed"}
    return {
        "previous": {"run_id": before["run_id"], "logical_date": before["logical_date"]},
        "jobs": {
            "new_failures": sorted(is_failing - was_failing),
            "fixed": sorted(was_failing & passing),
            "still_failing": sorted(is_failing & was_failing),
        },
        "cases": {
            "new_failures": sorted(is_case - was_case),
            "fixed": sorted(was_case & passing_case),
            "still_failing": sorted(is_case & was_case),
        },
    }


def previous_results(candidates: list[dict[str, Any]], logical_date: str) -> dict[str, Any] | None:
    """The completed nightly just before LOGICAL_DATE, by logical date: a backfilled older
    night compares with the night before it, not with the newest run."""
    older = [c for c in candidates if c["logical_date"] < logical_date]
    return max(older, key=lambda c: c["logical_date"], default=None)


def summarize(
    plan: Plan, run_id: str, logical_date: str, run_url: str, rows: list[Row],
    cases: dict[str, dict[str, str]], before: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    passed = sum(r.status == "success" for r in rows)
    return {
        "dag_id": plan.dag_id,
        "run_id": run_id,
        "logical_date": logical_date,
        "run_url": run_url,
        "passed": passed,
        "total": len(rows),
        "success": passed == len(rows),
        "rows": [asdict(r) for r in rows],
        "cases": cases,
        "night_over_night": compare(rows, cases, before),
    }


def _tests_cell(row: dict[str, Any]) -> str:
    t = row["tests"]
    if "collected" in t:
        return f"{t['collected']} collected"
    if not t:
        return "N/A"
    return f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped, {t['errors']} errors"


def _link_cell(row: dict[str, Any]) -> str:
    if not row["log_url"]:
        return "N/A"
    return f"[Log]({row['log_url']}) · [Artifacts]({row['artifacts_url']})"


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Nightly CI Results Summary",
        "",
        f"Run `{results['run_id']}` (logical date {results['logical_date']}): "
        f"**Summary: {results['passed']}/{results['total']} jobs passed** · [View run]({results['run_url']})",
        "",
        "| Stage | Status | Runner | Duration (min) | Artifacts | Tests | Failure |",
        "|-------|--------|--------|----------------|-----------|-------|---------|",
    ]
    for r in results["rows"]:
        duration = "N/A" if r["duration_min"] is None else f"{r['duration_min']:.1f}"
        tests = _tests_cell(r) if r["kind"] == "test" else ""
        lines.append(
            f"| {r['job']} | {r['status']} | {r['runner']} | {duration} | {_link_cell(r)} | {tests} | "
            f"{r['failure_class'] or ''} |"
        )
    lines += ["", *night_over_night_lines(results, markdown=True)]
    return "\n".join(lines) + "\n"


def night_over_night_lines(results: dict[str, Any], markdown: bool = False) -> list[str]:
    non = results["night_over_night"]
    if not non.get("previous"):
        return ["No previous completed nightly to compare with."]
    jobs = {r["task_id"]: r["job"] for r in results["rows"]}
    head = "## " if markdown else "*"
    tail = "" if markdown else "*"
    lines = [f"{head}Since the nightly of {non['previous']['logical_date']}{tail}"]
    for key, label in (("new_failures", "New failures"), ("fixed", "Fixed"), ("still_failing", "Still failing")):
        names = [jobs.get(t, t) for t in non["jobs"][key]]
        cases = non["cases"][key]
        lines.append(f"- {label}: {len(names)} jobs{': ' + ', '.join(names) if names else ''}; {len(cases)} test cases")
        lines += [f"  - `{c}`" if markdown else f"    • {c}" for c in cases[:20]]
    return lines


def changed(results: dict[str, Any]) -> bool:
    non = results["night_over_night"]
    if not non.get("previous"):
        return not results["success"]
    return any(non[k]["new_failures"] or non[k]["fixed"] for k in ("jobs", "cases"))


def should_post(results: dict[str, Any], when: str) -> bool:
    return when == "always" or (when == "failure" and not results["success"]) or (when == "change" and changed(results))


def slack_message(results: dict[str, Any], ops_group_id: str | None) -> dict[str, Any]:
    """The original's message (section 9): title, 'Summary: S/T jobs passed', run link;
    on failure the failed jobs and a mention of the ops group; plus night over night."""
    ok = results["success"]
    title = "*Nightly CI Pipeline - Success ✅*" if ok else "*Nightly CI Pipeline - Failed ❌*"
    summary = f"Summary: {results['passed']}/{results['total']} jobs passed"
    text = f"{title}\n{summary}\n<{results['run_url']}|View Workflow Summary>"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if not ok:
        failed = [r["job"] for r in results["rows"] if r["status"] in FAILING_STATES]
        bullets = "\n".join(f"• {name}" for name in failed)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Failed Jobs ({len(failed)}):*\n{bullets}"}}
        )
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(night_over_night_lines(results))}})
    if not ok:
        mention = f"<!subteam^{ops_group_id}|@ops-support>" if ops_group_id else "@ops-support"
        blocks.append({"type": "divider"})
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f":rotating_light: cc {mention} - Please investigate the failures above."}
        ]})  # fmt: skip
    return {"text": text, "blocks": blocks}
