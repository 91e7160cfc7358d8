"""The retention DAG's tasks: run folders, run tags, superseded framework images and
engine images past their days go (dry run: logged only). Each decides from facts the
project wrote itself (see retention/facts.py) and logs every decision with its reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.plan import Registry
from include.nightly_ci.retention.expiry import TagDecision, TagRules


def _flag(value: str | bool) -> bool:
    """A templated boolean ("{{ params.dry_run }}" renders to 'True' or 'False')."""
    return str(value).strip().lower() in ("true", "1", "yes")


class ExpireArtifactsOperator(BaseOperator):
    """Deletes the run folders of DAG_IDS (the nightly's and its culprit finder's) older than
    KEEP_DAYS (by their run marker); nothing else under the store's base."""

    template_fields = ("log_only",)

    def __init__(
        self,
        *,
        store: ArtifactStore,
        dag_ids: tuple[str, ...],
        keep_days: int,
        log_only: str | bool = "{{ params.dry_run }}",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.store = store
        self.dag_ids = tuple(dag_ids)  # the DAGs whose runs these are (not this DAG)
        self.keep_days = keep_days
        self.log_only = log_only  # not `dry_run`: every operator has a dry_run() method

    def execute(self, context: Any) -> list[str]:
        from include.nightly_ci.retention.files import expire_artifacts

        keep = timedelta(days=self.keep_days)
        return expire_artifacts(self.store, self.dag_ids, keep, datetime.now(UTC), _flag(self.log_only))


class ExpireRunTagsOperator(BaseOperator):
    """Deletes a registry's run tags older than KEEP_DAYS by push time, and framework images
    no tag holds any more; never a moving tag, nor an image that a kept tag points at."""

    template_fields = ("log_only",)

    def __init__(
        self,
        *,
        registry: Registry,
        rules: TagRules,
        store: ArtifactStore,
        dag_ids: tuple[str, ...],
        keep_days: int,
        log_only: str | bool = "{{ params.dry_run }}",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.registry = registry
        self.rules = rules
        self.store = store  # where the push records are: in the runs of DAG_IDS
        self.dag_ids = tuple(dag_ids)
        self.keep_days = keep_days
        self.log_only = log_only

    def execute(self, context: Any) -> list[str]:
        from include.nightly_ci.retention.facts import push_facts, run_folders
        from include.nightly_ci.retention.registry import expire_registry

        runs = [r for r in run_folders(self.store.root(), self.dag_ids) if r.marker is not None]
        pushed = push_facts(runs, self.registry.name, self.registry.repository)
        self.log.info(
            "%d run folders of %s hold push records of %d run tags and %d framework images for %s",
            len(runs),
            " and ".join(self.dag_ids),
            len(pushed.run_tags),
            len(pushed.framework_digests),
            self.registry.name,
        )
        keep = timedelta(days=self.keep_days)
        decisions = expire_registry(self.registry, self.rules, pushed, keep, datetime.now(UTC), _flag(self.log_only))
        return [d.tag if isinstance(d, TagDecision) else d.digest for d in decisions if d.delete]


class PruneEnginesOperator(BaseOperator):
    """Removes this project's images (run-id label) older than KEEP_DAYS (created label)
    from the Docker engines of CONN_IDS (None: the worker's local engine)."""

    template_fields = ("log_only",)

    def __init__(
        self,
        *,
        conn_ids: tuple[str | None, ...],
        keep_days: int,
        log_only: str | bool = "{{ params.dry_run }}",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.conn_ids = tuple(conn_ids)
        self.keep_days = keep_days
        self.log_only = log_only

    def execute(self, context: Any) -> list[str]:
        from include.nightly_ci.retention.engines import prune_engines

        keep = timedelta(days=self.keep_days)
        return prune_engines(self.conn_ids, keep, datetime.now(UTC), _flag(self.log_only))
