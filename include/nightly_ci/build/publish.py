"""The push tasks: promote the digest a build pushed to a registry's tags.

No engine takes part: the image goes from the cache registry to the tags by its digest
(images/promote.py), so a push runs on any worker of its queue, days later too, and
what it tags is exactly what was built.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from include.nightly_ci.artifacts import ArtifactStore, write_json
from include.nightly_ci.build.operators import BuiltImage, CellOperator
from include.nightly_ci.errors import StoreError
from include.nightly_ci.names import LABEL_LOGICAL_DATE, render_tag
from include.nightly_ci.plan import Backoff, Registry, TaskSpec, moving_tag_may_move
from include.nightly_ci.records import PushResult, placement, skip_unless_selected
from include.nightly_ci.ui.links import RegistryImageLink

if TYPE_CHECKING:
    from include.nightly_ci.build.source import SourceInfo
    from include.nightly_ci.images.registries import RegistryAuth, RegistryClient


class PushImageOperator(CellOperator):
    """Give a cell's built image its tags in one registry: the moving tags (forward only)
    and, for runtime images, the run's own tag."""

    ui_color = "#e6f4ea"
    operator_extra_links = (RegistryImageLink(),)

    def __init__(
        self,
        *,
        spec: TaskSpec,
        store: ArtifactStore,
        framework: str,
        arch: str,
        backoff: Backoff,
        source_task_id: str,
        image: str,
        registry: Registry,
        source_registry: Registry,
        build_task_id: str,
        moving_tags: tuple[str, ...],
        run_tag_pattern: str | None,
        **kwargs: Any,
    ):
        super().__init__(**placement(spec), **kwargs)
        self.spec, self.store = spec, store
        self.framework, self.arch, self.backoff, self.source_task_id = framework, arch, backoff, source_task_id
        self.image = image
        self.registry = registry
        self.source_registry = source_registry  # where the build pushed it (the cache registry)
        self.build_task_id = build_task_id
        self.moving_tags = moving_tags
        self.run_tag_pattern = run_tag_pattern  # None: no run tag (framework images)

    @cached_property
    def auth(self) -> RegistryAuth:
        from include.nightly_ci.images.registries import registry_auth

        return registry_auth(self.registry)

    @cached_property
    def api(self) -> RegistryClient:
        from include.nightly_ci.images.registries import RegistryClient

        return RegistryClient(self.auth)

    def _may_move(self, tag: str, night: datetime) -> tuple[bool, str]:
        current = self._retrying(f"inspect {tag}", lambda: self.api.image(self.registry.repository, tag))
        stamp = (current.labels if current else {}).get(LABEL_LOGICAL_DATE)
        current_night = datetime.fromisoformat(stamp) if stamp else None
        if moving_tag_may_move(current_night, night):
            return True, ""
        return False, f"the registry's {tag} is from night {stamp}, newer than this run's {night.isoformat()}"

    def _tags(self, src: SourceInfo) -> tuple[list[str], dict[str, str]]:
        """The tags this push writes, and those it leaves alone with the reason."""
        night = datetime.fromisoformat(src.night)
        tags = [render_tag(self.run_tag_pattern, self.framework, self.arch, src.run_id)] if self.run_tag_pattern else []
        skipped = {}
        for tag in self.moving_tags:
            if not src.publish:
                skipped[tag] = "the run's publish Param is off"
                continue
            ok, why = self._may_move(tag, night)
            if ok:
                tags.append(tag)
            else:
                skipped[tag] = why
        for tag, why in skipped.items():
            self.log.info("Not moving %s: %s", tag, why)
        return tags, skipped

    def _promote(self, built: BuiltImage, tag: str) -> str:
        from include.nightly_ci.images.promote import copy_image, ecr_retag, uses_ecr_api
        from include.nightly_ci.images.registries import RegistryClient, registry_auth

        same_repo = self.registry == self.source_registry
        if same_repo and uses_ecr_api(self.registry):
            digest = ecr_retag(self.registry, built.digest, tag)
            self.log.info("%s:%s -> %s (ECR put_image)", self.registry.repository, tag, digest)
            return digest
        source = self.api if same_repo else RegistryClient(registry_auth(self.source_registry))
        return copy_image(
            source, built.repository, built.digest, self.api, self.registry.repository, tag, self.log.info
        )

    def run(self, context: Any) -> dict[str, Any]:
        skip_unless_selected(context, self.framework, self.arch)
        src = self._source(context)
        built = BuiltImage.from_json(context["ti"].xcom_pull(task_ids=self.build_task_id))
        repo_ref = f"{self.auth.host}/{self.registry.repository}"
        self.log.info("Promoting %s to %s", built.ref, repo_ref)
        tags, skipped = self._tags(src)
        pushed = {tag: self._retrying(f"tag {repo_ref}:{tag}", partial(self._promote, built, tag)) for tag in tags}
        result = PushResult(
            registry=self.registry.name,
            host=self.auth.host,
            repository=self.registry.repository,
            image_id=built.image_id,
            pushed=pushed,
            skipped=skipped,
            # The exact image of this run, for the tests: re-running them days later tests it again.
            pinned=f"{repo_ref}@{built.digest}" if pushed else None,
            pushed_at=datetime.now(UTC).isoformat(),
            night=src.night,
        )
        # Retention ages the image by this record (its push time), not by its night; without
        # it, by the image's created label (the run's build time): the push stands either way.
        try:
            write_json(self.store.root(), result.record_key(self.spec, src.run_id), result.to_json())
        except StoreError as exc:
            self.log.warning("%s; retention will age these tags by the image's created label", exc)
        return result.to_json()
