"""Render a plan into the `{dag_id}_culprit` DAG: find the commit that broke a test,
verified by running it. Thin, no logic: the steps are culprit/, the builds build/, the
test runs suites/, the message report/.

Scheduled on the nightly's `{dag_id}.regressions` Asset: a nightly with regressions
starts a dispatch run, which starts one search run per finding; each search run is one
step (a replay, a bisection round, the verification) and starts the next step's run
with the narrowed state in its conf. Or by hand, with Params.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, Param, TaskGroup, TriggerRule, XComArg

from include.nightly_ci.build.candidate import CandidateBuildOperator, CommitRangeOperator
from include.nightly_ci.build.operators import BuildCache
from include.nightly_ci.culprit.judge import JudgeStepOperator
from include.nightly_ci.culprit.operators import (
    BeginSearchOperator,
    CandidateRunsOperator,
    CandidatesOperator,
    StepOperator,
)
from include.nightly_ci.dag import FAIL_FAST, REPORT_TIMEOUT, builder_args, rerun_partial
from include.nightly_ci.names import regressions_asset
from include.nightly_ci.plan import Plan, load_plan
from include.nightly_ci.plan.culprit import (
    BEGIN,
    DISPATCH,
    JUDGE,
    NEXT_STEP,
    RANGE,
    REPORT_TASK,
    STEP,
    CandidateCell,
    candidate_cells,
    culprit_dag_id,
)
from include.nightly_ci.records import placement
from include.nightly_ci.report.culprit import CulpritReportOperator
from include.nightly_ci.suites.candidate import candidate_operator

# The common tasks decide and read: minutes, never hours.
CONTROL_TIMEOUT = timedelta(minutes=30)


def _params(plan: Plan, layouts: tuple[CandidateCell, ...]) -> dict[str, Param]:
    c = plan.culprit
    return {
        "cell": Param("", type="string", enum=["", *(x.group_id for x in layouts)], title="Cell",
                      description="By hand: the cell whose suite failed (a run started by the nightly ignores it)."),
        "suite": Param("", type="string", title="Suite", description="By hand: the suite the tests are in."),
        "good": Param("", type="string", title="Good commit", description="By hand: the last commit that passed."),
        "bad": Param("", type="string", title="Bad commit", description="By hand: the first commit that failed."),
        "tests": Param([], type="array", items={"type": "string"}, title="Tests",
                       description="By hand: the failing tests' JUnit ids ('tests.unit.test_x::test_y')."),
        "reruns": Param(c.reruns, type="integer", minimum=2, maximum=10, title="Runs per candidate",
                        description="Bad: at least 2 fail; good: all pass; else flaky, and nobody is blamed."),
        "parallelism": Param(c.parallelism, type="integer", minimum=1, maximum=8, title="Candidates per round"),
        "budget": Param(c.gpu_hours, type="number", exclusiveMinimum=0, title="GPU hours",
                        description="Spent, the search stops with the range as far as it got."),
    }  # fmt: skip


def _cell_group(plan: Plan, layout: CandidateCell, step: StepOperator) -> Any:
    cell = layout.cell
    with TaskGroup(cell.group_id, tooltip=f"Build and test {cell.framework} {cell.arch} candidates") as group:
        candidates = CandidatesOperator(
            **placement(layout.candidates_task),
            cell=cell.group_id,
            step_task_id=step.task_id,
            retries=0,
            execution_timeout=CONTROL_TIMEOUT,
        )
        runtime = cell.runtime_build
        build = CandidateBuildOperator.partial(
            **placement(layout.build_task),
            spec=layout.build_task,
            store=plan.store,
            framework=cell.framework,
            arch=cell.arch,
            backoff=plan.backoff,
            source_task_id=step.task_id,
            **builder_args(plan, cell),
            image=runtime.image,
            target=runtime.target,
            # The cell's framework and nightly images: a candidate that left the framework's
            # inputs alone takes all of it from there, and builds the runtime target only.
            cache=BuildCache(plan.registries[cell.cache_registry], (cell.framework_tag, cell.nightly_tag)),
            repository=plan.source.repository,
            layout=layout,
            retry_policy=FAIL_FAST,
        ).expand(commit=candidates.output)
        runs = CandidateRunsOperator(
            **placement(layout.runs_task),
            layout=layout,
            step_task_id=step.task_id,
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,  # nothing to build: the nights' images
            execution_timeout=CONTROL_TIMEOUT,
        )
        # The cell's runner, pulling with the cache registry's credentials (where candidates are).
        test = rerun_partial(
            plan, cell, layout.reruns, layout.test_task, candidate_operator(layout.reruns.jobs[0].runner.backend),
            layout=layout, registry=plan.registries[cell.cache_registry],
        ).expand_kwargs(runs.output)  # fmt: skip
        step >> candidates >> build >> runs >> test
        candidates >> runs
    return group, test


def build_culprit_dag(plan: Plan) -> DAG:
    dag_id = culprit_dag_id(plan)
    layouts = candidate_cells(plan)
    history = plan.history.conn_id or ""
    with DAG(
        dag_id=dag_id,
        schedule=[Asset(name=regressions_asset(plan.dag_id))],
        start_date=datetime.combine(plan.start_date, datetime.min.time(), tzinfo=UTC),
        catchup=False,
        tags=[*plan.tags, "culprit"],
        default_args={"owner": plan.owner, "retries": 1, "retry_delay": timedelta(minutes=1)},
        params=_params(plan, layouts),
        doc_md=_doc(plan, dag_id),
    ) as dag:
        begin = BeginSearchOperator(
            task_id=BEGIN,
            store=plan.store,
            nightly_dag_id=plan.dag_id,
            suites={x.group_id: list(x.jobs) for x in layouts},
            history_conn_id=plan.history.conn_id,
            retries=0,
            execution_timeout=CONTROL_TIMEOUT,
        )
        # The same finding and step: the same run id, so a cleared trigger starts nothing twice.
        trigger: dict[str, Any] = {
            "trigger_dag_id": dag_id, "skip_when_already_exists": True, "execution_timeout": CONTROL_TIMEOUT
        }  # fmt: skip
        dispatch = TriggerDagRunOperator.partial(task_id=DISPATCH, **trigger).expand_kwargs(begin.output)
        commits = CommitRangeOperator(
            task_id=RANGE,
            repository=plan.source.repository,
            begin_task_id=BEGIN,
            max_commits=plan.culprit.max_commits,
            conn_id=plan.source.conn_id,
            git_timeout_seconds=plan.source.timeout_seconds,
            retry_policy=FAIL_FAST,
            execution_timeout=CONTROL_TIMEOUT,
        )
        step = StepOperator(
            task_id=STEP,
            begin_task_id=BEGIN,
            range_task_id=RANGE,
            cells=[x.group_id for x in layouts],
            max_commits=plan.culprit.max_commits,
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,  # a continuation reads no range
            retries=0,
            execution_timeout=CONTROL_TIMEOUT,
        )
        tests = [_cell_group(plan, layout, step)[1] for layout in layouts]
        judge = JudgeStepOperator(
            task_id=JUDGE,
            store=plan.store,
            layouts={x.group_id: x for x in layouts},
            step_task_id=STEP,
            history_conn_id=history,
            next_task_id=NEXT_STEP,
            report_task_id=REPORT_TASK,
            trigger_rule=TriggerRule.ALL_DONE,  # it says itself when a run is missing
            retries=0,
            execution_timeout=CONTROL_TIMEOUT,
        )
        next_step = TriggerDagRunOperator(
            task_id=NEXT_STEP,
            # Resolved at run time from the judge's XComs (an XComArg in a templated field).
            trigger_run_id=XComArg(judge, key="run_id"),  # type: ignore[arg-type]
            conf=XComArg(judge, key="conf"),  # type: ignore[arg-type]
            **trigger,
        )
        report = CulpritReportOperator(
            task_id=REPORT_TASK,
            history_conn_id=history,
            slack_conn_id=plan.slack.conn_id,
            channel=plan.slack.channel,
            slack_retries=plan.slack.retries,
            ops_group_id=plan.slack.ops_group_id,
            nightly_store=plan.store,
            repository_url=plan.source.repository,
            finding_task_id=STEP,
            execution_timeout=REPORT_TIMEOUT,
        )
        begin >> [dispatch, commits]
        [begin, commits] >> step
        tests >> judge >> [next_step, report]
    return dag


def _doc(plan: Plan, dag_id: str) -> str:
    c = plan.culprit
    return f"""\
# Culprit finder of `{plan.dag_id}`

Finds the commit that broke a test, verified by running it. Started by `{plan.dag_id}` for each
night's regressions (the `{regressions_asset(plan.dag_id)}` Asset), or by hand with the Params.

1. **Replay**: the failing tests on the last good night's image, by digest, {c.reruns} times. Failing
   there too: the cause is outside the commits (**external**), and nothing is built.
2. **Bisection**: rounds of up to {c.parallelism} candidate commits (first-parent history), each built
   (the runtime target, with the registry cache) and tested {c.reruns} times. Bad: 2 runs fail; good:
   all pass; anything else is **flaky**, and no commit is blamed.
3. **Verification**: the culprit and its parent, {c.reruns} more times each: reported only when the
   culprit fails and its parent passes.

Each step is a run of this DAG (`culprit__CELL.SUITE__NIGHT__STEP`), started by the step before
with the search's state in its conf. Builds and tests take the pool `{c.pool or "of the cell"}`.
A finding may use {c.gpu_hours} GPU hours; longer ranges than {c.max_commits} commits are not
searched. Findings: the triage page and Slack.
"""


def culprit_dag_from_config(file: str | None = None) -> DAG:
    return build_culprit_dag(load_plan(file))
