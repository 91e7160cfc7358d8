"""The culprit DAG as the plan renders it (its tasks, schedule, pools, self-triggering
runs), and the judge of a step reading real files from a local artifact store."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.culprit import search
from include.nightly_ci.culprit.judge import JudgeStepOperator, finding_of, flaky_tests
from include.nightly_ci.culprit.operators import search_run_id
from include.nightly_ci.errors import CulpritError
from include.nightly_ci.history import findings
from include.nightly_ci.plan import JUNIT_FILE, load_plan
from include.nightly_ci.plan.culprit import candidate_cells, candidate_tag_pattern, culprit_dag_id
from tests.services import write_config

GOOD, A, B, C = "a" * 40, "b" * 40, "c" * 40, "d" * 40
TEST = "tests.unit.test_router::test_round_robin"
FINDING = {
    "dag_id": "nightly_ci",
    "nightly_run_id": "scheduled__2026-11-21T08:00:00+00:00",
    "night": "2026-11-21T08:00:00+00:00",
    "cell": "vllm_amd64",
    "suite": "unit",
    "tests": [TEST],
    "good": {"run_id": "scheduled__2026-11-20T08:00:00+00:00", "commit": GOOD, "image": "r/x@sha256:" + "1" * 64},
    "bad": {"run_id": "scheduled__2026-11-21T08:00:00+00:00", "commit": C, "image": "r/x@sha256:" + "2" * 64},
}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    body = "culprit: {pool: culprit}\npools:\n  culprit: {slots: 2, description: the culprit finder}\n"
    return load_plan(str(write_config(tmp_path_factory.mktemp("culprit") / "nightly.yaml", body)))


@pytest.fixture(scope="module")
def dag(plan):
    from include.nightly_ci.culprit_dag import build_culprit_dag

    return build_culprit_dag(plan)


def test_the_dag_is_scheduled_on_the_nightlys_regressions_asset_and_has_a_group_per_run_mode_cell(plan, dag):
    assert dag.dag_id == culprit_dag_id(plan) == "nightly_ci_culprit"
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["nightly_ci.regressions"]
    cells = [c.group_id for c in plan.cells if c.reruns is not None]
    assert cells and {x.group_id for x in candidate_cells(plan)} == set(cells)
    per_cell = {f"{c}.{t}" for c in cells for t in ("candidates", "build", "runs", "test")}
    assert (
        set(dag.task_dict) == {"begin", "dispatch", "commit_range", "step", "judge", "next_step", "report"} | per_cell
    )


def test_builds_and_tests_take_the_culprit_pool_on_the_cells_own_queues(plan, dag):
    for layout in candidate_cells(plan):
        build, test = dag.task_dict[layout.build_task.task_id], dag.task_dict[layout.test_task.task_id]
        assert (build.pool, test.pool) == ("culprit", "culprit")
        assert build.queue == plan.queues[layout.cell.build_pool] and test.queue == plan.queues[layout.cell.test_pool]
        assert test.retries == 0
        for decides in (layout.candidates_task, layout.runs_task):  # they decide: no slot to wait for
            assert dag.task_dict[decides.task_id].pool == "default_pool", decides.task_id


def test_each_step_triggers_the_next_run_of_the_same_dag_once(dag):
    nxt, dispatch = dag.task_dict["next_step"], dag.task_dict["dispatch"]
    assert nxt.trigger_dag_id == dispatch.partial_kwargs["trigger_dag_id"] == "nightly_ci_culprit"
    assert nxt.skip_when_already_exists and dispatch.partial_kwargs["skip_when_already_exists"]
    assert dag.task_dict["judge"].trigger_rule == "all_done"
    assert {"cell", "suite", "good", "bad", "tests", "reruns", "parallelism", "budget"} <= set(dag.params)


def test_a_steps_run_id_is_the_same_for_the_same_finding_and_step_and_a_valid_run_id():
    run_id = search_run_id(FINDING, 3)
    assert run_id == search_run_id(dict(FINDING), 3) != search_run_id(FINDING, 4)
    assert run_id == "culprit__vllm_amd64.unit__scheduled__2026-11-21T08:00:00+00:00__03"
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", run_id) and len(run_id) <= 250


def test_a_candidates_image_is_tagged_by_its_commit():
    assert candidate_tag_pattern(B).format(framework="vllm", arch="amd64") == f"culprit-vllm-amd64-{B[:12]}"


def test_the_finding_names_the_culprit_and_its_parent_only_when_the_search_named_one():
    state = search.start([TEST], GOOD, [A, B, C], {}, k=1, r=3, budget_seconds=3600, max_commits=10)
    done = search.State(**{**state.__dict__, "search": search.Search(A, (B,)), "mode": search.DONE,
                           "status": findings.CULPRIT})  # fmt: skip
    commits = {B: ["Ann <ann@x>", "route to the first worker"]}
    f = finding_of(FINDING, commits, done)
    assert (f.status, f.culprit, f.parent, f.author, f.subject) == (
        "culprit",
        B,
        A,
        "Ann <ann@x>",
        "route to the first worker",
    )
    assert (f.good_commit, f.bad_commit, f.tests) == (GOOD, C, (TEST,))
    external = finding_of(FINDING, commits, search.State(**{**done.__dict__, "status": findings.EXTERNAL}))
    assert (external.culprit, external.parent, external.author) == (None, None, None)


def test_a_flaky_search_blames_no_commit_says_where_the_runs_flaked_and_hands_over_only_its_flaky_tests():
    other = "tests.unit.test_router::test_sticky"
    state = search.start([TEST, other], GOOD, [A, B, C], {}, k=2, r=3, budget_seconds=3600, max_commits=10)
    state = search.State(**{**state.__dict__, "mode": search.BISECT})
    first, second = state.to_test()
    # One candidate fails TEST once in 3 (flaky), the other fails OTHER every run (bad):
    # a flaky candidate ends the search, and only TEST is a flake.
    after = state.advance({first: {TEST: ["failed", "passed", "passed"], other: ["passed"] * 3},
                           second: {TEST: ["passed"] * 3, other: ["failed"] * 3}}, 60.0)  # fmt: skip
    assert (after.mode, after.status) == (search.DONE, findings.FLAKY)
    f = finding_of(FINDING, {first: ["Ann <ann@x>", "s"]}, after)
    assert (f.status, f.culprit, f.parent, f.author) == ("flaky", None, None, None)
    flaked = [e for e in f.evidence if e["verdict"] == "flaky"]
    assert [(e["commit"], e["runs"][TEST]) for e in flaked] == [(first, ["failed", "passed", "passed"])]
    assert flaky_tests(after) == (TEST,)
    replayed = search.start([TEST], GOOD, [A, B, C], {}, k=1, r=3, budget_seconds=3600, max_commits=10)
    on_good = replayed.advance({GOOD: {TEST: ["passed", "error", "passed"]}}, 30.0)
    assert on_good.status == findings.FLAKY and finding_of(FINDING, {}, on_good).evidence[0]["commit"] == GOOD
    assert flaky_tests(on_good) == (TEST,) and flaky_tests(search.State(**{**after.__dict__, "evidence": ()})) == ()


def _junit(outcome: str) -> str:
    inner = {"failed": "<failure message='x'/>", "passed": ""}[outcome]
    return (f"<testsuites><testsuite><testcase classname='tests.unit.test_router' name='test_round_robin' "
            f"time='0.1'>{inner}</testcase></testsuite></testsuites>")  # fmt: skip


def _run(store: Path, layout, run_id: str, commit: str, attempt: int, exit_code: int | None, junit: str | None):
    folder = store / layout.artifact_key(run_id, commit, attempt, "").rstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    if exit_code is not None:
        (folder / "record.json").write_text(json.dumps({"exit_code": exit_code, "duration_sec": 10}))
    if junit:
        (folder / JUNIT_FILE).write_text(junit)


def test_the_judge_reads_each_runs_outcome_and_counts_a_test_not_found_as_not_failed(plan, tmp_path):
    layout = next(x for x in candidate_cells(plan) if x.group_id == "vllm_amd64")
    judge = JudgeStepOperator(task_id="judge", store=ArtifactStore(str(tmp_path)), layouts={"vllm_amd64": layout},
                              step_task_id="step", history_conn_id="h", next_task_id="n", report_task_id="r")  # fmt: skip
    run_id = "culprit__x__01"
    items = [{"suite": "unit", "commit": c, "attempt": a} for c in (A, B) for a in (1, 2, 3)]
    for a in (1, 2, 3):
        _run(tmp_path, layout, run_id, A, a, 4, None)  # pytest: "not found"
        _run(tmp_path, layout, run_id, B, a, 1 if a != 2 else 0, _junit("failed" if a != 2 else "passed"))
    runs, seconds = judge._read(layout, run_id, items, (TEST,))
    assert runs == {A: {TEST: ["not found"] * 3}, B: {TEST: ["failed", "passed", "failed"]}}
    gpus = max(1, layout.jobs["unit"].gpus)
    assert seconds == 6 * 10 * gpus
    state = search.start([TEST], GOOD, [A, B, C], {}, k=2, r=3, budget_seconds=3600, max_commits=10)
    state = search.State(**{**state.__dict__, "mode": search.BISECT})
    after = state.advance(runs, seconds)
    # A passes (the test is not there yet), B fails 2 of 3: bad. The culprit is B.
    assert after.search == search.Search(A, (B,)) and after.mode == search.VERIFY


def test_the_judge_refuses_to_judge_a_step_with_a_run_that_left_no_result(plan, tmp_path):
    layout = next(x for x in candidate_cells(plan) if x.group_id == "vllm_amd64")
    judge = JudgeStepOperator(task_id="judge", store=ArtifactStore(str(tmp_path)), layouts={"vllm_amd64": layout},
                              step_task_id="step", history_conn_id="h", next_task_id="n", report_task_id="r")  # fmt: skip
    items = [{"suite": "unit", "commit": A, "attempt": a} for a in (1, 2)]
    _run(tmp_path, layout, "r1", A, 1, 0, _junit("passed"))
    with pytest.raises(CulpritError, match=rf"1 test run\(s\) of this step left no result \({A[:12]} run 2\)"):
        judge._read(layout, "r1", items, (TEST,))


class _Ti:
    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


class _Run:
    dag_id, run_id, run_type = "nightly_ci_culprit", "manual__2026-11-22T09:00:00+00:00", "manual"
    conf: dict = {}
    logical_date = None
    run_after = datetime(2026, 11, 22, 9, tzinfo=UTC)


def _begin(tmp_path, **params):
    from include.nightly_ci.culprit.operators import BeginSearchOperator

    op = BeginSearchOperator(task_id="begin", store=ArtifactStore(str(tmp_path)), nightly_dag_id="nightly_ci",
                             suites={"vllm_amd64": ["unit", "integration"]}, history_conn_id="h")  # fmt: skip
    p = {"cell": "vllm_amd64", "suite": "unit", "good": GOOD, "bad": C, "tests": [TEST], **params}
    ti = _Ti()
    dispatch = op.execute({"ti": ti, "dag_run": _Run(), "params": p, "triggering_asset_events": {}})
    return dispatch, ti.pushed


def test_a_search_by_hand_starts_from_its_params(tmp_path):
    dispatch, pushed = _begin(tmp_path)
    start = pushed["start"]
    assert dispatch == [] and isinstance(start, dict)
    assert (start["cell"], start["suite"], start["tests"], start["nightly_run_id"]) == (
        "vllm_amd64",
        "unit",
        [TEST],
        _Run.run_id,
    )
    assert start["good"] == {"run_id": None, "commit": GOOD, "image": None} and start["bad"]["commit"] == C


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"cell": "vllm_arm64"}, r"Param cell 'vllm_arm64' is not a cell with run-mode suites: vllm_amd64"),
        ({"suite": "e2e_2gpu"}, r"Param suite 'e2e_2gpu' is not a run-mode suite of vllm_amd64: unit, integration"),
        ({"good": "main"}, r"Param good 'main' is not a whole commit id \(40 hex digits: git rev-parse main\)"),
        ({"bad": "abcdef1"}, r"Param bad 'abcdef1' is not a whole commit id"),
        ({"bad": ""}, r"Param bad '' is not a whole commit id"),
        ({"tests": [" "]}, r"Param tests is empty"),
        ({"tests": ["test_x"]}, r"Param tests: 'test_x' is not a JUnit test id"),
    ],
)
def test_a_search_by_hand_with_bad_params_says_which_and_why(tmp_path, params, error):
    with pytest.raises(CulpritError, match=error):
        _begin(tmp_path, **params)


def test_a_run_whose_tests_could_not_be_collected_fails_them_and_never_passes_them(plan, tmp_path):
    """A candidate that breaks the import of the test module: pytest ends with exit code 2
    (collection errors) and its JUnit has no case of the test. That is a failure of the
    test there, not a test the commit does not have yet (that is exit code 4 or 5)."""
    layout = next(x for x in candidate_cells(plan) if x.group_id == "vllm_amd64")
    judge = JudgeStepOperator(task_id="judge", store=ArtifactStore(str(tmp_path)), layouts={"vllm_amd64": layout},
                              step_task_id="step", history_conn_id="h", next_task_id="n", report_task_id="r")  # fmt: skip
    collection_error = (
        "<testsuites><testsuite><testcase classname='' name='tests.unit.test_router'>"
        "<error message='collection failure'/></testcase></testsuite></testsuites>"
    )
    items = [{"suite": "unit", "commit": c, "attempt": a} for c in (A, B) for a in (1, 2)]
    for a in (1, 2):
        _run(tmp_path, layout, "r1", A, a, 2, collection_error)
        _run(tmp_path, layout, "r1", B, a, 5, None)  # no tests collected: not there yet
    runs, _ = judge._read(layout, "r1", items, (TEST,))
    assert runs == {A: {TEST: ["error", "error"]}, B: {TEST: ["not found", "not found"]}}


@pytest.mark.parametrize(("exit_code", "observed"), [(0, True), (1, True), (2, True), (4, True), (5, True), (3, False)])
def test_a_candidates_run_is_an_observation_unless_pytest_could_not_run(dag, exit_code, observed):
    """Collection errors (2) and tests not there yet (4, 5) are what the candidate did: the
    task succeeds and the judge reads them; pytest's internal error (3) fails the task."""
    from types import SimpleNamespace

    from include.nightly_ci.suites.base import SuiteFailed
    from include.nightly_ci.suites.candidate import DockerCandidateOperator

    item = {"suite": "unit", "commit": B, "attempt": 2, "image": "r/x@sha256:" + "3" * 64,
            "tests": ["tests/unit/test_router.py::test_round_robin"], "gpus": 0, "timeout_minutes": 45}  # fmt: skip
    op = dag.task_dict["vllm_amd64.test"].unmap(item)
    assert isinstance(op, DockerCandidateOperator)
    assert op.artifact_key("culprit__x__01", JUNIT_FILE) == f"culprit__x__01/vllm_amd64/culprit/{B[:12]}/2/{JUNIT_FILE}"
    outcome = {0: "passed", 1: "failed"}.get(exit_code, "error")
    result = SimpleNamespace(exit_code=exit_code, timed_out=False, outcome=outcome, counts={}, error=None,
                             cell="vllm_amd64", to_json=lambda: {"exit_code": exit_code})  # fmt: skip
    if observed:
        assert op._finish(result) == {"exit_code": exit_code}
    else:
        with pytest.raises(SuiteFailed, match="exit code 3"):
            op._finish(result)
