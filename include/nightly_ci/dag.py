"""Render a plan into the `nightly_ci` DAG: thin, no business logic, no I/O.

Every task's id, display name, pool and queue come from the plan's TaskSpecs; each
operator gets explicit, typed arguments. Only the Airflow SDK and this package are
imported here: providers and SDKs load inside the tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, ExceptionRetryPolicy, Param, RetryAction, RetryRule, TaskGroup, chain
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from include.nightly_ci.build.operators import BuildCache, BuildImageOperator, ResolveSourceOperator
from include.nightly_ci.build.publish import PushImageOperator
from include.nightly_ci.errors import PermanentError
from include.nightly_ci.names import GIT_REF_RE, RUNTIME, cache_tag, regressions_asset
from include.nightly_ci.plan import (
    RERUNS_GROUP,
    TESTS_GROUP,
    Build,
    Cell,
    Plan,
    Push,
    Reruns,
    RunnerSpec,
    TaskSpec,
    TestJob,
    load_plan,
)
from include.nightly_ci.records import NightlyOperator, PushResult, placement
from include.nightly_ci.report.announce import AnnounceRegressionsOperator
from include.nightly_ci.report.operators import SlackNotifyOperator, SummaryOperator, VerdictOperator
from include.nightly_ci.suites.docker import DockerSuiteOperator
from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator
from include.nightly_ci.suites.rerun import rerun_operator, rerun_time_limit
from include.nightly_ci.suites.reruns import FindRerunsOperator

# Bad credentials, a bad ref, a broken Dockerfile won't fix themselves: fail at once.
# One rule on the family's base class; every subclass of PermanentError matches.
FAIL_FAST = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception=PermanentError, action=RetryAction.FAIL, reason="a permanent error: retrying can't help")
    ]
)
# The Deadline Alert's callback, as Airflow stores it with each run.
OVERRUN_CALLBACK = "include.nightly_ci.report.deadline.notify_overrun"


# The report's tasks read the store and post to Slack: minutes, never hours.
REPORT_TIMEOUT = timedelta(minutes=30)


class NightlyDAG(DAG):
    """Airflow 3.3's DAG hashed by its id: Airflow's hashes every task id, once per task a dependency
    joins (40 cells: 1,100 hashes of up to 445 ids, an eighth of the parse). Equal DAGs have equal ids."""

    def __hash__(self) -> int:
        return hash(self.dag_id)


def _doc(plan: Plan) -> str:
    cells = ", ".join(f"{c.framework}/{c.arch}" for c in plan.cells)
    tags = plan.tag_patterns
    first = plan.cells[0]  # the names of a cell's tasks, as the plan makes them
    build_fw, build_rt = first.framework_build.task, first.runtime_build.task
    push_fw, push_rt = first.cache_push.task, first.test_push.task
    conn = plan.source.conn_id  # how git authenticates, by name only (M5: the URL carries no credentials)
    credentials = f" (credentials from Airflow connection `{conn}`)" if conn else ""
    return f"""\
# Nightly CI

Every night at `{plan.schedule}` (UTC) this DAG builds and publishes the container images
of every framework x arch ({cells}) from `{plan.source.repository}` branch `{plan.source.branch}`{credentials}.

* **{plan.resolve.display_name}** (`{plan.resolve.task_id}`) picks the one commit the run builds:
  the branch head for a scheduled run, the `git_ref` Param for a manual run, and for a
  backfill the last commit on the branch at or before the run's logical date.
* **one group per framework x arch**: `{build_fw.local_id}` ("{build_fw.display_name}") builds
  the framework (cache) image and `{push_fw.local_id}` pushes it as `{tags.framework}`;
  `{build_rt.local_id}` ("{build_rt.display_name}") reuses that image pulled from the registry
  as its cache, and `{push_rt.local_id}` and the other runtime pushes push the runtime image
  as `{tags.nightly}` and `{tags.run}`.
* **tests** (in each group): one task per suite, started as soon as that cell's runtime
  push to the test registry is done, in the exact image it pushed (by digest). A failed
  build leaves its tests `upstream_failed`.
* **reruns** (in each group whose suites run): after the suites, `find` picks the test
  cases that failed tonight but not the night before, and `rerun` runs each of them
  again {plan.history.reruns} times in the exact image it failed in (by digest). A case
  that passes a rerun is flaky, not a regression.
* **{plan.summary.display_name}** (`{plan.summary.task_id}`) always runs: the table of every job
  (stage, status, runner, duration, links, test counts, failure class) and what changed
  since the previous night, stored as `results.md`/`results.json` before Slack is told;
  **{plan.verdict.display_name}** makes the run red when any job did not pass.
* Moving tags only move forward: a backfill of an older night pushes only its run tag; a
  run of an older commit, or one dated in the future, never moves them; racing runs leave
  them on the newer night.
* Build logs and metrics, test output, JUnit and records are kept under
  `{plan.artifacts_base}` by run, cell and stage.

**Re-run**: clear any task; builds and pushes are idempotent (the same tags, the same
commit), and a cleared test task tests the same image digest again.
**Manual run**: trigger with Params to pick frameworks, arches and a git ref; it moves the
moving tags only with `publish` on.
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
            False,
            type="boolean",
            title="Publish moving tags",
            description="Move the moving tags (nightly-*, main-*-framework-*) to this run's images, forward only."
            " Scheduled and backfill runs do unless their conf says false; other runs only when set."
            " Run tags are always pushed.",
        ),
    }


def _cell_common(plan: Plan, cell: Cell, spec: TaskSpec) -> dict[str, Any]:
    return {
        "spec": spec,
        "store": plan.store,
        "framework": cell.framework,
        "arch": cell.arch,
        "backoff": plan.backoff,
        "source_task_id": plan.resolve.task_id,
        "retry_policy": FAIL_FAST,
    }


def builder_args(plan: Plan, cell: Cell) -> dict[str, Any]:
    """What every build of CELL shares, the nightly's and the culprit finder's candidates'."""
    b = plan.build
    return {"builder_conn_id": cell.builder_conn_id, "docker_cli": b.docker_cli, "platform": cell.platform,
            "dockerfile": cell.dockerfile, "build_args": dict(cell.build_args), "network_mode": b.network_mode,
            "secrets": b.secrets, "source_conn_id": plan.source.conn_id,
            "execution_timeout": timedelta(minutes=b.timeout_minutes)}  # fmt: skip


def _build(plan: Plan, cell: Cell, build: Build) -> BuildImageOperator:
    # Cache: the cell's framework image (for the runtime build, the exact one this run
    # built), last night's runtime image where the cache registry has it, and the cell's
    # registry cache where the builder exports one.
    tags: tuple[str, ...] = (cell.framework_tag,)
    if any(p.registry == cell.cache_registry for p in cell.runtime_pushes):
        tags += (cell.nightly_tag,)
    from_build = cell.framework_build.task.task_id if build.image == RUNTIME else None
    return BuildImageOperator(
        **_cell_common(plan, cell, build.task),
        **builder_args(plan, cell),
        image=build.image,
        target=build.target,
        cache=BuildCache(
            plan.registries[cell.cache_registry],
            tags,
            from_build,
            cache_tag(cell.framework, cell.arch) if build.image == RUNTIME else None,
        ),
        run_tag_pattern=cell.run_tag_pattern,
    )


def _push(plan: Plan, cell: Cell, push: Push) -> PushImageOperator:
    return PushImageOperator(
        **_cell_common(plan, cell, push.task),
        image=push.image,
        registry=plan.registries[push.registry],
        source_registry=plan.registries[cell.cache_registry],
        build_task_id=cell.build_of(push.image).task.task_id,
        moving_tags=cell.tags_for(push.image),
        run_tag_pattern=cell.run_tag_pattern if push.image == RUNTIME else None,
        source_conn_id=plan.source.conn_id,
        # A push copies as much as a build made, across registries: the same time limit (L3).
        execution_timeout=timedelta(minutes=plan.build.timeout_minutes),
    )


def _runner_args(plan: Plan, cell: Cell, r: RunnerSpec) -> dict[str, Any]:
    """The arguments of a suite's backend: where and how its container or pod runs."""
    if r.backend == "kubernetes":
        return {
            "kubernetes_conn_id": r.conn_id,
            "namespace": r.namespace,
            "node_selector": dict(r.node_selector),
            "tolerations": [dict(t) for t in r.tolerations],
            "image_pull_secrets": list(r.image_pull_secrets),
            "startup_timeout_seconds": r.startup_timeout_seconds,
            "network": r.network,
            "registry": plan.registries[cell.test_registry],
            "pull_secret": r.pull_secret,
            "volumes": dict(r.volumes),
        }
    return {
        "docker_conn_id": r.conn_id,
        "registry": plan.registries[cell.test_registry],
        "platform": cell.platform,
        "backoff": plan.backoff,
        "network_mode": r.network_mode,
        "startup_timeout_seconds": r.startup_timeout_seconds,
        "volumes": dict(r.volumes),  # folders of the engine's host, read-only
    }


def _suite(plan: Plan, cell: Cell, job: TestJob) -> NightlyOperator:
    r = job.runner
    common: dict[str, Any] = {
        "spec": job.task,
        "store": plan.store,
        "framework": cell.framework,
        "arch": cell.arch,
        "suite": job.suite,
        "image": PushResult.pinned_template(cell.test_push.task.task_id),
        "command": job.command,
        "mode": job.mode,
        "marker": job.marker,
        "workdir": plan.workdir,
        "junit_path": job.junit_path,
        "timeout_minutes": job.timeout_minutes,
        "gpus": job.container_gpus,
        "cpus": r.cpus,
        "memory": r.memory,
        "retries": 0,  # a failing suite is a result, not a hiccup; it is not re-run
    }
    backend = KubernetesSuiteOperator if r.backend == "kubernetes" else DockerSuiteOperator
    return backend(**common, **_runner_args(plan, cell, r))


def rerun_partial(
    plan: Plan, cell: Cell, suites: Reruns, spec: TaskSpec, operator: type[BaseOperator], **extra: Any
) -> Any:
    """A mapped run of some of CELL's tests in an image given per instance (a flake rerun, a
    culprit candidate's run): OPERATOR on the cell's runner, every argument but the mapped
    ones (suite, attempt, image, tests, gpus, timeout_minutes, ...) and EXTRA. SUITES: the
    cell's run-mode suites (their runner, their longest time limit)."""
    r = suites.jobs[0].runner  # a cell's suites share its test pool's runner
    return operator.partial(
        **placement(spec),
        spec=spec,
        store=plan.store,
        framework=cell.framework,
        arch=cell.arch,
        workdir=plan.workdir,
        results_dir=plan.results_dir,
        cpus=r.cpus,
        memory=r.memory,
        retries=0,  # its tests failing is what it observes; an infra failure leaves them unjudged
        execution_timeout=rerun_time_limit(suites, r.startup_timeout_seconds),
        **{**_runner_args(plan, cell, r), **extra},
    )


def rerun_task(plan: Plan, cell: Cell, reruns: Reruns, items: Any) -> Any:
    """The mapped rerun of CELL's newly failing cases: one instance per item of ITEMS (the
    find task's output: suite, attempt, image, tests, gpus, timeout_minutes)."""
    operator = rerun_operator(reruns.jobs[0].runner.backend)
    return rerun_partial(plan, cell, reruns, reruns.rerun_task, operator, reruns=reruns).expand_kwargs(items)


def _reruns(plan: Plan, cell: Cell, reruns: Reruns, tests: TaskGroup) -> None:
    with TaskGroup(RERUNS_GROUP, tooltip=f"Rerun tonight's newly failing {cell.framework} {cell.arch} cases"):
        h = plan.history
        find = FindRerunsOperator(
            spec=reruns.find_task,
            store=plan.store,
            reruns=reruns,
            framework=cell.framework,
            arch=cell.arch,
            history_conn_id=h.conn_id,
            attempts=h.reruns,
            max_cases=h.max_rerun_cases,
            execution_timeout=REPORT_TIMEOUT,
        )
        tests >> find >> rerun_task(plan, cell, reruns, find.output)


def _cell_group(plan: Plan, cell: Cell, resolve: ResolveSourceOperator) -> TaskGroup:
    with TaskGroup(cell.group_id, tooltip=f"Build, publish and test {cell.framework} for {cell.platform}") as group:
        build_fw = _build(plan, cell, cell.framework_build)
        push_fw = {p.registry: _push(plan, cell, p) for p in cell.framework_pushes}
        build_rt = _build(plan, cell, cell.runtime_build)
        push_rt = {p.registry: _push(plan, cell, p) for p in cell.runtime_pushes}
        with TaskGroup(TESTS_GROUP, tooltip=f"Test suites in the pushed {cell.framework} {cell.arch} image") as tests:
            for job in cell.tests:
                _suite(plan, cell, job)
        chain(resolve, build_fw, list(push_fw.values()))
        push_fw[cell.cache_registry] >> build_rt >> list(push_rt.values())
        # Tests wait for their own cell's push to the test registry, nothing else.
        push_rt[cell.test_registry] >> tests
        if cell.reruns is not None:
            _reruns(plan, cell, cell.reruns, tests)
    return group


def build_dag(plan: Plan) -> DAG:
    start = datetime.combine(plan.start_date, datetime.min.time(), tzinfo=UTC)
    with NightlyDAG(
        dag_id=plan.dag_id,
        schedule=plan.schedule,
        start_date=start,
        catchup=plan.catchup,
        max_active_runs=plan.max_active_runs,
        doc_md=_doc(plan),
        tags=list(plan.tags),
        default_args={"owner": plan.owner, "retries": plan.build.retries, "retry_delay": timedelta(minutes=1)},
        deadline=_deadline(plan),
    ) as dag:
        resolve = ResolveSourceOperator(
            spec=plan.resolve,
            store=plan.store,
            repository=plan.source.repository,
            branch=plan.source.branch,
            conn_id=plan.source.conn_id,
            git_timeout_seconds=plan.source.timeout_seconds,
            retry_policy=FAIL_FAST,
            # Each git command ends within source.timeout_seconds; this bounds the task as a whole.
            execution_timeout=timedelta(hours=1),
        )
        groups = [_cell_group(plan, cell, resolve) for cell in plan.cells]
        # Reading the store and posting to Slack end, too (L3: Slack's Retry-After is slept as given).
        summary = SummaryOperator(
            **placement(plan.summary), plan=plan, store=plan.store, execution_timeout=REPORT_TIMEOUT
        )
        verdict = VerdictOperator(
            **placement(plan.verdict), summary_task_id=plan.summary.task_id, execution_timeout=REPORT_TIMEOUT
        )
        groups >> summary >> verdict
        slack = plan.slack
        if plan.notify is not None and slack.conn_id:
            summary >> SlackNotifyOperator(
                **placement(plan.notify),
                summary_task_id=plan.summary.task_id,
                slack_conn_id=slack.conn_id,
                channel=slack.channel,
                ops_group_id=slack.ops_group_id,
                when=slack.when,
                slack_retries=slack.retries,
                store=plan.store,
                execution_timeout=REPORT_TIMEOUT,
            )
        if plan.announce is not None:
            summary >> _announce(plan, plan.announce)
    # The Params come last: Airflow deep-copies the DAG's Params into each task it creates (a third of
    # a 40-cell parse); a task needs none of its own (process_params merges the DAG's in at run time).
    dag.params = _params(plan)  # type: ignore[assignment]  # attrs converts the dict
    _check_ids(plan, dag)
    return dag


def _announce(plan: Plan, spec: TaskSpec) -> AnnounceRegressionsOperator:
    """The night's regressions to the culprit finder, as an event of its Asset."""
    return AnnounceRegressionsOperator(
        **placement(spec),
        store=plan.store,
        suites=plan.suites,
        record_files={job.task.task_id: job.task.record_file for cell in plan.cells for job in cell.tests},
        history_conn_id=plan.history.conn_id,
        asset_name=regressions_asset(plan.dag_id),
        execution_timeout=REPORT_TIMEOUT,
    )


def _check_ids(plan: Plan, dag: DAG) -> None:
    """The plan's ids are the DAG's: the table, the records and the links rely on it."""
    planned, rendered = {t.task_id for t in plan.tasks()}, set(dag.task_dict)
    if planned != rendered:
        raise AssertionError(f"the DAG's task ids differ from the plan's: {sorted(planned ^ rendered)}")


def _deadline(plan: Plan) -> DeadlineAlert | None:
    """A nightly still running after deadline_hours posts to Slack while it runs."""
    if not plan.slack.conn_id or not plan.deadline_hours:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=plan.deadline_hours),
        callback=AsyncCallback(
            OVERRUN_CALLBACK,
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
