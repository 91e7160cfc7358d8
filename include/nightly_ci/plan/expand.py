"""Expand a validated config into the plan: the cells, and the TaskSpec of every task
with the original pipeline's job names. Pure Python, no Airflow."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.config.files import config_path
from include.nightly_ci.names import (
    BUILD,
    FRAMEWORK,
    PUSH,
    REPORT,
    RERUN,
    RETENTION,
    RUNTIME,
    SOURCE,
    TEST,
    render_path,
    render_tag,
)
from include.nightly_ci.plan.cache import Sources, plan_of
from include.nightly_ci.plan.model import (
    JUNIT_FILE,
    RERUNS_GROUP,
    TESTS_GROUP,
    Backoff,
    Build,
    Cell,
    Plan,
    Push,
    Registry,
    Reruns,
    RunnerSpec,
    Source,
    TagPatterns,
    TaskSpec,
    TestJob,
    cell_group_id,
    engines_by_pool,
)

if TYPE_CHECKING:
    from include.nightly_ci.config.schema import NightlyConfig


def _build_args(cfg: NightlyConfig, framework: str, arch: str) -> tuple[tuple[str, str], ...]:
    args = {"FRAMEWORK": framework, "ARCH": arch}
    args.update(cfg.frameworks[framework].build_args)
    args.update(cfg.arches[arch].build_args)
    args.update(cfg.overrides.get(arch, {}).get(framework, {}))
    return tuple(sorted(args.items()))


def pytest_command(marker: str, mode: str, results_dir: str) -> tuple[str, ...]:
    """The original's pytest line (reference section 7), or its collect-only dry run."""
    if mode == "collect":
        return ("pytest", "-v", "--collect-only", "-m", marker)
    return (
        "pytest", "--continue-on-collection-errors", "-v", "--tb=short", "--basetemp=/tmp",
        "-o", "cache_dir=/tmp/.pytest_cache", f"--junitxml={results_dir}/{JUNIT_FILE}", "--durations=10",
        "-m", marker,
    )  # fmt: skip


def rerun_command(node_ids: Iterable[str], results_dir: str) -> tuple[str, ...]:
    """The pytest line of a rerun: only NODE_IDS (no marker), its JUnit where a suite's goes."""
    return (
        "pytest", "-v", "--tb=short", "--basetemp=/tmp", "-o", "cache_dir=/tmp/.pytest_cache",
        f"--junitxml={results_dir}/{JUNIT_FILE}", *node_ids,
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
        network=r.network,
        network_mode=r.network_mode if r.network else "none",
        namespace=r.namespace,
        node_selector=tuple(sorted(r.node_selector.items())),
        tolerations=tuple(tuple(sorted(t.model_dump(exclude_none=True).items())) for t in r.tolerations),
        image_pull_secrets=tuple(r.image_pull_secrets),
        pull_secret=r.pull_secret,
        startup_timeout_seconds=r.startup_timeout_seconds,
        volumes=tuple(sorted(r.volumes.items())),
    )


class _Namer:
    """Makes the TaskSpecs of one cell: ids, the original pipeline's job names, pools."""

    def __init__(self, cfg: NightlyConfig, framework: str, arch: str):
        self.cfg, self.fw, self.arch = cfg, framework, arch
        self.group = cell_group_id(framework, arch)
        self.settings = cfg.arches[arch]

    def _queue(self, pool: str) -> str:
        return self.cfg.pools[pool].queue or pool

    def _spec(self, local: str, name: str, stage: str, pool: str | None, artifact_dir: str, slots: int = 1) -> TaskSpec:
        within = {TEST: f"{TESTS_GROUP}.{local}", RERUN: f"{RERUNS_GROUP}.{local}"}.get(stage, local)
        return TaskSpec(
            task_id=f"{self.group}.{within}",
            local_id=local,
            display_name=name,
            stage=stage,
            pool=pool,
            pool_slots=slots,
            queue=self._queue(pool) if pool else None,
            cell=self.group,
            artifact_dir=f"{self.group}/{artifact_dir}",
            record_file=f"{self.group}/tasks/{within}.json",
        )

    def build(self, image: str) -> TaskSpec:
        # The original's job names: "{fw}-framework ({arch})" and "Build {fw} ({arch})".
        name = f"{self.fw}-framework ({self.arch})" if image == FRAMEWORK else f"Build {self.fw} ({self.arch})"
        return self._spec(f"build_{image}", name, BUILD, self.settings.build_pool, "build")

    def push(self, image: str, registry: str) -> TaskSpec:
        what = f"{self.fw}-framework" if image == FRAMEWORK else self.fw
        name = f"Push {what} ({self.arch}) to {registry}"
        # A push takes a slot of its arch's build pool: it runs on (and loads) the builder's engine.
        return self._spec(f"push_{image}_{registry}", name, PUSH, self.settings.build_pool, "build")

    def test(self, suite: str, mode: str, slots: int) -> TaskSpec:
        name = f"{self.fw}-{self.arch}-{suite}" + (" (collect only)" if mode == "collect" else "")
        return self._spec(suite, name, TEST, self.settings.test_pool, f"test-{suite}", slots)

    def reruns(self, jobs: tuple[TestJob, ...]) -> Reruns:
        # The find reads files and a database: the default pool and queue, never a GPU slot.
        find = self._spec("find", f"{self.fw}-{self.arch}-find-flakes", RERUN, None, RERUNS_GROUP)
        # Airflow can't map pool_slots: every rerun takes as many as the cell's largest suite.
        slots = max(j.pool_slots for j in jobs)
        rerun = self._spec("rerun", f"{self.fw}-{self.arch}-rerun", RERUN, self.settings.test_pool, RERUNS_GROUP, slots)
        return Reruns(cell=self.group, find_task=find, rerun_task=rerun, jobs=jobs)


def _tests(cfg: NightlyConfig, namer: _Namer) -> tuple[TestJob, ...]:
    a = cfg.arches[namer.arch]
    runner = _runner(cfg, a.test_pool)
    running = a.test_mode == "run"
    jobs = []
    for name, suite in cfg.tests.suites.items():
        marker = suite.marker.format(framework=namer.fw)
        jobs.append(
            TestJob(
                suite=name,
                marker=marker,
                mode=a.test_mode,
                timeout_minutes=suite.timeout_minutes,
                gpus=suite.gpus if running else 0,
                runner=runner,
                command=pytest_command(marker, a.test_mode, cfg.tests.results_dir),
                junit_path=f"{cfg.tests.results_dir}/{JUNIT_FILE}" if running else None,
                # A pool of GPU runners counts GPUs: a 2-GPU suite takes 2 slots.
                task=namer.test(name, a.test_mode, max(1, suite.gpus) if running else 1),
            )
        )
    return tuple(jobs)


def _cell(cfg: NightlyConfig, framework: str, arch: str) -> Cell:
    a = cfg.arches[arch]
    namer = _Namer(cfg, framework, arch)
    tests = _tests(cfg, namer)
    running = tuple(j for j in tests if j.mode == "run")  # a collect-only suite fails no test case
    framework_regs = [name for name, r in cfg.registries.items() if FRAMEWORK in r.images]
    runtime_regs = [name for name, r in cfg.registries.items() if RUNTIME in r.images]
    return Cell(
        framework=framework,
        arch=arch,
        platform=a.platform,
        build_pool=a.build_pool,
        test_pool=a.test_pool,
        builder_conn_id=a.builder.conn_id,
        dockerfile=render_path(cfg.source.dockerfile, framework, arch),
        build_args=_build_args(cfg, framework, arch),
        framework_tag=render_tag(cfg.tags.framework, framework, arch),
        nightly_tag=render_tag(cfg.tags.nightly, framework, arch),
        run_tag_pattern=cfg.tags.run,
        builds=(
            Build(FRAMEWORK, cfg.build.framework_target, namer.build(FRAMEWORK)),
            Build(RUNTIME, cfg.build.runtime_target, namer.build(RUNTIME)),
        ),
        framework_pushes=tuple(Push(r, FRAMEWORK, namer.push(FRAMEWORK, r)) for r in framework_regs),
        runtime_pushes=tuple(Push(r, RUNTIME, namer.push(RUNTIME, r)) for r in runtime_regs),
        cache_registry=framework_regs[0],
        test_registry=cfg.tests.registry or next((r for r in runtime_regs if r == framework_regs[0]), runtime_regs[0]),
        tests=tests,
        reruns=namer.reruns(running) if running else None,
    )


def _top(task_id: str, name: str, stage: str) -> TaskSpec:
    """A task outside the cells (default pool and queue)."""
    return TaskSpec(
        task_id=task_id, local_id=task_id, display_name=name, stage=stage, record_file=f"tasks/{task_id}.json"
    )


def _prune_engines(cfg: NightlyConfig, cells: tuple[Cell, ...]) -> dict[str, TaskSpec]:
    """A retention task per pool whose tasks use Docker engines, on that pool's queue (its
    workers reach those engines; a local engine is theirs): key "engines:POOL"."""
    specs = {}
    for pool in engines_by_pool(cells):
        spec = _top(f"prune_engines_{re.sub(r'[^a-z0-9_]', '_', pool)}", f"Prune engines of {pool}", RETENTION)
        specs[f"engines:{pool}"] = replace(spec, queue=cfg.pools[pool].queue or pool)
    return specs


def build_plan(cfg: NightlyConfig) -> Plan:
    cells = tuple(_cell(cfg, fw, arch) for fw in cfg.frameworks for arch in cfg.arches)
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
            conn_id=cfg.source.conn_id,
            timeout_seconds=cfg.source.timeout_seconds,
        ),
        tag_patterns=TagPatterns(cfg.tags.framework, cfg.tags.nightly, cfg.tags.run),
        frameworks=tuple(cfg.frameworks),
        arches=tuple(cfg.arches),
        cells=cells,
        registries={
            name: Registry(name, r.kind, r.conn_id, r.repository, r.host_override, r.registry_id)
            for name, r in cfg.registries.items()
        },
        pools={name: (p.slots, p.description) for name, p in cfg.pools.items()},
        queues={name: p.queue or name for name, p in cfg.pools.items()},
        build=cfg.build,
        backoff=Backoff(
            cfg.build.push_attempts,
            cfg.build.push_backoff_seconds,
            cfg.build.push_backoff_max_seconds,
            cfg.build.moving_tag_settle_seconds,
        ),
        store=ArtifactStore(cfg.artifacts.base, cfg.artifacts.conn_id),
        workdir=cfg.tests.workdir,
        results_dir=cfg.tests.results_dir,
        retention_schedule=cfg.retention.schedule,
        artifacts_days=cfg.retention.artifacts_days,
        run_tags_days=cfg.retention.run_tags_days,
        slack=cfg.notifications.slack,
        deadline_hours=cfg.notifications.deadline_hours,
        history=cfg.history,
        # The original pipeline's job names where it had the job.
        resolve=_top("resolve_source", "Resolve commit", SOURCE),
        summary=_top("results_summary", "Results Summary", REPORT),
        verdict=_top("verdict", "Verdict", REPORT),
        notify=_top("notify_slack", "Notify Slack", REPORT) if cfg.notifications.slack.conn_id else None,
        culprit=cfg.culprit,
        announce=_top("announce_regressions", "Announce regressions", REPORT) if cfg.culprit.enabled else None,
        retention_tasks={
            "artifacts": _top("expire_artifacts", "Expire artifacts", RETENTION),
            **{
                name: _top(f"expire_run_tags_{name}", f"Expire run tags in {name}", RETENTION)
                for name in cfg.registries
            },
            **_prune_engines(cfg, cells),
        },
    )


def load_plan(file: str | None = None) -> Plan:
    """The plan of the config FILE (default: $NIGHTLY_CI_CONFIG, else the shipped one), kept
    between parses while neither the config's files nor the code change (plan/cache.py)."""
    return plan_of(config_path(file), _make_plan)


def _make_plan(path: Path) -> tuple[Plan, Sources]:
    from include.nightly_ci.config.loader import read_config  # the loader and the whole model: on a miss only

    cfg, sources = read_config(path)
    return build_plan(cfg), sources
