"""The retention DAG's tasks: artifacts and run tags past their days go (dry run: logged only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.plan import Registry
from include.nightly_ci.retention.expiry import TagRules


def _flag(value: str | bool) -> bool:
    """A templated boolean ("{{ params.dry_run }}" renders to 'True' or 'False')."""
    return str(value).strip().lower() in ("true", "1", "yes")


class ExpireArtifactsOperator(BaseOperator):
    """Deletes artifact files older than KEEP_DAYS from the store."""

    template_fields = ("log_only",)

    def __init__(
        self, *, store: ArtifactStore, keep_days: int, log_only: str | bool = "{{ params.dry_run }}", **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.store = store
        self.keep_days = keep_days
        self.log_only = log_only  # not `dry_run`: every operator has a dry_run() method

    def execute(self, context: Any) -> list[str]:
        from include.nightly_ci.retention.expiry import expire_artifacts

        return expire_artifacts(self.store, timedelta(days=self.keep_days), datetime.now(UTC), _flag(self.log_only))


class ExpireRunTagsOperator(BaseOperator):
    """Deletes a registry's run tags older than KEEP_DAYS; never a moving tag, nor an
    image that a kept tag points at."""

    template_fields = ("log_only",)

    def __init__(
        self,
        *,
        registry: Registry,
        rules: TagRules,
        keep_days: int,
        log_only: str | bool = "{{ params.dry_run }}",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.registry = registry
        self.rules = rules
        self.keep_days = keep_days
        self.log_only = log_only

    def execute(self, context: Any) -> list[str]:
        from include.nightly_ci.retention.expiry import expire_registry

        keep = timedelta(days=self.keep_days)
        decisions = expire_registry(self.registry, self.rules, keep, datetime.now(UTC), _flag(self.log_only))
        return [d.tag for d in decisions if d.delete]
