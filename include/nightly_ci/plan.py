"""Expand a validated config into the build cells of one nightly: pure Python, no Airflow.

Every name the DAG and the tasks use (group and task ids, image tags, build args,
artifact paths) is made here, so the rendering and the tasks never invent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from include.nightly_ci.config import BuildSettings, NightlyConfig, SlackSettings, load_config
from include.nightly_ci.names import render_tag, tag_safe_run_id

FRAMEWORK, RUNTIME = "framework", "runtime"
# OCI and project labels every image carries.
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_LOGICAL_DATE = "dev.nightly-ci.logical-date"
LABEL_RUN_ID = "dev.nightly-ci.run-id"


@dataclass(frozen=True)
class Push:
    registry: str
    image: str  # FRAMEWORK or RUNTIME

    @property
    def task_id(self) -> str:
        return f"push_{self.image}_{self.registry}"


@dataclass(frozen=True)
class Registry:
    name: str
    kind: str  # ecr | acr | docker
    conn_id: str
    repository: str
    host_override: str | None = None
    registry_id: str | None = None


@dataclass(frozen=True)
class Source:
    repository: str
    branch: str
    dockerfile: str
    context: str


@dataclass(frozen=True)
class RunnerSpec:
    backend: str  # docker | kubernetes
    conn_id: str | None
    gpus: bool
    cpus: float | None
    memory: str | None
    network_mode: str | None
    namespace: str
    node_selector: tuple[tuple[str, str], ...]
    tolerations: tuple[tuple[tuple[str, str], ...], ...]
    image_pull_secrets: tuple[str, ...]
    startup_timeout_seconds: int


@dataclass(frozen=True)
class TestJob:
    """One suite of one cell: what runs, where, for how long."""

    __test__ = False  # not a pytest class

    suite: str
    marker: str  # {framework} filled in
    mode: str  # run | collect
    timeout_minutes: int
    gpus: int  # GPUs the container asks for (0 when collecting)
    pool: str
    pool_slots: int
    runner: RunnerSpec
    command: tuple[str, ...]

    @property
    def task_id(self) -> str:
        return self.suite


@dataclass(frozen=True)
class Cell:
    """One framework x arch: its builds, pushes and the names they use."""

    framework: str
    arch: str
    platform: str
    build_pool: str
    test_pool: str
    builder_conn_id: str | None
    build_args: tuple[tuple[str, str], ...]
    framework_tag: str
    nightly_tag: str
    run_tag_pattern: str
    framework_pushes: tuple[Push, ...]
    runtime_pushes: tuple[Push, ...]
    cache_registry: str  # where the runtime build pulls the framework image from
    test_registry: str  # where the tests pull the runtime image from, by digest
    tests: tuple[TestJob, ...] = ()

    @property
    def group_id(self) -> str:
        return f"{self.framework}_{self.arch}"

    @property
    def test_push_task_id(self) -> str:
        """The one task the cell's tests wait for: the runtime push to the test registry."""
        return f"{self.group_id}.{Push(self.test_registry, RUNTIME).task_id}"

    def run_tag(self, run_id: str) -> str:
        return render_tag(self.run_tag_pattern, self.framework, self.arch, run_id)

    def tags_for(self, image: str) -> tuple[str, ...]:
        """Moving tags of IMAGE (the run tag of a runtime image comes from run_tag)."""
        return (self.framework_tag,) if image == FRAMEWORK else (self.nightly_tag,)


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
    frameworks: tuple[str, ...]
    arches: tuple[str, ...]
    cells: tuple[Cell, ...]
    registries: dict[str, Registry]
    pools: dict[str, tuple[int, str]]
    queues: dict[str, str]  # pool -> Celery queue
    build: BuildSettings
    artifacts_base: str
    artifacts_conn_id: str | None
    workdir: str
    results_dir: str
    retention_schedule: str
    artifacts_days: int
    run_tags_days: int
    slack: SlackSettings
    deadline_hours: float | None

    def cell(self, framework: str, arch: str) -> Cell:
        return next(c for c in self.cells if c.framework == framework and c.arch == arch)


def _build_args(cfg: NightlyConfig, framework: str, arch: str) -> tuple[tuple[str, str], ...]:
    args = {"FRAMEWORK": framework, "ARCH": arch}
    args.update(cfg.frameworks[framework].build_args)
    args.update(cfg.arches[arch].build_args)
    args.update(cfg.overrides.get(arch, {}).get(framework, {}))
    return tuple(sorted(args.items()))


JUNIT_FILE = "pytest_test_report.xml"


def pytest_command(marker: str, mode: str, results_dir: str) -> tuple[str, ...]:
    """The original's pytest line (reference section 7), or its collect-only dry run."""
    if mode == "collect":
        return ("pytest", "-v", "--collect-only", "-m", marker)
    return (
        "pytest", "--continue-on-collection-errors", "-v", "--tb=short", "--basetemp=/tmp",
        "-o", "cache_dir=/tmp/.pytest_cache", f"--junitxml={results_dir}/{JUNIT_FILE}", "--durations=10",
        "-m", marker,
    )  # fmt: skip


def _runner(cfg: NightlyConfig, pool: str) -> RunnerSpec:
    r = cfg.pools[pool].runner
    assert r is not None  # the validator requires a runner on every test pool
    return RunnerSpec(
        backend=r.backend,
        conn_id=r.conn_id,
        gpus=r.gpus,
        cpus=r.cpus,
        memory=r.memory,
        network_mode=r.network_mode,
        namespace=r.namespace,
        node_selector=tuple(sorted(r.node_selector.items())),
        tolerations=tuple(tuple(sorted(t.model_dump(exclude_none=True).items())) for t in r.tolerations),
        image_pull_secrets=tuple(r.image_pull_secrets),
        startup_timeout_seconds=r.startup_timeout_seconds,
    )


def _tests(cfg: NightlyConfig, framework: str, arch: str) -> tuple[TestJob, ...]:
    a = cfg.arches[arch]
    runner = _runner(cfg, a.test_pool)
    jobs = []
    for name, suite in cfg.tests.suites.items():
        marker = suite.marker.format(framework=framework)
        running = a.test_mode == "run"
        jobs.append(
            TestJob(
                suite=name,
                marker=marker,
                mode=a.test_mode,
                timeout_minutes=suite.timeout_minutes,
                gpus=suite.gpus if running else 0,
                pool=a.test_pool,
                # A pool of GPU runners counts GPUs: a 2-GPU suite takes 2 slots.
                pool_slots=max(1, suite.gpus) if running else 1,
                runner=runner,
                command=pytest_command(marker, a.test_mode, cfg.tests.results_dir),
            )
        )
    return tuple(jobs)


def _cell(cfg: NightlyConfig, framework: str, arch: str) -> Cell:
    a = cfg.arches[arch]
    framework_regs = [name for name, r in cfg.registries.items() if FRAMEWORK in r.images]
    runtime_regs = [name for name, r in cfg.registries.items() if RUNTIME in r.images]
    return Cell(
        framework=framework,
        arch=arch,
        platform=a.platform,
        build_pool=a.build_pool,
        test_pool=a.test_pool,
        builder_conn_id=a.builder.conn_id,
        build_args=_build_args(cfg, framework, arch),
        framework_tag=render_tag(cfg.tags.framework, framework, arch),
        nightly_tag=render_tag(cfg.tags.nightly, framework, arch),
        run_tag_pattern=cfg.tags.run,
        framework_pushes=tuple(Push(r, FRAMEWORK) for r in framework_regs),
        runtime_pushes=tuple(Push(r, RUNTIME) for r in runtime_regs),
        cache_registry=framework_regs[0],
        test_registry=cfg.tests.registry or next((r for r in runtime_regs if r == framework_regs[0]), runtime_regs[0]),
        tests=_tests(cfg, framework, arch),
    )


def build_plan(cfg: NightlyConfig) -> Plan:
    return Plan(
        dag_id=cfg.dag.dag_id,
        schedule=cfg.dag.schedule,
        start_date=cfg.dag.start_date,
        catchup=cfg.dag.catchup,
        max_active_runs=cfg.dag.max_active_runs,
        owner=cfg.dag.owner,
        tags=tuple(cfg.dag.tags),
        source=Source(
            repository=cfg.source.repository,
            branch=cfg.source.branch,
            dockerfile=cfg.source.dockerfile,
            context=cfg.source.context,
        ),
        frameworks=tuple(cfg.frameworks),
        arches=tuple(cfg.arches),
        cells=tuple(_cell(cfg, fw, arch) for fw in cfg.frameworks for arch in cfg.arches),
        registries={
            name: Registry(name, r.kind, r.conn_id, r.repository, r.host_override, r.registry_id)
            for name, r in cfg.registries.items()
        },
        pools={name: (p.slots, p.description) for name, p in cfg.pools.items()},
        queues={name: p.queue or name for name, p in cfg.pools.items()},
        build=cfg.build,
        artifacts_base=cfg.artifacts.base,
        artifacts_conn_id=cfg.artifacts.conn_id,
        workdir=cfg.tests.workdir,
        results_dir=cfg.tests.results_dir,
        retention_schedule=cfg.retention.schedule,
        artifacts_days=cfg.retention.artifacts_days,
        run_tags_days=cfg.retention.run_tags_days,
        slack=cfg.notifications.slack,
        deadline_hours=cfg.notifications.deadline_hours,
    )


def load_plan(file: str | None = None) -> Plan:
    return build_plan(load_config(file))


def moving_tag_may_move(current_night: datetime | None, this_night: datetime) -> bool:
    """The moving tag only moves forward: an older night (a backfill) leaves it alone.

    The same night may re-push (a retry or a cleared task), so equality moves.
    """
    return current_night is None or this_night >= current_night


def artifact_key(run_id: str, cell: Cell, stage: str, name: str) -> str:
    """One layout for every artifact: RUN/CELL/STAGE/NAME."""
    return f"{tag_safe_run_id(run_id)}/{cell.group_id}/{stage}/{name}"
