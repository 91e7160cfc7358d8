"""Render a plan into the `nightly_ci` DAG: thin, no business logic, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, DeadlineAlert, ExceptionRetryPolicy, Param, RetryAction, RetryRule, TaskGroup, chain
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineReference

from include.nightly_ci.names import GIT_REF_RE
from include.nightly_ci.operators import (
    RESOLVE_TASK_ID,
    BuildImageOperator,
    PushImageOperator,
    ResolveSourceOperator,
)
from include.nightly_ci.plan import FRAMEWORK, RUNTIME, Cell, Plan, Push, load_plan
from include.nightly_ci.report_operators import (
    SUMMARY_TASK_ID,
    SlackNotifyOperator,
    SummaryOperator,
    VerdictOperator,
)
from include.nightly_ci.suite_operators import suite_operator

# Bad credentials, a bad ref or a broken Dockerfile won't fix themselves: fail at once.
FAIL_FAST = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception="include.nightly_ci.registries.RegistryAuthError", action=RetryAction.FAIL),
        RetryRule(exception="include.nightly_ci.source.SourceError", action=RetryAction.FAIL),
        RetryRule(exception="include.nightly_ci.images.BuildError", action=RetryAction.FAIL),
    ]
)


def _doc(plan: Plan) -> str:
    cells = ", ".join(f"{c.framework}/{c.arch}" for c in plan.cells)
    return f"""\
# Nightly CI

Every night at `{plan.schedule}` (UTC) this DAG builds and publishes the container images
of every framework x arch ({cells}) from `{plan.source.repository}` branch `{plan.source.branch}`.

* **resolve_source** picks the one commit the run builds: the branch head for a scheduled
  run, the `git_ref` Param for a manual run, and for a backfill the last commit on the
  branch at or before the run's logical date.
* **one group per framework x arch**: `build_framework` builds the framework (cache)
  image and `push_framework_*` pushes it as `main-{{framework}}-framework-{{arch}}`;
  `build_runtime` reuses that image pulled from the registry as its cache and
  `push_runtime_*` pushes the runtime image as `nightly-{{framework}}-{{arch}}` and
  `nightly-{{framework}}-{{arch}}-run-{{run_id}}`.
* **tests** (in each group): one task per suite, started as soon as that cell's runtime
  push to the test registry is done, in the exact image it pushed (by digest); amd64 on the
  GPU pool, arm64 collect-only. A failed build leaves its tests `upstream_failed`.
* **results_summary** always runs: the table of every job (stage, status, runner,
  duration, links, test counts, failure class) and what changed since the previous
  night, stored as `results.md`/`results.json` before **notify_slack** posts it;
  **verdict** makes the run red when any job did not pass.
* Moving tags only move forward: a backfill of an older night pushes only its run tag.
* Build logs and metrics, test output, JUnit and records are kept under
  `{plan.artifacts_base}` by run, cell and stage.

**Re-run**: clear any task; builds and pushes are idempotent (the same tags, the same
commit), and a cleared test task tests the same image digest again.
**Manual run**: trigger with Params to pick frameworks, arches, a git ref, and whether
moving tags are published.
**Backfill**: `airflow backfill create --dag-id {plan.dag_id} --from-date ... --to-date ...`:
each night builds the commit of its own night.
"""


def _params(plan: Plan) -> dict[str, Param]:
    def subset(values: tuple[str, ...], what: str) -> Param:
        return Param(
            list(values),
            type="array",
            items={"type": "string", "enum": list(values)},
            uniqueItems=True,
            minItems=1,
            title=what.capitalize(),
            description=f"The {what} to build (a subset of {', '.join(values)}).",
        )

    return {
        "frameworks": subset(plan.frameworks, "frameworks"),
        "arches": subset(plan.arches, "arches"),
        "git_ref": Param(
            "",
            type="string",
            pattern=f"^$|^{GIT_REF_RE.pattern}$",
            title="Git ref",
            description=f"A branch, tag or commit to build; empty builds the head of {plan.source.branch}.",
        ),
        "publish": Param(
            True,
            type="boolean",
            title="Publish moving tags",
            description="Push the moving tags (nightly-*, main-*-framework-*); run tags are always pushed.",
        ),
    }


def _push(image: str, push: Push, common: dict) -> PushImageOperator:
    return PushImageOperator(
        task_id=push.task_id, task_display_name=f"Push {image} to {push.registry}", push=push, **common
    )


def _build(plan: Plan, cell: Cell, image: str, common: dict) -> BuildImageOperator:
    return BuildImageOperator(
        task_id=f"build_{image}",
        task_display_name=f"Build {cell.framework} {image} ({cell.arch})",
        image=image,
        pool=cell.build_pool,
        execution_timeout=timedelta(minutes=plan.build.timeout_minutes),
        **common,
    )


def _cell_group(plan: Plan, cell: Cell, resolve: ResolveSourceOperator) -> TaskGroup:
    # Builds and pushes talk to the arch's builder engine: its workers' queue.
    common = {"plan": plan, "cell": cell, "retry_policy": FAIL_FAST, "queue": plan.queues[cell.build_pool]}
    with TaskGroup(cell.group_id, tooltip=f"Build, publish and test {cell.framework} for {cell.platform}") as group:
        build_fw = _build(plan, cell, FRAMEWORK, common)
        push_fw = {p.registry: _push(FRAMEWORK, p, common) for p in cell.framework_pushes}
        build_rt = _build(plan, cell, RUNTIME, common)
        push_rt = {p.registry: _push(RUNTIME, p, common) for p in cell.runtime_pushes}
        with TaskGroup("tests", tooltip=f"Test suites in the pushed {cell.framework} {cell.arch} image") as tests:
            for job in cell.tests:
                how = "collect only" if job.mode == "collect" else f"{job.gpus} GPU" if job.gpus else "no GPU"
                suite_operator(
                    plan,
                    cell,
                    job,
                    queue=plan.queues[job.pool],
                    task_id=job.task_id,
                    task_display_name=f"Test {job.suite} ({cell.framework} {cell.arch}, {how})",
                    retries=0,  # a failing suite is a result, not a hiccup; it is not re-run
                )
        chain(resolve, build_fw, list(push_fw.values()))
        push_fw[cell.cache_registry] >> build_rt >> list(push_rt.values())
        # Tests wait for their own cell's push to the test registry, nothing else.
        push_rt[cell.test_registry] >> tests
    return group


def build_dag(plan: Plan) -> DAG:
    start = datetime.combine(plan.start_date, datetime.min.time(), tzinfo=UTC)
    with DAG(
        dag_id=plan.dag_id,
        schedule=plan.schedule,
        start_date=start,
        catchup=plan.catchup,
        max_active_runs=plan.max_active_runs,
        doc_md=_doc(plan),
        params=_params(plan),
        tags=list(plan.tags),
        default_args={"owner": plan.owner, "retries": plan.build.retries, "retry_delay": timedelta(minutes=1)},
        deadline=_deadline(plan),
    ) as dag:
        resolve = ResolveSourceOperator(
            task_id=RESOLVE_TASK_ID, task_display_name="Resolve commit", plan=plan, retry_policy=FAIL_FAST
        )
        groups = [_cell_group(plan, cell, resolve) for cell in plan.cells]
        summary = SummaryOperator(task_id=SUMMARY_TASK_ID, task_display_name="Results summary", plan=plan)
        groups >> summary >> VerdictOperator(task_id="verdict", task_display_name="Verdict")
        if plan.slack.conn_id:
            summary >> SlackNotifyOperator(task_id="notify_slack", task_display_name="Notify Slack", plan=plan)
    return dag


def _deadline(plan: Plan) -> DeadlineAlert | None:
    """A nightly still running after deadline_hours posts to Slack while it runs."""
    if not plan.slack.conn_id or not plan.deadline_hours:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=plan.deadline_hours),
        callback=AsyncCallback(
            "include.nightly_ci.deadline.notify_overrun",
            kwargs={
                "conn_id": plan.slack.conn_id,
                "channel": plan.slack.channel,
                "hours": plan.deadline_hours,
                "dag_id": plan.dag_id,
            },
        ),
    )


def dag_from_config(file: str | None = None) -> DAG:
    """The DAG of FILE (default: $NIGHTLY_CI_CONFIG or the shipped config).

    A bad config raises ConfigError listing every problem: the DAG's import error.
    """
    return build_dag(load_plan(file))
