"""The culprit finder and the nightly's own records, on a real SQLite history store: a
search that ends flaky hands the night's cases to the flake handling, and a re-run of the
nightly's announce task leaves alone a finding the culprit DAG has advanced."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.culprit import search
from include.nightly_ci.culprit.judge import JudgeStepOperator
from include.nightly_ci.history import findings
from include.nightly_ci.history.records import FLAKY, REGRESSION, CaseRecord, NightRecord, SuiteRecord
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.plan import load_plan
from include.nightly_ci.plan.culprit import candidate_cells
from tests.services import write_config
from tests.unit.test_culprit_dag import FINDING, GOOD, TEST, A, B, C, _junit, _run

pytestmark = pytest.mark.integration
DAG, CELL, SUITE, TASK = "nightly_ci", "vllm_amd64", "unit", "vllm_amd64.tests.unit"
GOOD_RUN, BAD_RUN = "scheduled__2026-11-20T08:00:00+00:00", "scheduled__2026-11-21T08:00:00+00:00"
BAD_NIGHT = "2026-11-21T08:00:00+00:00"
assert (FINDING["good"]["run_id"], FINDING["nightly_run_id"], FINDING["night"]) == (GOOD_RUN, BAD_RUN, BAD_NIGHT)  # type: ignore[index]
IMAGE = "r/x@sha256:" + "1" * 64
SUITES = (SUITE, "e2e")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A migrated SQLite store with the good night and the bad night, behind connection `history`."""
    path = tmp_path / "history.db"
    monkeypatch.setenv("AIRFLOW_CONN_HISTORY", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    history = HistoryStore(f"sqlite:///{path}")
    history.migrate()
    # The good night (its suites passed) and the bad night (every case a regression).
    for run_id, night, commit, outcome in ((GOOD_RUN, "2026-11-20T08:00:00+00:00", GOOD, "passed"),
                                           (BAD_RUN, BAD_NIGHT, C, "failed")):  # fmt: skip
        verdict, reruns = (REGRESSION, ("failed", "failed")) if outcome == "failed" else (None, ())
        history.write_night(
            NightRecord(DAG, run_id, night, "nightly", commit),
            [SuiteRecord(CELL, s, f"{CELL}.tests.{s}", "success", "passed", image=IMAGE, tests=2) for s in SUITES],
            [CaseRecord(CELL, s, t, outcome, 0.1, verdict, reruns) for s in SUITES for t in (TEST, "t::other")],
        )
    yield history
    history.close()


def verdicts(store: HistoryStore, run_id: str) -> dict[tuple[str, str], str | None]:
    from sqlalchemy import select

    from include.nightly_ci.history import tables as t

    query = (
        select(t.suites.c.suite, t.tests.c.name, t.cases.c.verdict)
        .select_from(t.cases.join(t.tests).join(t.suites).join(t.nights))
        .where(t.nights.c.run_id == run_id)
    )
    with store.engine.connect() as conn:
        return {(s, name): v for s, name, v in conn.execute(query).tuples()}


class _TI:
    """The XComs a judge reads, keyed (task id, key)."""

    def __init__(self, values: dict[tuple[str, str | None], Any]):
        self.values = values
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str, key: str | None = None) -> Any:
        return self.values.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def judge_replay(tmp_path, store: HistoryStore, outcomes: list[str], finding: dict) -> str | None:
    """The judge of a replay step whose runs of TEST on the good image had OUTCOMES."""
    plan = load_plan(str(write_config(tmp_path / "nightly.yaml", "culprit: {pool: culprit}\n")))
    layout = next(x for x in candidate_cells(plan) if x.group_id == CELL)
    artifacts = tmp_path / "artifacts"
    judge = JudgeStepOperator(task_id="judge", store=ArtifactStore(str(artifacts)), layouts={CELL: layout},
                              step_task_id="step", history_conn_id="history", next_task_id="n",
                              report_task_id="r")  # fmt: skip
    run_id = "culprit__x__01"
    for attempt, outcome in enumerate(outcomes, 1):
        _run(artifacts, layout, run_id, GOOD, attempt, int(outcome == "failed"), _junit(outcome))
    state = search.start([TEST], GOOD, [A, B, C], {GOOD: IMAGE}, k=1, r=len(outcomes), budget_seconds=3600,
                         max_commits=10)  # fmt: skip
    items = [{"suite": SUITE, "commit": GOOD, "attempt": a} for a in range(1, len(outcomes) + 1)]
    ti = _TI({("step", "cell"): CELL, ("step", "finding"): finding, ("step", "commits"): {}, ("step", "step"): 1,
              (layout.runs_task.task_id, "state"): state.to_json(), (layout.runs_task.task_id, None): items})  # fmt: skip
    return judge.choose_branch({"ti": ti, "dag_run": SimpleNamespace(run_id=run_id)})


def test_a_search_ended_flaky_hands_the_nights_cases_of_its_flaky_tests_to_the_flake_handling(tmp_path, store):
    assert judge_replay(tmp_path, store, ["failed", "passed", "passed"], FINDING) == "r"
    (saved,) = findings.load(store, DAG, BAD_RUN)
    assert (saved.status, saved.culprit) == (findings.FLAKY, None)
    # Only that night's case of that test in that suite: the finding says why.
    assert verdicts(store, BAD_RUN) == {(SUITE, TEST): FLAKY, (SUITE, "t::other"): REGRESSION,
                                        ("e2e", TEST): REGRESSION, ("e2e", "t::other"): REGRESSION}  # fmt: skip
    key = (CELL, SUITE, TEST)
    assert store.previous_outcomes(DAG, "nightly", "2026-11-22T08:00:00+00:00", [key]) == {key: FLAKY}
    assert store.flaky_nights(DAG, "nightly", "2026-11-22T08:00:00+00:00", [TEST], nights=13) == {TEST: 1}


def test_a_search_of_a_night_the_store_does_not_have_still_saves_its_flaky_finding(tmp_path, store):
    by_hand = {**FINDING, "nightly_run_id": "manual__by_hand"}
    assert judge_replay(tmp_path, store, ["failed", "passed", "passed"], by_hand) == "r"
    assert [f.status for f in findings.load(store, DAG, "manual__by_hand")] == [findings.FLAKY]
    assert verdicts(store, BAD_RUN)[(SUITE, TEST)] == REGRESSION


def test_a_search_that_goes_on_changes_no_verdict(tmp_path, store):
    assert judge_replay(tmp_path, store, ["passed", "passed", "passed"], FINDING) == "n"  # bisect next
    assert verdicts(store, BAD_RUN)[(SUITE, TEST)] == REGRESSION


class _Events(dict):
    def __missing__(self, asset: Any) -> SimpleNamespace:
        self[asset] = SimpleNamespace(extra=None)
        return self[asset]


def announce(tmp_path) -> dict:
    """The nightly's announce task of the bad night; the Asset event's extra."""
    from include.nightly_ci.records import TaskRecord
    from include.nightly_ci.report.announce import AnnounceRegressionsOperator
    from include.nightly_ci.report.results import Results
    from include.nightly_ci.report.triage import Triage

    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    folder = artifacts.run_folder(BAD_RUN)
    (folder / "vllm_amd64" / "tasks").mkdir(parents=True, exist_ok=True)
    results = Results(DAG, BAD_RUN, BAD_NIGHT, "", commit=C, triage=Triage(verdicts={f"{TASK}::{TEST}": REGRESSION}))
    (folder / "results.json").write_text(json.dumps(results.to_json()))
    record = TaskRecord(TASK, "test", "failed", "", "", 1.0, 1, None, "gpu-1", image="r/x@sha256:" + "2" * 64)
    (folder / "vllm_amd64" / "tasks" / "tests.unit.json").write_text(json.dumps(record.to_json()))
    op = AnnounceRegressionsOperator(task_id="announce_regressions", store=artifacts, suites={TASK: (CELL, SUITE)},
                                     record_files={TASK: "vllm_amd64/tasks/tests.unit.json"},
                                     history_conn_id="history", asset_name="nightly_ci.regressions")  # fmt: skip
    events = _Events()
    assert op.execute({"dag_run": SimpleNamespace(run_id=BAD_RUN), "outlet_events": events}) == {"findings": 1}
    (event,) = events.values()
    return event.extra


def test_announcing_the_night_again_leaves_a_finding_the_culprit_dag_advanced(tmp_path, store):
    first = announce(tmp_path)
    (searching,) = findings.load(store, DAG, BAD_RUN)
    assert searching.status == findings.SEARCHING and first["findings"][0]["good"]["commit"] == GOOD
    done = findings.save(store, replace(searching, status=findings.CULPRIT, culprit=B, parent=A, rounds=2, builds=2))
    again = announce(tmp_path)  # a cleared announce task: the event again (its search runs exist: skipped)
    assert again == first
    assert findings.load(store, DAG, BAD_RUN) == [done]
