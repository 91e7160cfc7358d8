"""The tasks of the build-and-publish stage: resolve the commit, build, push.

Operators keep `__init__` to plain attributes (no I/O at parse time) and import their
hooks, git and the Docker SDK inside `execute`.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator

from include.nightly_ci.links import RegistryImageLink
from include.nightly_ci.plan import (
    FRAMEWORK,
    LABEL_CREATED,
    LABEL_LOGICAL_DATE,
    LABEL_REVISION,
    LABEL_RUN_ID,
    LABEL_SOURCE,
    RUNTIME,
    Cell,
    Plan,
    Push,
    artifact_key,
    moving_tag_may_move,
)
from include.nightly_ci.task_records import RecordedTask

RESOLVE_TASK_ID = "resolve_source"


def _now() -> datetime:
    return datetime.now(UTC)


def skip_unless_selected(context: Any, cell: Cell) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    params = context["params"]
    if cell.framework not in params["frameworks"] or cell.arch not in params["arches"]:
        raise AirflowSkipException(f"{cell.framework}/{cell.arch} is not selected by this run's Params")


def _source(context: Any) -> dict[str, Any]:
    return context["ti"].xcom_pull(task_ids=RESOLVE_TASK_ID)


class ResolveSourceOperator(RecordedTask, BaseOperator):
    """Resolve the one commit the whole run builds (see source.resolve)."""

    ui_color = "#e8f0fe"
    record_stage = "source"

    def __init__(self, *, plan: Plan, **kwargs: Any):
        super().__init__(**kwargs)
        self.plan = plan

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.source import resolve

        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", str(dag_run.run_type))
        night = dag_run.logical_date or dag_run.run_after
        git_ref = (context["params"].get("git_ref") or "").strip()
        src = self.plan.source
        resolution = resolve(src.repository, src.branch, run_type=run_type, logical_date=night, git_ref=git_ref)
        self.log.info("Building %s (%s; committed %s)", resolution.commit, resolution.reason, resolution.committed_at)
        return {
            "repository": src.repository,
            "commit": resolution.commit,
            "ref": resolution.ref,
            "reason": resolution.reason,
            "committed_at": resolution.committed_at,
            "run_id": dag_run.run_id,
            "run_type": run_type,
            "night": night.astimezone(UTC).isoformat(),
            "publish": bool(context["params"].get("publish", True)),
            "resolved_at": _now().isoformat(),
        }


class _CellOperator(RecordedTask, BaseOperator):
    """A task of one build cell, on that cell's builder engine."""

    def __init__(self, *, plan: Plan, cell: Cell, **kwargs: Any):
        super().__init__(**kwargs)
        self.plan = plan
        self.cell = cell

    def _engine(self):
        from include.nightly_ci.images import engine_client

        return engine_client(self.cell.builder_conn_id, timeout=self.plan.build.timeout_minutes * 60)

    def _retrying(self, what: str, func):
        from include.nightly_ci.registries import retry_transient

        b = self.plan.build
        return retry_transient(
            what, func, attempts=b.push_attempts, backoff=b.push_backoff_seconds, backoff_max=b.push_backoff_max_seconds
        )

    def _store(self):
        from include.nightly_ci.artifacts import plan_store

        return plan_store(self.plan)


class BuildImageOperator(_CellOperator):
    """Build one target (framework or runtime) of a cell at the run's commit."""

    ui_color = "#fff4e5"
    record_stage = "build"

    def __init__(self, *, image: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.image = image

    @property
    def target(self) -> str:
        b = self.plan.build
        return b.framework_target if self.image == FRAMEWORK else b.runtime_target

    def _cache_refs(self, context: Any, client) -> list[str]:
        """Images this build reuses as cache: the framework image from the cache registry
        (for the runtime build, the exact digest this run pushed) and, for the runtime
        build, the registry's current runtime image. Missing ones are skipped."""
        from include.nightly_ci.images import pull
        from include.nightly_ci.registries import RegistryAuthError, RegistryError, registry_auth

        cell = self.cell
        reg = self.plan.registries[cell.cache_registry]
        auth = registry_auth(reg)
        repo = f"{auth.host}/{reg.repository}"
        wanted = [f"{repo}:{cell.framework_tag}"]
        if self.image == RUNTIME:
            pushed = context["ti"].xcom_pull(task_ids=f"{cell.group_id}.{Push(cell.cache_registry, FRAMEWORK).task_id}")
            digest = (pushed or {}).get("pushed", {}).get(cell.framework_tag)
            if digest:
                wanted = [f"{repo}@{digest}"]
            if any(p.registry == cell.cache_registry for p in cell.runtime_pushes):
                wanted.append(f"{repo}:{cell.nightly_tag}")
        refs = []
        for ref in wanted:
            self.log.info("Pulling cache image %s", ref)
            try:
                self._retrying(f"pull {ref}", lambda ref=ref: pull(client, ref, auth, cell.platform, self.log.info))
                refs.append(ref)
            except RegistryAuthError:
                raise
            except RegistryError as exc:
                self.log.warning("No cache from %s: %s", ref, exc)
        return refs

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.artifacts import write_json, write_text
        from include.nightly_ci.images import build
        from include.nightly_ci.source import checkout

        skip_unless_selected(context, self.cell)
        src, cell = _source(context), self.cell
        client = self._engine()
        pull_started = time.monotonic()
        cache_from = self._cache_refs(context, client)
        pull_sec = round(time.monotonic() - pull_started, 2)
        labels = {
            LABEL_REVISION: src["commit"],
            LABEL_SOURCE: src["repository"],
            # The run's build time, not this try's: a retry then reuses every cached step.
            LABEL_CREATED: src["resolved_at"],
            LABEL_LOGICAL_DATE: src["night"],
            LABEL_RUN_ID: src["run_id"],
        }
        lines: list[str] = []

        def sink(line: str) -> None:
            lines.append(line)
            self.log.info("%s", line)

        local_tag = f"nightly-ci/{cell.framework}-{cell.arch}:{self.image}"
        started, t0 = _now(), time.monotonic()
        store = self._store()
        try:
            with tempfile.TemporaryDirectory(prefix="nightly-ci-ctx-") as ctx_dir:
                checkout(src["repository"], src["commit"], ctx_dir)
                self.log.info(
                    "Building %s target %r for %s at %s, cache from %s",
                    cell.group_id,
                    self.target,
                    cell.platform,
                    src["commit"][:12],
                    cache_from or "nothing",
                )
                result = build(
                    client,
                    context_dir=ctx_dir,
                    dockerfile=self.plan.source.dockerfile,
                    target=self.target,
                    tag=local_tag,
                    platform=cell.platform,
                    build_args=dict(cell.build_args),
                    labels=labels,
                    cache_from=cache_from,
                    network_mode=self.plan.build.network_mode,
                    sink=sink,
                )
        finally:
            log_key = artifact_key(src["run_id"], cell, "build", f"build-{self.image}.log")
            write_text(store, log_key, "\n".join(lines) + "\n")
        ended = _now()
        metrics = {
            "framework": cell.framework,
            "arch": cell.arch,
            "target": self.target,
            "platform": cell.platform,
            "commit": src["commit"],
            "image_id": result.image_id,
            "image_size_bytes": client.inspect_image(result.image_id)["Size"],
            "build_start_time": started.isoformat(),
            "build_end_time": ended.isoformat(),
            "build_duration_sec": round(time.monotonic() - t0, 2),
            "steps_total": result.steps_total,
            "steps_cached": result.steps_cached,
            "cache_hit_rate": result.cache_hit_rate,
            "cache_from": cache_from,
            "cache_pull_sec": pull_sec,
        }
        metrics_file = write_json(
            store, artifact_key(src["run_id"], cell, "build", f"metrics-{self.image}.json"), metrics
        )
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
    """Push a cell's built image to one registry: its moving tag (forward only) and,
    for runtime images, the run's own tag."""

    ui_color = "#e6f4ea"
    record_stage = "push"
    operator_extra_links = (RegistryImageLink(),)

    def __init__(self, *, push: Push, **kwargs: Any):
        super().__init__(**kwargs)
        self.push = push

    def _may_move(self, client, repository: str, tag: str, night: datetime) -> tuple[bool, str]:
        current = self._retrying(f"inspect {tag}", lambda: client.image(repository, tag))
        stamp = (current.labels if current else {}).get(LABEL_LOGICAL_DATE)
        current_night = datetime.fromisoformat(stamp) if stamp else None
        if moving_tag_may_move(current_night, night):
            return True, ""
        return False, f"the registry's {tag} is from night {stamp}, newer than this run's {night.isoformat()}"

    def run(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.images import push
        from include.nightly_ci.registries import RegistryClient, registry_auth

        skip_unless_selected(context, self.cell)
        src, cell, image = _source(context), self.cell, self.push.image
        built = context["ti"].xcom_pull(task_ids=f"{cell.group_id}.build_{image}")
        reg = self.plan.registries[self.push.registry]
        auth = registry_auth(reg)
        api = RegistryClient(auth)
        repo_ref = f"{auth.host}/{reg.repository}"
        night = datetime.fromisoformat(src["night"])

        tags, skipped = [], {}
        if image == RUNTIME:
            tags.append(cell.run_tag(src["run_id"]))
        for tag in cell.tags_for(image):
            if not src["publish"]:
                skipped[tag] = "the run's publish Param is off"
                continue
            ok, why = self._may_move(api, reg.repository, tag, night)
            if ok:
                tags.append(tag)
            else:
                skipped[tag] = why
        for tag, why in skipped.items():
            self.log.info("Not moving %s: %s", tag, why)

        client = self._engine()
        pushed = {}
        for tag in tags:
            pushed[tag] = self._retrying(
                f"push {repo_ref}:{tag}",
                lambda tag=tag: push(client, built["image_id"], repo_ref, tag, auth, self.log.info),
            )
        for tag, digest in pushed.items():
            self.log.info("%s:%s -> %s", repo_ref, tag, digest)
        run_digest = pushed.get(cell.run_tag(src["run_id"])) or next(iter(pushed.values()), None)
        return {
            "registry": reg.name,
            "host": auth.host,
            "repository": reg.repository,
            "image_id": built["image_id"],
            "pushed": pushed,
            "skipped": skipped,
            # The exact image of this run, for the tests: re-running them days later tests it again.
            "pinned": f"{repo_ref}@{run_digest}" if run_digest else None,
        }
