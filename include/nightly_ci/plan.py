"""Expand a validated config into the build cells of one nightly: pure Python, no Airflow.

Every name the DAG and the tasks use (group and task ids, image tags, build args,
artifact paths) is made here, so the rendering and the tasks never invent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from include.nightly_ci.config import BuildSettings, NightlyConfig, load_config, resolve_local
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

    @property
    def group_id(self) -> str:
        return f"{self.framework}_{self.arch}"

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
    build: BuildSettings
    artifacts_base: str
    artifacts_conn_id: str | None

    def cell(self, framework: str, arch: str) -> Cell:
        return next(c for c in self.cells if c.framework == framework and c.arch == arch)


def _build_args(cfg: NightlyConfig, framework: str, arch: str) -> tuple[tuple[str, str], ...]:
    args = {"FRAMEWORK": framework, "ARCH": arch}
    args.update(cfg.frameworks[framework].build_args)
    args.update(cfg.arches[arch].build_args)
    args.update(cfg.overrides.get(arch, {}).get(framework, {}))
    return tuple(sorted(args.items()))


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
            repository=resolve_local(cfg.source.repository, cfg.base_dir),
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
        build=cfg.build,
        artifacts_base=resolve_local(cfg.artifacts.base, cfg.base_dir),
        artifacts_conn_id=cfg.artifacts.conn_id,
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
