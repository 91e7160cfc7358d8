"""The judge of a culprit search's step: reads what the step's test runs left (each run's
record and JUnit in the artifact store), advances the search's state, saves the finding
where it stands, and chooses: the next step's run, or the report.

A run that left no record could not run its tests (the engine, the pull, a timeout): the
step is not judged on part of its evidence. The judge fails, naming the runs to clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.culprit.operators import search_run_id
from include.nightly_ci.errors import CulpritError
from include.nightly_ci.names import PytestExit
from include.nightly_ci.plan.culprit import CandidateCell

if TYPE_CHECKING:
    from include.nightly_ci.culprit.search import Runs, State
    from include.nightly_ci.history.findings import CulpritFinding

# pytest could not find the tests (usage error: "not found"; or no tests collected): the
# candidate predates them (suites/candidate.py). Exit codes of a run whose tests ran: any
# test of theirs missing from the JUnit was not there. Any other exit (collection errors,
# interrupted, internal error) left the tests unrun by the candidate's fault: they failed.
NOT_THERE = (PytestExit.USAGE_ERROR, PytestExit.NO_TESTS_COLLECTED)
RAN = (PytestExit.OK, PytestExit.TESTS_FAILED)
NOT_FOUND, ERROR = "not found", "error"


class JudgeStepOperator(BaseBranchOperator):
    """Advances the search; XComs `conf` and `run_id` of the next step's run."""

    ui_color = "#fbe9e7"

    def __init__(
        self,
        *,
        store: ArtifactStore,
        layouts: Mapping[str, CandidateCell],
        step_task_id: str,
        history_conn_id: str,
        next_task_id: str,
        report_task_id: str,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.store = store
        self.layouts = dict(layouts)
        self.step_task_id = step_task_id
        self.history_conn_id = history_conn_id
        self.next_task_id, self.report_task_id = next_task_id, report_task_id

    def choose_branch(self, context: Any) -> str | None:
        from include.nightly_ci.culprit.search import DONE, State

        ti, run_id = context["ti"], context["dag_run"].run_id
        cell = ti.xcom_pull(task_ids=self.step_task_id, key="cell")
        if cell is None:
            self.log.info("No search step in this run: nothing to judge")
            return None
        layout = self.layouts[cell]
        pull = {k: ti.xcom_pull(task_ids=self.step_task_id, key=k) for k in ("finding", "commits", "step")}
        state = State.from_json(ti.xcom_pull(task_ids=layout.runs_task.task_id, key="state"))
        items = ti.xcom_pull(task_ids=layout.runs_task.task_id) or []
        if items:
            runs, seconds = self._read(layout, run_id, items, state.tests)
            after = state.advance(runs, seconds)
            after = replace(after, evidence=(*state.evidence, *self._linked(after, state, layout, run_id, items)))
        else:
            after = state
        self.log.info("After step %s: %s", pull["step"], _summary(after))
        self._save(pull["finding"], pull["commits"], after)
        if after.mode == DONE:
            return self.report_task_id
        step = int(pull["step"]) + 1
        conf = {"finding": pull["finding"], "commits": pull["commits"], "step": step, "state": after.to_json()}
        ti.xcom_push(key="conf", value=conf)
        ti.xcom_push(key="run_id", value=search_run_id(pull["finding"], step))
        return self.next_task_id

    def _read(
        self, layout: CandidateCell, run_id: str, items: list[dict], tests: tuple[str, ...]
    ) -> tuple[Runs, float]:
        """Each test's outcomes per commit (in attempt order), and the GPU time the runs took
        (a suite asking no GPU counts as one: its runner's time is what the budget limits)."""
        from include.nightly_ci.history.junit import junit_cases
        from include.nightly_ci.plan import JUNIT_FILE

        root = self.store.root()
        runs: dict[str, dict[str, list[str]]] = {}
        seconds, missing = 0.0, []
        for item in sorted(items, key=lambda it: (it["commit"], it["attempt"])):
            commit, attempt = item["commit"], item["attempt"]
            record = _json(root / layout.artifact_key(run_id, commit, attempt, "record.json"))
            if record is None or record.get("exit_code") is None:
                missing.append(f"{commit[:12]} run {attempt}")
                continue
            seconds += float(record.get("duration_sec") or 0) * max(1, layout.jobs[item["suite"]].gpus)
            junit = root / layout.artifact_key(run_id, commit, attempt, JUNIT_FILE)
            code = record["exit_code"]
            found = junit_cases(junit.read_text()) if code not in NOT_THERE and junit.exists() else {}
            absent = NOT_FOUND if code in (*RAN, *NOT_THERE) else ERROR
            for test in tests:
                runs.setdefault(commit, {}).setdefault(test, []).append(found.get(test, absent))
        if missing:
            raise CulpritError(
                f"{len(missing)} test run(s) of this step left no result ({', '.join(missing)}): clear the failed "
                f"{layout.test_task.task_id} instances and this task"
            )
        return runs, seconds

    def _linked(self, after: State, before: State, layout: CandidateCell, run_id: str, items: list[dict]) -> list:
        """This step's evidence, each with the test task instances that produced it."""
        entries = []
        for entry in after.evidence[len(before.evidence) :]:
            indexes = [i for i, item in enumerate(items) if item["commit"] == entry["commit"]]
            entries.append({**entry, "dag_id": self.dag_id, "run_id": run_id, "task_id": layout.test_task.task_id,
                            "map_index": indexes[0] if indexes else None, "map_indexes": indexes})  # fmt: skip
        return entries

    def _save(self, finding: Mapping[str, Any], commits: Mapping[str, list[str]], state: State) -> None:
        from include.nightly_ci.history import findings
        from include.nightly_ci.history.store import HistoryStore

        store = HistoryStore.from_connection(self.history_conn_id)
        try:
            store.migrate()
            saved = findings.save(store, finding_of(finding, commits, state))
            if saved.status == findings.FLAKY:  # the flake handling takes the test: its night's case reads flaky
                tests = flaky_tests(state)
                changed = findings.mark_flaky(store, saved.dag_id, saved.nightly_run_id, saved.cell, saved.suite, tests)
                self.log.info("Handed to the flake handling: %s (%d case(s) of the night now flaky)", tests, changed)
        finally:
            store.close()
        self.log.info("Finding saved: %s", saved.status)


def finding_of(finding: Mapping[str, Any], commits: Mapping[str, list[str]], state: State) -> CulpritFinding:
    """The history store's finding for where STATE stands."""
    from include.nightly_ci.history import findings

    named = state.status in (findings.CULPRIT, findings.UNVERIFIED)
    partial = state.status == findings.PARTIAL
    culprit = state.search.bad if named else None
    author, subject = commits.get(culprit) or (None, None) if culprit else (None, None)
    return findings.CulpritFinding(
        dag_id=finding["dag_id"],
        nightly_run_id=finding["nightly_run_id"],
        night=finding["night"],
        cell=finding["cell"],
        suite=finding["suite"],
        tests=tuple(finding["tests"]),
        # Stopped on the budget: the range as far as it was narrowed (the evidence has the rest).
        good_commit=state.search.good if partial else finding["good"]["commit"],
        bad_commit=state.search.bad if partial else finding["bad"]["commit"],
        status=state.status,
        culprit=culprit,
        parent=state.search.good if named else None,
        author=author,
        subject=subject,
        rounds=state.rounds,
        builds=state.builds,
        gpu_seconds=round(state.gpu_seconds, 1),
        evidence=state.evidence,
    )


def flaky_tests(state: State) -> tuple[str, ...]:
    """The tests a FLAKY search hands to the flake handling: those its evidence shows failing
    some, not enough, of their runs on one image. A test that failed for good stays a regression."""
    from include.nightly_ci.culprit.bisect import FLAKY, run_verdict
    from include.nightly_ci.culprit.search import FAILED_RUN

    return tuple(sorted({
        test
        for entry in state.evidence
        for test, outcomes in (entry.get("runs") or {}).items()
        if len(outcomes) > 1 and run_verdict(sum(o in FAILED_RUN for o in outcomes), len(outcomes)) == FLAKY
    }))  # fmt: skip


def _json(path: Any) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, cut short
        return None
    return data if isinstance(data, dict) else None


def _summary(state: State) -> str:
    left = f"{len(state.search.commits)} commit(s) after {state.search.good[:12]}"
    return (f"{state.mode} ({state.status}); {left}; {state.rounds} round(s), {state.builds} build(s), "
            f"{state.gpu_seconds / 3600:.2f} GPU h")  # fmt: skip
