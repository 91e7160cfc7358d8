"""The push tasks: promote the digest a build pushed to a registry's tags.

No engine takes part: the image goes from the cache registry to the tags by its digest
(images/promote.py), so a push runs on any worker of its queue, days later too, and
what it tags is exactly what was built.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, cached_property, partial
from typing import TYPE_CHECKING, Any

from include.nightly_ci.artifacts import ArtifactStore, write_json
from include.nightly_ci.build.operators import BuiltImage, CellOperator
from include.nightly_ci.errors import StoreError
from include.nightly_ci.names import render_tag
from include.nightly_ci.plan import Backoff, Registry, TaskSpec
from include.nightly_ci.records import PushResult, placement, skip_unless_selected
from include.nightly_ci.ui.links import RegistryImageLink

if TYPE_CHECKING:
    from include.nightly_ci.build.source import SourceInfo
    from include.nightly_ci.images.moving import Move
    from include.nightly_ci.images.registries import Manifest, RegistryAuth, RegistryClient


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
        source_conn_id: str | None = None,
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
        self.source_conn_id = source_conn_id  # a private repository's credentials, for the ancestry check

    @cached_property
    def auth(self) -> RegistryAuth:
        from include.nightly_ci.images.registries import registry_auth

        return registry_auth(self.registry)

    @cached_property
    def api(self) -> RegistryClient:
        from include.nightly_ci.images.registries import RegistryClient

        return RegistryClient(self.auth)

    def _move(self, built: BuiltImage, src: SourceInfo, tag: str, content: Callable[[], Manifest | None]) -> Move:
        """TAG on this run's image if it moves forward (images/moving.py: newer night, not
        an ancestor commit, never a future night; a compare-and-set two runs cannot race)."""
        from include.nightly_ci.build.ancestry import ancestry
        from include.nightly_ci.build.source import git_auth
        from include.nightly_ci.images.moving import Held, Rules, TagIO, move_forward

        def read() -> Held | None:
            image = self._retrying(f"inspect {tag}", lambda: self.api.image(self.registry.repository, tag))
            return Held.of_labels(image.digest, image.labels) if image else None

        manifest = content()  # everything the image refers to is in place: the write is one manifest PUT
        settle = self.backoff.settle_seconds
        rules = Rules(
            mine=Held(built.digest, datetime.fromisoformat(src.night), src.commit),
            now=datetime.now(UTC),
            is_ancestor=ancestry(src.repository, git_auth(self.source_conn_id, src.repository)),
            settle_seconds=settle,
            write_bound_seconds=settle * 2 / 3,
        )
        # A refused write is retried like any registry call (a slow one is then decided again).
        write = partial(self._write_tag, built, tag, manifest)
        return move_forward(TagIO(tag, read, partial(self._retrying, f"tag {tag}", write)), rules)

    def _moving(self, built: BuiltImage, src: SourceInfo) -> tuple[dict[str, str], dict[str, str]]:
        """The moving tags this push moved (tag -> digest), and those it left alone, with why."""
        moved, skipped = {}, {}
        content = cache(partial(self._bring_content, built))
        for tag in self.moving_tags:
            if not src.publish:
                skipped[tag] = "the run does not publish moving tags (its publish Param)"
                continue
            outcome = self._move(built, src, tag, content)
            if outcome.moved:
                moved[tag] = built.digest
            else:
                skipped[tag] = outcome.reason
        for tag, why in skipped.items():
            self.log.info("Not moving %s: %s", tag, why)
        return moved, skipped

    def _bring_content(self, built: BuiltImage) -> Manifest | None:
        from include.nightly_ci.images.promote import bring_content, uses_ecr_api
        from include.nightly_ci.images.registries import RegistryClient, registry_auth

        if self.registry == self.source_registry and uses_ecr_api(self.registry):
            return None  # one repository of ECR: put_image needs nothing moved
        source = RegistryClient(registry_auth(self.source_registry))
        target = self.registry.repository
        return self._retrying(
            f"copy {built.ref} to {self.registry.name}",
            partial(bring_content, source, built.repository, built.digest, self.api, target, self.log.info),
        )

    def _write_tag(self, built: BuiltImage, tag: str, manifest: Manifest | None) -> str:
        """One write: TAG on the image, whose content is already there (MANIFEST None: ECR's API)."""
        from include.nightly_ci.images.promote import ecr_retag

        if manifest is None:
            return ecr_retag(self.registry, built.digest, tag)
        return self.api.put_manifest(self.registry.repository, tag, manifest)

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
        pushed = {}
        if self.run_tag_pattern:
            tag = render_tag(self.run_tag_pattern, self.framework, self.arch, src.run_id)
            pushed[tag] = self._retrying(f"tag {repo_ref}:{tag}", partial(self._promote, built, tag))
        moved, skipped = self._moving(built, src)
        pushed |= moved
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
