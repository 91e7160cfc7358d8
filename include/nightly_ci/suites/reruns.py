"""Which of tonight's failed test cases are rerun: the find task of a cell's flake reruns.

After the cell's suites (whatever their end), it reads each run-mode suite's JUnit and
record from the artifact store, asks the history store which failed cases did not fail on
the previous comparable night (a case failing night after night is known already), and
hands the mapped rerun task one item per (suite, attempt): the exact image the suite ran
in (by digest), the cases as pytest node ids, the suite's GPUs and time limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from airflow.sdk import TriggerRule

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.names import run_kind
from include.nightly_ci.plan import JUNIT_FILE, Reruns, TaskSpec, TestJob
from include.nightly_ci.records import NightlyOperator, placement, skip_unless_selected

Key = tuple[str, str, str]  # (cell, suite, JUnit test id), as the history store keys a case


@dataclass(frozen=True)
class SuiteFailures:
    """What one suite left tonight: its failed cases and the image it ran in by digest, or
    why none of it can be rerun."""

    suite: str
    failed: tuple[str, ...] = ()  # JUnit ids of its failed and errored cases
    image: str | None = None
    why: str = ""


def suite_failures(root: Any, run_id: str, job: TestJob) -> SuiteFailures:
    """JOB's failed cases (from its JUnit) and image (from its task record) in the store at ROOT."""
    from include.nightly_ci.history.junit import junit_cases
    from include.nightly_ci.history.records import BAD

    junit = root / job.task.artifact_key(run_id, JUNIT_FILE)
    if not junit.exists():
        return SuiteFailures(job.suite, why="no JUnit (the suite did not run, or ended before writing it)")
    try:
        failed = tuple(sorted(t for t, outcome in junit_cases(junit.read_text()).items() if outcome in BAD))
    except (SyntaxError, OSError, ValueError) as exc:  # a report cut short: ElementTree's ParseError
        return SuiteFailures(job.suite, why=f"its JUnit {junit} can't be read: {exc}")
    if not failed:
        return SuiteFailures(job.suite)
    image = _image(root / job.task.record_key(run_id))
    if image is None or "@sha256:" not in image:
        why = f"no image by digest in its record {job.task.record_file} ({image or 'none'}): reruns need the same bytes"
        return SuiteFailures(job.suite, failed, why=why)
    return SuiteFailures(job.suite, failed, image)


def _image(record: Any) -> str | None:
    try:
        return json.loads(record.read_text()).get("image")
    except (OSError, ValueError, AttributeError):  # missing, cut short, not an object
        return None


def choose(
    reruns: Reruns,
    found: Iterable[SuiteFailures],
    newly: Collection[Key],
    attempts: int,
    max_cases: int,
    warn: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The rerun task's items (one per suite and attempt, 1..ATTEMPTS) and, per suite, what
    was chosen and why. A suite with more than MAX_CASES newly failing cases gets none: that
    many at once is a regression, not flakiness."""
    from include.nightly_ci.history.junit import node_id  # at run time: the DAG file imports this module

    jobs = {j.suite: j for j in reruns.jobs}
    items: list[dict[str, Any]] = []
    selection: dict[str, dict[str, Any]] = {}
    for f in found:
        cases = [t for t in f.failed if (reruns.cell, f.suite, t) in newly]
        chosen, why = _chosen(f, cases, max_cases, warn)
        selection[f.suite] = {"failed": len(f.failed), "newly_failing": cases, "rerun": chosen, "why": why}
        if why:
            warn(f"suite {f.suite} of {reruns.cell}: {why}")
        if chosen:
            job = jobs[f.suite]
            tests = [node_id(t) for t in chosen]
            items += [
                {"suite": f.suite, "attempt": attempt, "image": f.image, "tests": tests,
                 "gpus": job.container_gpus, "timeout_minutes": job.timeout_minutes}
                for attempt in range(1, attempts + 1)
            ]  # fmt: skip
    return items, selection


def _chosen(f: SuiteFailures, cases: list[str], max_cases: int, warn: Callable[[str], None]) -> tuple[list[str], str]:
    """The cases of F rerun (JUnit ids), and why some or all are not ('' when all are)."""
    from include.nightly_ci.history.junit import node_id

    if f.why or not cases:
        return [], f.why
    if len(cases) > max_cases:
        return [], (
            f"{len(cases)} newly failing cases, more than history.max_rerun_cases ({max_cases}): "
            "not rerun (so many at once is not flakiness)"
        )
    chosen = []
    for case in cases:
        try:
            node_id(case)
            chosen.append(case)
        except ValueError as exc:
            warn(f"suite {f.suite}: {exc}: not rerun")
    return chosen, ""


class FindRerunsOperator(NightlyOperator):
    """The find task of a cell's flake reruns: returns the mapped rerun task's items."""

    ui_color = "#fff4e0"

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        reruns: Reruns,
        framework: str,
        arch: str,
        history_conn_id: str | None,
        attempts: int,
        max_cases: int,
        **kwargs: Any,
    ):
        # It runs whatever the suites did: a failed suite is what it is for.
        super().__init__(**placement(spec), trigger_rule=TriggerRule.ALL_DONE, **kwargs)
        self.spec, self.store, self.reruns = spec, store, reruns
        self.framework, self.arch = framework, arch
        self.history_conn_id = history_conn_id
        self.attempts, self.max_cases = attempts, max_cases

    def run(self, context: Any) -> list[dict[str, Any]]:
        from include.nightly_ci.artifacts import write_json

        skip_unless_selected(context, self.framework, self.arch)
        if self.attempts == 0:
            self.log.info("history.reruns is 0: no reruns")
            return []
        dag_run = context["dag_run"]
        root = self.store.root()
        found = [suite_failures(root, dag_run.run_id, job) for job in self.reruns.jobs]
        keys = [(self.reruns.cell, f.suite, t) for f in found if not f.why for t in f.failed]
        night = (dag_run.logical_date or dag_run.run_after).isoformat()
        newly, history = self._newly_failing(dag_run.run_id, night, keys)
        items, suites = choose(self.reruns, found, set(newly), self.attempts, self.max_cases, self.log.warning)
        selection = {"history": history, "suites": suites}
        write_json(root, self.reruns.selection_key(dag_run.run_id), selection)
        self.log.info("%d reruns: %s", len(items), json.dumps(selection, indent=1))
        return items

    def _newly_failing(self, run_id: str, night: str, keys: list[Key]) -> tuple[list[Key], str]:
        """The failed cases that did not fail on the previous comparable night, and what the
        history said; every one of them when it can't tell (none configured, or it fails:
        the reruns still tell a flake from a regression, only more of them run)."""
        from include.nightly_ci.errors import HistoryConfigError, HistoryUnavailable
        from include.nightly_ci.history.rules import newly_failing

        if not keys:
            return [], "not asked: no failed case"
        if self.history_conn_id is None:
            why = "history.conn_id is null: every failed case counts as newly failing"
            self.log.warning("%s", why)
            return sorted(keys), why
        try:
            previous = self._previous(run_id, night, keys)
        except (HistoryUnavailable, HistoryConfigError) as exc:
            why = f"{exc}: every failed case counts as newly failing"
            self.log.warning("%s", why)
            return sorted(keys), why
        return newly_failing(keys, previous), f"{len(previous)} of {len(keys)} failed cases seen before"

    def _previous(self, run_id: str, night: str, keys: list[Key]) -> dict[Key, str]:
        from sqlalchemy.exc import SQLAlchemyError

        from include.nightly_ci.errors import HistoryUnavailable
        from include.nightly_ci.history.store import HistoryStore

        store = HistoryStore.from_connection(self.history_conn_id or "")
        try:
            store.migrate()  # the first night of a new store: its tables, before the summary makes them
            return store.previous_outcomes(self.dag_id, run_kind(run_id), night, keys)
        except SQLAlchemyError as exc:  # not an outage (those are HistoryUnavailable): a schema refused, say
            raise HistoryUnavailable(f"history store {self.history_conn_id!r}: {str(exc).splitlines()[0]}") from exc
        finally:
            store.close()
