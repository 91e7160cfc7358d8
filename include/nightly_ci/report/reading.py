"""Reading what a run left in the artifact store: task records, JUnit reports, reruns,
and the results of earlier runs. Used by the summary and by `history import`.

Every file may be cut short, of another schema, or not ours: each one that can't be read
is skipped with a warning that names it, and the rest is read (H4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightly_ci.plan import JUNIT_FILE, Plan
from include.nightly_ci.records import TaskRecord

if TYPE_CHECKING:
    from include.nightly_ci.report.results import Cases, Results
    from include.nightly_ci.report.triage import Durations, Reruns

# What a file of the store may be: cut short, of another schema, not ours, or unreadable.
# (A JUnit report cut short raises ElementTree's ParseError, a SyntaxError.)
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, OSError, SyntaxError)


def skipped(name: str, exc: BaseException) -> str:
    return f"{name}: could not be read ({type(exc).__name__}: {str(exc)[:200]}), skipped"


@dataclass(frozen=True)
class RunFolder:
    """BASE/RUN of one run, read through the plan's layout."""

    plan: Plan
    path: Any  # an ObjectStoragePath

    def records(self) -> tuple[dict[str, TaskRecord], list[str]]:
        """The record each task of the plan left, where it left a readable one."""
        found, warnings = {}, []
        for task in self.plan.tasks():
            path = self.path / task.record_file
            if path.exists():
                try:
                    found[task.task_id] = TaskRecord.from_json(json.loads(path.read_text()))
                except UNREADABLE as exc:
                    warnings.append(skipped(task.record_file, exc))
        return found, warnings

    def cases(self) -> tuple[Cases, Durations, list[str]]:
        """Every suite's test cases (outcome) and their durations, from its JUnit report."""
        from include.nightly_ci.history.junit import junit_results

        cases, durations, warnings = {}, {}, []
        for cell in self.plan.cells:
            for job in cell.tests:
                report = self.path / job.task.artifact_dir / JUNIT_FILE
                if not report.exists():
                    continue
                try:
                    found = junit_results(report.read_text())
                except UNREADABLE as exc:
                    warnings.append(skipped(f"{job.task.artifact_dir}/{JUNIT_FILE}", exc))
                    continue
                cases[job.task.task_id] = {test: status for test, (status, _) in found.items()}
                durations[job.task.task_id] = {test: sec for test, (_, sec) in found.items() if sec is not None}
        return cases, durations, warnings

    def reruns(self) -> tuple[Reruns, list[str]]:
        """Each rerun case's outcomes, attempt by attempt (the plan's Reruns layout)."""
        from include.nightly_ci.history.junit import junit_cases

        found: dict[tuple[str, str], list[str]] = {}
        warnings = []
        for reruns in (c.reruns for c in self.plan.cells if c.reruns):
            for job in reruns.jobs:
                for attempt in range(1, self.plan.history.reruns + 1):
                    name = f"{reruns.artifact_dir(job.suite, attempt)}/{JUNIT_FILE}"
                    report = self.path / name
                    if not report.exists():
                        continue
                    try:
                        outcomes = junit_cases(report.read_text())
                    except UNREADABLE as exc:
                        warnings.append(skipped(name, exc))
                        continue
                    for test, outcome in outcomes.items():
                        found.setdefault((job.task.task_id, test), []).append(outcome)
        return {key: tuple(v) for key, v in found.items()}, warnings


def completed_runs(root: Any, this_run: str | None = None) -> tuple[list[Results], list[str]]:
    """Every run's results that can be read (but THIS_RUN's); one warning for each that
    can't (truncated, an older schema, anything else's file): one bad file once made
    every later summary fail (H4)."""
    from include.nightly_ci.report.results import Results

    if not root.exists():
        return [], []
    runs, warnings = [], []
    for folder in root.iterdir():
        results = folder / "results.json"
        if folder.name != this_run and results.exists():
            try:
                runs.append(Results.from_json(json.loads(results.read_text())))
            except UNREADABLE as exc:
                warnings.append(skipped(f"{folder.name}/results.json", exc))
    return runs, warnings
