"""The results table as Markdown (results.md, the summary's log), and the night-over-night
and triage lines Slack shares."""

from __future__ import annotations

from collections import Counter

from include.nightly_ci.history.records import FLAKY, REGRESSION, STILL_FAILING
from include.nightly_ci.report.results import SHOWN_CASES, Results, Row
from include.nightly_ci.report.triage import QUARANTINED


def headline(results: Results) -> str:
    """'S/T jobs passed' (the original's words), then what the other jobs did, each
    counted once: failed, failed only on muted cases, not run, skipped."""
    parts = [f"{results.passed}/{results.total} jobs passed"]
    for count, what in (
        (results.failed, "failed"),
        (results.muted, "failed only on flaky or quarantined cases"),
        (results.not_run, "not run"),
        (results.skipped, "skipped"),
    ):
        parts += [f"{count} {what}"] if count else []
    return ", ".join(parts)


# What stopped a job that did not run, by the stage of the failures it waited for.
_STOPPED_BY = {
    "source": "the source commit was not resolved",
    "build": "their build failed",
    "push": "the push they wait for failed",
}


def _stopped_by(row: Row, rows: dict[str, Row]) -> str:
    stages = sorted({rows[t].kind for t in row.blocked_by if t in rows})
    if not stages:
        return "never started" if row.status != "upstream_failed" else "a job they need failed"
    return " / ".join(_STOPPED_BY.get(stage, f"a {stage} job failed") for stage in stages)


def not_run_line(results: Results) -> str:
    """The jobs that did not run, on one line, by what stopped them ('14 jobs not run:
    their build failed'); '' when every job ran."""
    rows = {r.task_id: r for r in results.rows}
    why = Counter(_stopped_by(r, rows) for r in results.rows if not r.ran)
    total = sum(why.values())
    if not total:
        return ""
    head = f"{total} {'job' if total == 1 else 'jobs'} not run"
    if len(why) == 1:
        return f"{head}: {next(iter(why))}"
    return f"{head} ({'; '.join(f'{n}: {cause}' for cause, n in why.most_common())})"


def root_failure_lines(results: Results) -> list[str]:
    """The jobs that failed by themselves, each with its failure class."""
    return [f"{r.job} ({r.failure_class})" for r in results.root_failures]


def verdict_text(results: Results) -> str:
    """Why the night is red, in one line: the headline, the root failures with their
    failure class, and what did not run."""
    failed = ", ".join(root_failure_lines(results))
    return "; ".join(p for p in (headline(results), f"failed: {failed}" if failed else "", not_run_line(results)) if p)


def _tests_cell(row: Row) -> str:
    t = row.tests
    if "collected" in t:
        return f"{t['collected']} collected"
    if not t:
        return "N/A"
    return f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped, {t['errors']} errors"


def _link_cell(row: Row) -> str:
    if not row.log_url:
        return "N/A"
    return f"[Log]({row.log_url}) · [Artifacts]({row.artifacts_url})"


def to_markdown(results: Results) -> str:
    lines = [
        "# Nightly CI Results Summary",
        "",
        f"Run `{results.run_id}` (logical date {results.logical_date}): "
        f"**Summary: {headline(results)}** · [View run]({results.run_url})",
        "",
        *(
            ["**Warnings** (read around, not lost):", *(f"- {w}" for w in results.warnings), ""]
            if results.warnings
            else []
        ),
        "| Stage | Status | Runner | Duration (min) | Artifacts | Tests | Failure |",
        "|-------|--------|--------|----------------|-----------|-------|---------|",
    ]
    jobs = {r.task_id: r.job for r in results.rows}
    for r in results.rows:
        failure = r.failure_class or ""
        if r.blocked_by:  # upstream: and which failure stopped it
            failure += ": " + ", ".join(jobs.get(t, t) for t in r.blocked_by)
        duration = "N/A" if r.duration_min is None else f"{r.duration_min:.1f}"
        tests = _tests_cell(r) if r.kind == "test" else ""
        status = f"{r.status} (flaky or quarantined cases only)" if r.muted else r.status
        lines.append(f"| {r.job} | {status} | {r.runner} | {duration} | {_link_cell(r)} | {tests} | {failure} |")
    lines += ["", *night_over_night_lines(results, markdown=True)]
    triage = triage_lines(results, markdown=True)
    lines += ["", *triage] if triage else []
    return "\n".join(lines) + "\n"


def night_over_night_lines(results: Results, markdown: bool = False) -> list[str]:
    non = results.night_over_night
    if non.previous_run_id is None:
        return ["No previous completed nightly to compare with."]
    jobs = {r.task_id: r.job for r in results.rows}
    head = "## " if markdown else "*"
    tail = "" if markdown else "*"
    lines = [f"{head}Since the nightly of {non.previous_logical_date}{tail}"]
    for key, label in (("new_failures", "New failures"), ("fixed", "Fixed"), ("still_failing", "Still failing")):
        names = [jobs.get(t, t) for t in getattr(non.jobs, key)]
        cases = getattr(non.cases, key)
        count = non.case_count(key)
        lines.append(f"- {label}: {len(names)} jobs{': ' + ', '.join(names) if names else ''}; {count} test cases")
        lines += [f"  - `{c}`" if markdown else f"    • {c}" for c in cases[:SHOWN_CASES]]
    return lines


_LABELS = (
    (REGRESSION, "Regressions (failed every rerun; passed the night before)"),
    (STILL_FAILING, "Still failing"),
    (FLAKY, "Flaky (passed a rerun of the same image; not red)"),
)


def _case(results: Results, key: str, markdown: bool) -> str:
    """One case of the night as a reader sees it: its job, its test id, its reruns."""
    jobs = {r.task_id: r.job for r in results.rows}
    task_id, _, test = key.partition("::")
    reruns = results.triage.reruns.get(key)
    tail = f" (reruns: {', '.join(reruns)})" if reruns else ""
    pattern = results.triage.quarantined.get(key)
    tail += f" (quarantined by `{pattern}`)" if pattern else ""
    return (
        f"  - {jobs.get(task_id, task_id)}: `{test}`{tail}"
        if markdown
        else f"    • {jobs.get(task_id, task_id)}: {test}{tail}"
    )


def triage_lines(results: Results, markdown: bool = False) -> list[str]:
    """Regressions, still failing, flaky and quarantined cases, test-count drift and the
    quarantine's news (its owners named); nothing when there is nothing to say."""
    t = results.triage
    item = "- " if markdown else "• "
    lines: list[str] = []
    for verdict, label in _LABELS:
        if t.count(verdict):
            lines.append(f"{item}{label}: {t.count(verdict)} test cases")
            lines += [_case(results, k, markdown) for k in t.of(verdict)[:SHOWN_CASES]]
    if t.count(QUARANTINED):
        lines.append(f"{item}Quarantined (recorded, not red): {t.count(QUARANTINED)} failed test cases")
    lines += [f"{item}Test count drift: {d}" for d in t.drift]
    lines += [f"{item}Quarantined tonight: `{e.pattern}` (owner {e.owner}): {e.reason}" for e in t.added]
    lines += [f"{item}Released from the quarantine: `{e.pattern}` ({e.released_why})" for e in t.released]
    lines += [
        f"{item}Quarantine expired on {e.expires}: `{e.pattern}` (owner {e.owner}): fix the test, or renew the entry"
        for e in t.expired
    ]
    if not lines:
        return []
    head = "## Tonight's failures, told apart" if markdown else "*Tonight's failures, told apart*"
    return [head, *lines]
