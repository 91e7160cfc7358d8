"""The tasks of the build-and-publish stage: resolve the commit, build, push.

Operators take explicit, typed arguments (no plan, no cell), keep `__init__` to plain
attributes (no I/O at parse time), create their Docker client and registry credentials
lazily, once per task, and import hooks, git and the Docker SDK only when they run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, TypeVar

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.names import (
    LABEL_CREATED,
    LABEL_LOGICAL_DATE,
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SOURCE,
    render_tag,
)
from include.nightly_ci.plan import Backoff, Registry, TaskSpec, moving_tag_may_move
from include.nightly_ci.records import NightlyOperator, PushResult, placement, skip_unless_selected
from include.nightly_ci.ui.links import RegistryImageLink

if TYPE_CHECKING:
    from docker import APIClient

    from include.nightly_ci.build.source import SourceInfo
    from include.nightly_ci.images.registries import RegistryAuth, RegistryClient

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BuildCache:
    """What a build reuses as cache: tags of REGISTRY, and for the runtime build the exact
    framework image this run pushed (the digest in FROM_PUSH's XCom under FROM_TAG)."""

    registry: Registry
    tags: tuple[str, ...]
    from_push: str | None = None
    from_tag: str | None = None


class ResolveSourceOperator(NightlyOperator):
    """Resolve the one commit the whole run builds (see source.resolve)."""

    template_fields = ("git_ref", "publish")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        repository: str,
        branch: str,
        git_ref: str = "{{ params.git_ref }}",
        publish: str | bool = "{{ params.publish }}",
        **kwargs: Any,
    ):
        super().__init__(**placement(spec), **kwargs)
        self.spec, self.store = spec, store
        self.repository = repository
        self.branch = branch
        self.git_ref = git_ref
        self.publish = publish

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.build.source import SourceInfo, resolve

        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", str(dag_run.run_type))
        night = dag_run.logical_date or dag_run.run_after
        git_ref = (self.git_ref or "").strip()
        resolution = resolve(self.repository, self.branch, run_type=run_type, logical_date=night, git_ref=git_ref)
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
            publish=str(self.publish).strip().lower() not in ("false", "0", ""),
            resolved_at=_now().isoformat(),
        ).to_json()


class _CellOperator(NightlyOperator):
    """A task of one build cell, on that cell's builder engine (see NightlyOperator on
    why only the concrete classes below define __init__)."""

    framework: str
    arch: str
    builder_conn_id: str | None
    backoff: Backoff
    source_task_id: str

    @cached_property
    def engine(self) -> APIClient:
        """The builder's Docker engine: one client for the whole task."""
        from include.nightly_ci.images.engine import engine_client

        timeout = int(self.execution_timeout.total_seconds()) if self.execution_timeout else 600
        return engine_client(self.builder_conn_id, timeout=timeout)

    def _source(self, context: Any) -> SourceInfo:
        from include.nightly_ci.build.source import SourceInfo

        return SourceInfo.from_json(context["ti"].xcom_pull(task_ids=self.source_task_id))

    def _retrying(self, what: str, func: Callable[[], T]) -> T:
        from include.nightly_ci.images.registries import retry_transient

        b = self.backoff
        return retry_transient(what, func, attempts=b.attempts, backoff=b.first_seconds, backoff_max=b.max_seconds)


class BuildImageOperator(_CellOperator):
    """Build one target (framework or runtime) of a cell at the run's commit."""

    ui_color = "#fff4e5"

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        framework: str,
        arch: str,
        builder_conn_id: str | None,
        backoff: Backoff,
        source_task_id: str,
        image: str,
        target: str,
        platform: str,
        dockerfile: str,
        build_args: dict[str, str],
        network_mode: str | None,
        cache: BuildCache,
        **kwargs: Any,
    ):
        super().__init__(**placement(spec), **kwargs)
        self.spec, self.store = spec, store
        self.framework, self.arch, self.builder_conn_id = framework, arch, builder_conn_id
        self.backoff, self.source_task_id = backoff, source_task_id
        self.image = image
        self.target = target
        self.platform = platform
        self.dockerfile = dockerfile
        self.build_args = build_args
        self.network_mode = network_mode
        self.cache = cache

    def _cache_refs(self, context: Any) -> list[str]:
        """Images this build reuses as cache: the framework image from the cache registry
        (for the runtime build, the exact digest this run pushed) and, for the runtime
        build, the registry's current runtime image. Missing ones are skipped."""
        from include.nightly_ci.errors import RegistryAuthError, RegistryError
        from include.nightly_ci.images.engine import pull
        from include.nightly_ci.images.registries import registry_auth

        cache = self.cache
        auth = registry_auth(cache.registry)
        repo = f"{auth.host}/{cache.registry.repository}"
        wanted = [f"{repo}:{tag}" for tag in cache.tags]
        if cache.from_push:
            pushed = PushResult.from_json(context["ti"].xcom_pull(task_ids=cache.from_push) or {}).pushed
            digest = pushed.get(cache.from_tag or "")
            if digest:  # this run's framework image, exactly, in place of its moving tag
                wanted[0] = f"{repo}@{digest}"
        refs = []
        for ref in wanted:
            self.log.info("Pulling cache image %s", ref)
            try:
                self._retrying(f"pull {ref}", partial(pull, self.engine, ref, auth, self.platform, self.log.info))
                refs.append(ref)
            except RegistryAuthError:
                raise
            except RegistryError as exc:
                self.log.warning("No cache from %s: %s", ref, exc)
        return refs

    def _labels(self, src: SourceInfo) -> dict[str, str]:
        return {
            LABEL_REVISION: src.commit,
            LABEL_SOURCE: src.repository,
            # The run's build time, not this try's: a retry then reuses every cached step.
            LABEL_CREATED: src.resolved_at,
            LABEL_LOGICAL_DATE: src.night,
            LABEL_RUN_ID: src.run_id,
        }

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.artifacts import write_json, write_text
        from include.nightly_ci.build.builder import build
        from include.nightly_ci.build.source import checkout

        skip_unless_selected(context, self.framework, self.arch)
        src = self._source(context)
        pull_started = time.monotonic()
        cache_from = self._cache_refs(context)
        pull_sec = round(time.monotonic() - pull_started, 2)
        lines: list[str] = []

        def sink(line: str) -> None:
            lines.append(line)
            self.log.info("%s", line)

        local_tag = f"nightly-ci/{self.framework}-{self.arch}:{self.image}"
        started, t0 = _now(), time.monotonic()
        root = self.store.root()
        try:
            with tempfile.TemporaryDirectory(prefix="nightly-ci-ctx-") as ctx_dir:
                checkout(src.repository, src.commit, ctx_dir)
                self.log.info(
                    "Building %s/%s target %r for %s at %s, cache from %s",
                    self.framework,
                    self.arch,
                    self.target,
                    self.platform,
                    src.commit[:12],
                    cache_from or "nothing",
                )
                result = build(
                    self.engine,
                    context_dir=ctx_dir,
                    dockerfile=self.dockerfile,
                    target=self.target,
                    tag=local_tag,
                    platform=self.platform,
                    build_args=self.build_args,
                    labels=self._labels(src),
                    cache_from=cache_from,
                    network_mode=self.network_mode,
                    sink=sink,
                )
        finally:
            write_text(root, self.spec.artifact_key(src.run_id, f"build-{self.image}.log"), "\n".join(lines) + "\n")
        metrics = {
            "framework": self.framework,
            "arch": self.arch,
            "target": self.target,
            "platform": self.platform,
            "commit": src.commit,
            "image_id": result.image_id,
            "image_size_bytes": self.engine.inspect_image(result.image_id)["Size"],
            "build_start_time": started.isoformat(),
            "build_end_time": _now().isoformat(),
            "build_duration_sec": round(time.monotonic() - t0, 2),
            "steps_total": result.steps_total,
            "steps_cached": result.steps_cached,
            "cache_hit_rate": result.cache_hit_rate,
            "cache_from": cache_from,
            "cache_pull_sec": pull_sec,
        }
        metrics_file = write_json(root, self.spec.artifact_key(src.run_id, f"metrics-{self.image}.json"), metrics)
        self.log.info(
            "Built %s (%s steps, %s cached, %.0f%% hit rate) in %.1f s; metrics: %s",
            result.image_id[:19],
            result.steps_total,
            result.steps_cached,
            100 * result.cache_hit_rate,
            metrics["build_duration_sec"],
            metrics_file,
        )
        return {"image_id": result.image_id, "local_tag": local_tag, "metrics": metrics, "metrics_file": metrics_file}


class PushImageOperator(_CellOperator):
    """Push a cell's built image to one registry: its moving tags (forward only) and,
    for runtime images, the run's own tag."""

    ui_color = "#e6f4ea"
    operator_extra_links = (RegistryImageLink(),)

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        framework: str,
        arch: str,
        builder_conn_id: str | None,
        backoff: Backoff,
        source_task_id: str,
        image: str,
        registry: Registry,
        build_task_id: str,
        moving_tags: tuple[str, ...],
        run_tag_pattern: str | None,
        **kwargs: Any,
    ):
        super().__init__(**placement(spec), **kwargs)
        self.spec, self.store = spec, store
        self.framework, self.arch, self.builder_conn_id = framework, arch, builder_conn_id
        self.backoff, self.source_task_id = backoff, source_task_id
        self.image = image
        self.registry = registry
        self.build_task_id = build_task_id
        self.moving_tags = moving_tags
        self.run_tag_pattern = run_tag_pattern  # None: no run tag (framework images)

    @cached_property
    def auth(self) -> RegistryAuth:
        from include.nightly_ci.images.registries import registry_auth

        return registry_auth(self.registry)

    def _may_move(self, api: RegistryClient, tag: str, night: datetime) -> tuple[bool, str]:
        current = self._retrying(f"inspect {tag}", lambda: api.image(self.registry.repository, tag))
        stamp = (current.labels if current else {}).get(LABEL_LOGICAL_DATE)
        current_night = datetime.fromisoformat(stamp) if stamp else None
        if moving_tag_may_move(current_night, night):
            return True, ""
        return False, f"the registry's {tag} is from night {stamp}, newer than this run's {night.isoformat()}"

    def _tags(self, src: SourceInfo) -> tuple[list[str], dict[str, str]]:
        """The tags this push writes, and those it leaves alone with the reason."""
        from include.nightly_ci.images.registries import RegistryClient

        api = RegistryClient(self.auth)
        night = datetime.fromisoformat(src.night)
        tags = [render_tag(self.run_tag_pattern, self.framework, self.arch, src.run_id)] if self.run_tag_pattern else []
        skipped = {}
        for tag in self.moving_tags:
            if not src.publish:
                skipped[tag] = "the run's publish Param is off"
                continue
            ok, why = self._may_move(api, tag, night)
            if ok:
                tags.append(tag)
            else:
                skipped[tag] = why
        for tag, why in skipped.items():
            self.log.info("Not moving %s: %s", tag, why)
        return tags, skipped

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.images.engine import push

        skip_unless_selected(context, self.framework, self.arch)
        src = self._source(context)
        built = context["ti"].xcom_pull(task_ids=self.build_task_id)
        repo_ref = f"{self.auth.host}/{self.registry.repository}"
        tags, skipped = self._tags(src)
        pushed = {}
        for tag in tags:
            pushed[tag] = self._retrying(
                f"push {repo_ref}:{tag}",
                partial(push, self.engine, built["image_id"], repo_ref, tag, self.auth, self.log.info),
            )
        for tag, digest in pushed.items():
            self.log.info("%s:%s -> %s", repo_ref, tag, digest)
        run_digest = (pushed.get(tags[0]) if self.run_tag_pattern else None) or next(iter(pushed.values()), None)
        return PushResult(
            registry=self.registry.name,
            host=self.auth.host,
            repository=self.registry.repository,
            image_id=built["image_id"],
            pushed=pushed,
            skipped=skipped,
            pinned=f"{repo_ref}@{run_digest}" if run_digest else None,
        ).to_json()
