"""The plan of one nightly: every cell, build, push and suite, and a TaskSpec for every
task. Pure Python, no Airflow.

The plan owns every name: each task's id, display name, stage, pool, queue and artifact
folder is made once (plan/expand.py), and the DAG, the results table, the artifact
layout, the demo's printout and the UI's links all read it. Nothing else formats or
parses a task id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.config.culprit import CulpritSettings
from include.nightly_ci.config.history import HistorySettings
from include.nightly_ci.config.sections import BuildSettings, SlackSettings
from include.nightly_ci.names import FRAMEWORK, render_tag, tag_safe_run_id

JUNIT_FILE = "pytest_test_report.xml"
TESTS_GROUP = "tests"
RERUNS_GROUP = "reruns"


@dataclass(frozen=True)
class TaskSpec:
    """One task of a nightly, as every part of the project names and places it."""

    task_id: str  # the full id: "vllm_amd64.tests.unit"
    local_id: str  # its id inside its TaskGroup: "unit"
    display_name: str  # the UI's name and the table's Stage column: "vllm-amd64-unit"
    stage: str  # source | build | push | test | report
    pool: str | None = None  # None: Airflow's default pool
    pool_slots: int = 1
    queue: str | None = None  # None: the default queue
    cell: str | None = None  # the cell's group id ("vllm_amd64"), None outside cells
    artifact_dir: str = ""  # relative to the run's folder: "vllm_amd64/test-unit"
    record_file: str = ""  # the task's record, relative to the run's folder: "vllm_amd64/tasks/tests.unit.json"

    def artifact_key(self, run_id: str, name: str) -> str:
        """RUN/ARTIFACT_DIR/NAME: one layout for every artifact of every task."""
        return f"{tag_safe_run_id(run_id)}/{self.artifact_dir}/{name}"

    def record_key(self, run_id: str) -> str:
        return f"{tag_safe_run_id(run_id)}/{self.record_file}"


@dataclass(frozen=True)
class Registry:
    name: str
    kind: str  # ecr | acr | docker
    conn_id: str
    repository: str
    host_override: str | None = None
    registry_id: str | None = None


@dataclass(frozen=True)
class Backoff:
    """Retries of a transient registry error: ATTEMPTS tries, waits doubling from FIRST to MAX."""

    attempts: int
    first_seconds: float
    max_seconds: float
    settle_seconds: float = 15.0  # a moving tag's read-back wait (images/moving.py)


@dataclass(frozen=True)
class Source:
    repository: str
    branch: str
    dockerfile: str
    context: str
    conn_id: str | None = None  # a private repository's credentials (see config Source.conn_id)
    timeout_seconds: int = 600  # each git command's limit


@dataclass(frozen=True)
class TagPatterns:
    framework: str
    nightly: str
    run: str


@dataclass(frozen=True)
class Build:
    """One image of a cell: which Dockerfile target, and the task that builds it."""

    image: str  # FRAMEWORK or RUNTIME
    target: str
    task: TaskSpec


@dataclass(frozen=True)
class Push:
    """One image of a cell to one registry."""

    registry: str
    image: str  # FRAMEWORK or RUNTIME
    task: TaskSpec


@dataclass(frozen=True)
class RunnerSpec:
    backend: str  # docker | kubernetes
    conn_id: str | None
    gpus: bool
    cpus: float | None
    memory: str | None
    network: bool  # whether the test code has a network at all (M12)
    network_mode: str | None  # docker: "none" unless network
    namespace: str
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[tuple[tuple[str, str], ...], ...]
    image_pull_secrets: tuple[str, ...]
    pull_secret: str | None
    startup_timeout_seconds: int
    # (host folder, folder in the container), mounted read-only; the host is the engine's or the node's
    volumes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TestJob:
    """One suite of one cell: what runs, where, for how long."""

    __test__ = False  # not a pytest class

    suite: str
    marker: str  # {framework} filled in
    mode: str  # run | collect
    timeout_minutes: int
    gpus: int  # GPUs the container asks for (0 when collecting)
    runner: RunnerSpec
    command: tuple[str, ...]
    junit_path: str | None  # where pytest writes its JUnit XML in the container (a dry run: none)
    task: TaskSpec

    @property
    def pool(self) -> str:
        assert self.task.pool is not None  # every test task has its arch's test pool
        return self.task.pool

    @property
    def pool_slots(self) -> int:
        return self.task.pool_slots

    @property
    def container_gpus(self) -> int:
        """The GPUs its container asks for: none where the pool's runners have none."""
        return self.gpus if self.runner.gpus else 0


@dataclass(frozen=True)
class Reruns:
    """The flake reruns of one cell: FIND_TASK picks tonight's newly failing cases of the
    run-mode suites (JOBS), RERUN_TASK (mapped, one instance per suite and attempt) runs
    them again in the image they failed in. Not jobs of the results table: the summary
    reads their JUnit at artifact_key() and tells flaky cases from regressions."""

    cell: str  # the cell's group id
    find_task: TaskSpec
    rerun_task: TaskSpec
    jobs: tuple[TestJob, ...]

    def artifact_dir(self, suite: str, attempt: int) -> str:
        """CELL/reruns/SUITE/ATTEMPT, relative to the run's folder."""
        return f"{self.cell}/{RERUNS_GROUP}/{suite}/{attempt}"

    def artifact_key(self, run_id: str, suite: str, attempt: int, name: str) -> str:
        """RUN/CELL/reruns/SUITE/ATTEMPT/NAME: the files of rerun ATTEMPT (1..r) of SUITE.
        A (suite, attempt) is one map index of a night, so no instance writes another's."""
        return f"{tag_safe_run_id(run_id)}/{self.artifact_dir(suite, attempt)}/{name}"

    def record_key(self, run_id: str, map_index: int) -> str:
        """The record of one mapped rerun instance (the map index in its name)."""
        return f"{tag_safe_run_id(run_id)}/{self.rerun_task.record_file.removesuffix('.json')}.{map_index}.json"

    def selection_key(self, run_id: str) -> str:
        """What the find task chose tonight, per suite, and why (for people, and the page)."""
        return f"{tag_safe_run_id(run_id)}/{self.cell}/{RERUNS_GROUP}/selection.json"

    @property
    def timeout_minutes(self) -> int:
        """The longest suite's own limit: a rerun of its cases gets as long."""
        return max(j.timeout_minutes for j in self.jobs)


@dataclass(frozen=True)
class Cell:
    """One framework x arch: its builds, pushes, tests and the names they use."""

    framework: str
    arch: str
    platform: str
    build_pool: str
    test_pool: str
    builder_conn_id: str | None
    dockerfile: str  # the cell's container file, relative to the repository
    build_args: tuple[tuple[str, str], ...]
    framework_tag: str
    nightly_tag: str
    run_tag_pattern: str
    builds: tuple[Build, Build]  # framework, runtime
    framework_pushes: tuple[Push, ...]
    runtime_pushes: tuple[Push, ...]
    cache_registry: str  # where the runtime build pulls the framework image from
    test_registry: str  # where the tests pull the runtime image from, by digest
    tests: tuple[TestJob, ...] = ()
    reruns: Reruns | None = None  # None: no suite runs tests (collect only), nothing to rerun

    @property
    def group_id(self) -> str:
        return cell_group_id(self.framework, self.arch)

    @property
    def framework_build(self) -> Build:
        return self.builds[0]

    @property
    def runtime_build(self) -> Build:
        return self.builds[1]

    def build_of(self, image: str) -> Build:
        return self.framework_build if image == FRAMEWORK else self.runtime_build

    @property
    def cache_push(self) -> Push:
        """The framework push the runtime build waits for and takes its cache from."""
        return next(p for p in self.framework_pushes if p.registry == self.cache_registry)

    @property
    def test_push(self) -> Push:
        """The one task the cell's tests wait for: the runtime push to the test registry."""
        return next(p for p in self.runtime_pushes if p.registry == self.test_registry)

    def run_tag(self, run_id: str) -> str:
        return render_tag(self.run_tag_pattern, self.framework, self.arch, run_id)

    def tags_for(self, image: str) -> tuple[str, ...]:
        """Moving tags of IMAGE (the run tag of a runtime image comes from run_tag)."""
        return (self.framework_tag,) if image == FRAMEWORK else (self.nightly_tag,)

    def tasks(self) -> Iterator[TaskSpec]:
        """Every task of the cell, in the table's order: builds and pushes, then suites."""
        yield self.framework_build.task
        yield from (p.task for p in self.framework_pushes)
        yield self.runtime_build.task
        yield from (p.task for p in self.runtime_pushes)
        yield from (j.task for j in self.tests)

    def needs(self, resolve: str) -> dict[str, tuple[str, ...]]:
        """Each job of the cell -> the tasks it waits for (RESOLVE: the source task): the
        DAG's edges (tests/unit/test_dag.py holds them equal), which the report follows
        from a job that did not run back to the failure that stopped it."""
        framework, runtime = self.framework_build.task.task_id, self.runtime_build.task.task_id
        return {
            framework: (resolve,),
            **{p.task.task_id: (framework,) for p in self.framework_pushes},
            runtime: (self.cache_push.task.task_id,),
            **{p.task.task_id: (runtime,) for p in self.runtime_pushes},
            **{j.task.task_id: (self.test_push.task.task_id,) for j in self.tests},
        }

    def support_tasks(self) -> Iterator[TaskSpec]:
        """The cell's tasks that are not jobs of the table: its flake reruns."""
        if self.reruns is not None:
            yield from (self.reruns.find_task, self.reruns.rerun_task)


@dataclass(frozen=True)
class Plan:
    dag_id: str
    schedule: str
    start_date: date
    catchup: bool
    max_active_runs: int
    owner: str
    tags: tuple[str, ...]
    source: Source
    tag_patterns: TagPatterns
    frameworks: tuple[str, ...]
    arches: tuple[str, ...]
    cells: tuple[Cell, ...]
    registries: dict[str, Registry]
    pools: dict[str, tuple[int, str]]
    queues: dict[str, str]  # pool -> Celery queue
    build: BuildSettings
    backoff: Backoff
    store: ArtifactStore
    workdir: str
    results_dir: str
    retention_schedule: str
    artifacts_days: int
    run_tags_days: int
    slack: SlackSettings
    deadline_hours: float | None
    history: HistorySettings
    resolve: TaskSpec
    summary: TaskSpec
    verdict: TaskSpec
    notify: TaskSpec | None
    culprit: CulpritSettings = field(default_factory=CulpritSettings)
    announce: TaskSpec | None = None  # the night's regressions to the culprit finder (culprit.enabled)
    retention_tasks: dict[str, TaskSpec] = field(default_factory=dict)  # "artifacts" or a registry's name

    @property
    def artifacts_base(self) -> str:
        return self.store.base

    @property
    def retention_dag_id(self) -> str:
        return f"{self.dag_id}_retention"

    def cell(self, framework: str, arch: str) -> Cell:
        return next(c for c in self.cells if c.framework == framework and c.arch == arch)

    def tasks(self) -> Iterator[TaskSpec]:
        """Every task of the nightly DAG, in the order the table and the demo list them."""
        yield self.resolve
        for cell in self.cells:
            yield from cell.tasks()
            yield from cell.support_tasks()
        yield from (t for t in (self.summary, self.verdict, self.notify, self.announce) if t is not None)

    @cached_property
    def by_id(self) -> dict[str, TaskSpec]:
        return {t.task_id: t for t in self.tasks()}

    @cached_property
    def needs(self) -> dict[str, tuple[str, ...]]:
        """Every job of the table -> the tasks it waits for (Cell.needs)."""
        return {k: v for cell in self.cells for k, v in cell.needs(self.resolve.task_id).items()}

    @cached_property
    def suites(self) -> dict[str, tuple[str, str]]:
        """Every suite task's id -> (its cell's group id, the suite's name): how the history
        and the culprit finder name a suite."""
        return {job.task.task_id: (cell.group_id, job.suite) for cell in self.cells for job in cell.tests}

    def task(self, task_id: str) -> TaskSpec:
        """The spec of TASK_ID; KeyError names the task when the plan has no such task."""
        try:
            return self.by_id[task_id]
        except KeyError:
            raise KeyError(f"task {task_id!r} is not a task of {self.dag_id}") from None


def cell_group_id(framework: str, arch: str) -> str:
    return f"{framework}_{arch}"


def publishes(run_type: str, conf: Mapping[str, Any] | None) -> bool:
    """Whether a run moves the moving tags (H1): scheduled and backfill runs do unless their
    conf says `publish: false`; any other run (manual, REST, `airflow dags test`) only when
    its conf says `publish: true`, so a run of a feature branch cannot take `nightly-*`."""
    value = (conf or {}).get("publish")
    if value is None:
        return run_type in ("scheduled", "backfill")
    return str(value).strip().lower() in ("true", "1", "yes")


def engines_by_pool(cells: tuple[Cell, ...]) -> dict[str, tuple[str | None, ...]]:
    """The Docker engines each pool's tasks use (None: its workers' local engine): the
    builder of its builds and the runner of its Docker suites. Retention prunes them from
    that pool's queue, whose workers reach them; an engine of a connection only once (under
    the first pool using it), a local engine once per pool (each pool's workers have theirs)."""
    found: dict[str, list[str | None]] = {}
    named: set[str] = set()
    for cell in cells:
        uses = [(cell.build_pool, cell.builder_conn_id)]
        uses += [(cell.test_pool, job.runner.conn_id) for job in cell.tests if job.runner.backend == "docker"]
        for pool, conn_id in uses:
            if conn_id in named or conn_id in found.get(pool, []):
                continue
            found.setdefault(pool, []).append(conn_id)
            if conn_id:
                named.add(conn_id)
    return {pool: tuple(conns) for pool, conns in found.items()}


def is_selected(framework: str, arch: str, frameworks: list[str], arches: list[str]) -> bool:
    """Whether a run whose Params chose FRAMEWORKS and ARCHES builds the cell FRAMEWORK x ARCH."""
    return framework in frameworks and arch in arches
