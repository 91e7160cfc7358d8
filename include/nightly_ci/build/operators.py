"""The tasks of the build stage: resolve the commit, and build a target with BuildKit.

A build pushes what it built to the cache registry, under a run-scoped tag, and hands on
its digest: the registry is the only handoff, so the push tasks, the runtime build and
the tests may run on any worker (build/publish.py promotes the digest to the tags).

Operators take explicit, typed arguments (no plan, no cell), keep `__init__` to plain
attributes (no I/O at parse time), create their Docker client and registry credentials
lazily, once per task, and import hooks, git and the Docker SDK only when they run.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.config.sections import BuildSecret
from include.nightly_ci.errors import StoreError
from include.nightly_ci.names import LABEL_CREATED, LABEL_LOGICAL_DATE, LABEL_REVISION, LABEL_RUN_ID, LABEL_SOURCE
from include.nightly_ci.plan import Backoff, Registry, TaskSpec
from include.nightly_ci.records import JsonRecord, NightlyOperator, mark_run, placement, skip_unless_selected

if TYPE_CHECKING:
    from docker import APIClient

    from include.nightly_ci.build.builder import BuildResult
    from include.nightly_ci.build.source import SourceInfo
    from include.nightly_ci.images.registries import RegistryAuth

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BuildCache:
    """Where a build reads cache from, and writes it to: REGISTRY's TAGS (images with
    inline cache), for the runtime build the exact framework image this run built (the
    digest in FROM_BUILD's XCom), and EXPORT_TAG for `type=registry,mode=max` where the
    builder can export one (buildx)."""

    registry: Registry
    tags: tuple[str, ...]
    from_build: str | None = None
    export_tag: str | None = None


@dataclass(frozen=True)
class BuiltImage(JsonRecord):
    """A build task's XCom: the image it built, pushed to the cache registry by digest."""

    registry: str
    host: str
    repository: str
    tag: str  # the run-scoped build tag
    digest: str
    image_id: str
    metrics_file: str

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


class ResolveSourceOperator(NightlyOperator):
    """Resolve the one commit the whole run builds (see source.resolve)."""

    template_fields = ("git_ref",)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        repository: str,
        branch: str,
        conn_id: str | None = None,
        git_timeout_seconds: int = 600,
        git_ref: str = "{{ params.git_ref }}",
        **kwargs: Any,
    ):
        super().__init__(**placement(spec), **kwargs)
        self.spec, self.store = spec, store
        self.repository = repository
        self.branch = branch
        self.git_timeout_seconds = git_timeout_seconds
        self.conn_id = conn_id  # a private repository's credentials (never in the URL: it goes to XCom)
        self.git_ref = git_ref

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.build.source import SourceInfo, git_auth, resolve
        from include.nightly_ci.plan import publishes

        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", str(dag_run.run_type))
        night = dag_run.logical_date or dag_run.run_after
        git_ref = (self.git_ref or "").strip()
        mark_run(self.store, dag_run)  # first of all the run's files (see RunMarker)
        auth = git_auth(self.conn_id, self.repository)
        resolution = resolve(
            self.repository,
            self.branch,
            run_type=run_type,
            logical_date=night,
            git_ref=git_ref,
            auth=auth,
            timeout_seconds=self.git_timeout_seconds,
        )
        self.log.info("Building %s (%s; committed %s)", resolution.commit, resolution.reason, resolution.committed_at)
        return SourceInfo(
            repository=self.repository,
            commit=resolution.commit,
            ref=resolution.ref,
            reason=resolution.reason,
            committed_at=resolution.committed_at,
            run_id=dag_run.run_id,
            run_type=run_type,
            night=night.astimezone(UTC).isoformat(),
            publish=publishes(run_type, dag_run.conf),
            resolved_at=_now().isoformat(),
        ).to_json()


class CellOperator(NightlyOperator):
    """A task of one build cell (see NightlyOperator on why only the concrete classes
    define __init__)."""

    framework: str
    arch: str
    backoff: Backoff
    source_task_id: str

    def _source(self, context: Any) -> SourceInfo:
        from include.nightly_ci.build.source import SourceInfo

        return SourceInfo.from_json(context["ti"].xcom_pull(task_ids=self.source_task_id))

    def _retrying(self, what: str, func: Callable[[], T]) -> T:
        from include.nightly_ci.images.registries import retry_transient

        b = self.backoff
        return retry_transient(what, func, attempts=b.attempts, backoff=b.first_seconds, backoff_max=b.max_seconds)


class BuildImageOperator(CellOperator):
    """Build one target (framework or runtime) of a cell at the run's commit with BuildKit
    on the cell's builder engine, and push it to the cache registry by digest."""

    ui_color = "#fff4e5"

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        framework: str,
        arch: str,
        backoff: Backoff,
        source_task_id: str,
        builder_conn_id: str | None,
        docker_cli: str,
        image: str,
        target: str,
        platform: str,
        dockerfile: str,
        build_args: dict[str, str],
        network_mode: str | None,
        cache: BuildCache,
        run_tag_pattern: str,
        secrets: Mapping[str, BuildSecret] | None = None,
        source_conn_id: str | None = None,
        **kwargs: Any,
    ):
        # Explicit arguments win over the spec's placement: a mapped candidate build comes with its own.
        super().__init__(**{**placement(spec), **kwargs})
        self.spec, self.store = spec, store
        self.framework, self.arch, self.backoff, self.source_task_id = framework, arch, backoff, source_task_id
        self.builder_conn_id = builder_conn_id
        self.docker_cli = docker_cli
        self.image = image
        self.target = target
        self.platform = platform
        self.dockerfile = dockerfile
        self.build_args = build_args
        self.network_mode = network_mode
        self.cache = cache
        self.run_tag_pattern = run_tag_pattern
        self.secrets = dict(secrets or {})
        self.source_conn_id = source_conn_id  # the private repository's credentials, for the checkout

    @cached_property
    def engine(self) -> APIClient:
        """The builder's Docker engine, for the push: one client for the whole task."""
        from include.nightly_ci.images.engine import engine_client

        timeout = int(self.execution_timeout.total_seconds()) if self.execution_timeout else 600
        return engine_client(self.builder_conn_id, timeout=timeout)

    @cached_property
    def auth(self) -> RegistryAuth:
        from include.nightly_ci.images.registries import registry_auth

        return registry_auth(self.cache.registry)

    @property
    def repo_ref(self) -> str:
        return f"{self.auth.host}/{self.cache.registry.repository}"

    def _cache_from(self, context: Any) -> list[str]:
        """The images this build reads cache from (their inline cache). A missing one costs
        nothing: BuildKit notes it and builds on."""
        refs = [f"{self.repo_ref}:{tag}" for tag in self.cache.tags]
        if self.cache.from_build:  # this run's framework image, exactly, in place of its moving tag
            built = BuiltImage.from_json(context["ti"].xcom_pull(task_ids=self.cache.from_build))
            refs[0] = f"{self.repo_ref}@{built.digest}"
        return refs

    def _labels(self, src: SourceInfo) -> dict[str, str]:
        return {
            LABEL_REVISION: src.commit,
            LABEL_SOURCE: src.repository,
            # The run's build time, not this try's: a retry then builds the very same image.
            LABEL_CREATED: src.resolved_at,
            LABEL_LOGICAL_DATE: src.night,
            LABEL_RUN_ID: src.run_id,
        }

    def _already_pushed(self, tag: str, image_id: str) -> str | None:
        """The digest TAG holds when it is this very image: the same layers and labels (a
        re-run of this task). BuildKit stamps each build with its time, so the rebuilt
        image's id differs; keeping the digest the run already handed on keeps every tag
        and every test of the run on one image."""
        from include.nightly_ci.images.registries import RegistryClient

        local = self.engine.inspect_image(image_id)
        remote = RegistryClient(self.auth).image(self.cache.registry.repository, tag)
        if remote is None:
            return None
        labels = local["Config"].get("Labels") or {}
        if tuple(local["RootFS"]["Layers"]) != remote.layers or labels != remote.labels:
            return None
        self.log.info("%s:%s already holds this image (%s): not pushing it again", self.repo_ref, tag, remote.digest)
        return remote.digest

    def _build(self, src: SourceInfo, cache_from: list[str], sink: Callable[[str], None]) -> BuildResult:
        from include.nightly_ci.build.builder import BuildKit, BuildSpec
        from include.nightly_ci.build.secrets import write_secrets
        from include.nightly_ci.build.source import checkout, git_auth
        from include.nightly_ci.images.engine import cli_environment

        with tempfile.TemporaryDirectory(prefix="nightly-ci-build-") as tmp:
            context_dir = os.path.join(tmp, "context")
            checkout(src.repository, src.commit, context_dir, git_auth(self.source_conn_id, src.repository))
            secrets = write_secrets(self.secrets, os.path.join(tmp, "secrets"))
            kit = BuildKit(self.docker_cli, cli_environment(self.builder_conn_id, [self.auth], tmp))
            export = f"{self.repo_ref}:{self.cache.export_tag}" if self.cache.export_tag and kit.buildx else None
            if export:  # the registry cache of every stage (mode=max) where the builder can export one
                cache_from.append(export)
            spec = BuildSpec(
                context_dir=context_dir,
                dockerfile=self.dockerfile,
                target=self.target,
                platform=self.platform,
                tag=f"nightly-ci/{self.framework}-{self.arch}:{self.image}",
                build_args=self.build_args,
                labels=self._labels(src),
                cache_from=tuple(cache_from),
                cache_to=export,
                secrets=secrets,
                network_mode=self.network_mode,
            )
            self.log.info(
                "Building %s/%s target %r for %s at %s with %s; cache from %s; secrets: %s",
                self.framework,
                self.arch,
                self.target,
                self.platform,
                src.commit[:12],
                "buildx" if kit.buildx else f"{self.docker_cli} build (BuildKit)",
                ", ".join(cache_from),
                ", ".join(sorted(secrets)) or "none",
            )
            return kit.build(spec, os.path.join(tmp, "iid"), sink)

    def run(self, context: Any) -> dict[str, Any]:
        from functools import partial

        from include.nightly_ci.artifacts import write_json, write_text
        from include.nightly_ci.images.engine import push
        from include.nightly_ci.images.promote import compressed_size
        from include.nightly_ci.images.registries import RegistryClient
        from include.nightly_ci.names import build_tag

        skip_unless_selected(context, self.framework, self.arch)
        src = self._source(context)
        cache_from = self._cache_from(context)
        lines: list[str] = []

        def sink(line: str) -> None:
            lines.append(line)
            self.log.info("%s", line)

        started, t0 = _now(), time.monotonic()
        root = self.store.root()
        try:
            result = self._build(src, cache_from, sink)
        finally:
            # A store that refuses must not replace the build's own error (the log is in the task log too).
            try:
                write_text(root, self.spec.artifact_key(src.run_id, f"build-{self.image}.log"), "\n".join(lines) + "\n")
            except StoreError as exc:
                self.log.error("%s; the build log is in this task log", exc)
        built_sec = round(time.monotonic() - t0, 2)
        tag = build_tag(self.run_tag_pattern, self.framework, self.arch, src.run_id, self.image)
        digest = self._already_pushed(tag, result.image_id) or self._retrying(
            f"push {self.repo_ref}:{tag}",
            partial(push, self.engine, result.image_id, self.repo_ref, tag, self.auth, self.log.info),
        )
        metrics = {
            "framework": self.framework,
            "arch": self.arch,
            "target": self.target,
            "platform": self.platform,
            "commit": src.commit,
            "image_id": result.image_id,
            "image_size_bytes": self.engine.inspect_image(result.image_id)["Size"],
            "pushed": f"{self.repo_ref}@{digest}",
            "compressed_size_bytes": compressed_size(RegistryClient(self.auth), self.cache.registry.repository, digest),
            "build_start_time": started.isoformat(),
            "build_end_time": _now().isoformat(),
            "build_duration_sec": built_sec,
            "steps_total": result.steps_total,
            "steps_cached": result.steps_cached,
            "cache_hit_rate": result.cache_hit_rate,
            "stage_duration_sec": result.stage_seconds(),
            "cache_from": cache_from,
        }
        metrics_file = write_json(root, self.spec.artifact_key(src.run_id, f"metrics-{self.image}.json"), metrics)
        self.log.info(
            "Built %s (%s steps, %s cached, %.0f%% hit rate) in %.1f s, pushed as %s:%s (%s); metrics: %s",
            result.image_id[:19],
            result.steps_total,
            result.steps_cached,
            100 * result.cache_hit_rate,
            built_sec,
            self.repo_ref,
            tag,
            digest,
            metrics_file,
        )
        return BuiltImage(
            registry=self.cache.registry.name,
            host=self.auth.host,
            repository=self.cache.registry.repository,
            tag=tag,
            digest=digest,
            image_id=result.image_id,
            metrics_file=metrics_file,
        ).to_json()
