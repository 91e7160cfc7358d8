"""The build stage's part in the culprit finder: the commits a regression can come from,
and a candidate commit's runtime image.

A candidate is built like the nightly's runtime image (the same container file, builder,
secrets and registry), at its own commit, with the cell's framework image and nightly
image as cache: when the candidate did not change the framework's inputs, BuildKit takes
every framework layer from that cache and builds only what the runtime target changed.
It is pushed to the cache registry under a tag of its commit and handed on by digest; a
push record beside its build files gives retention the tag's push time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from include.nightly_ci.build.operators import BuildImageOperator, BuiltImage
from include.nightly_ci.plan.culprit import CandidateCell


class CommitRangeOperator(BaseOperator):
    """The commits after the finding's good commit up to its bad one, oldest first, on the
    branch's first-parent line, with authors and subjects (at most MAX_COMMITS + 1: a
    longer range is not searched). Skipped when the run starts no search."""

    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        repository: str,
        begin_task_id: str,
        max_commits: int,
        conn_id: str | None = None,
        git_timeout_seconds: int = 600,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.repository = repository
        self.begin_task_id = begin_task_id
        self.max_commits = max_commits
        self.conn_id = conn_id
        self.git_timeout_seconds = git_timeout_seconds

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.nightly_ci.build.ancestry import first_parent_range
        from include.nightly_ci.build.source import git_auth

        start = context["ti"].xcom_pull(task_ids=self.begin_task_id, key="start")
        if not start:
            raise AirflowSkipException("this run continues a search (or starts others): no range to read")
        good, bad = start["good"]["commit"], start["bad"]["commit"]
        if good == bad:
            self.log.info("The good and the bad night built the same commit %s: no commit to blame", good[:12])
            return {"commits": [], "total": 0}
        commits = first_parent_range(
            self.repository, good, bad, git_auth(self.conn_id, self.repository), self.git_timeout_seconds
        )
        self.log.info("%d commit(s) after %s up to %s:", len(commits), good[:12], bad[:12])
        for c in commits[: self.max_commits + 1]:
            self.log.info("  %s %s (%s)", c.sha[:12], c.subject, c.author)
        return {
            "commits": [[c.sha, c.author, c.subject] for c in commits[: self.max_commits + 1]],
            "total": len(commits),
        }


class CandidateBuildOperator(BuildImageOperator):
    """The runtime image of one candidate COMMIT of a culprit search (mapped: one instance
    per commit of the step)."""

    def __init__(self, *, commit: str, repository: str, layout: CandidateCell, **kwargs: Any):
        from include.nightly_ci.plan.culprit import candidate_tag_pattern

        super().__init__(run_tag_pattern=candidate_tag_pattern(commit), **kwargs)
        self.commit = commit
        self.repository = repository
        self.spec = layout.build_spec(commit)  # its own log, metrics and record beside the other candidates'

    def run(self, context: Any) -> dict[str, Any]:
        built = super().run(context)
        self._record_push(context["dag_run"].run_id, BuiltImage.from_json(built))
        return built

    def _record_push(self, run_id: str, built: BuiltImage) -> None:
        """RUN/CELL/culprit/COMMIT12/push_runtime_REGISTRY.json: the candidate's tag and when
        it was pushed. Retention ages the tag by it (retention/facts.py PUSH_RECORDS), as it
        ages the nightly's run tags by their push records; without it, by the image's created
        label: the push stands either way."""
        from datetime import UTC, datetime

        from include.nightly_ci.artifacts import write_json
        from include.nightly_ci.errors import StoreError
        from include.nightly_ci.records import PushResult

        record = PushResult(
            registry=built.registry,
            host=built.host,
            repository=built.repository,
            image_id=built.image_id,
            pushed={built.tag: built.digest},
            skipped={},
            pinned=built.ref,
            pushed_at=datetime.now(UTC).isoformat(),
        )
        key = self.spec.artifact_key(run_id, f"push_{self.image}_{built.registry}.json")
        try:
            write_json(self.store.root(), key, record.to_json())
        except StoreError as exc:
            self.log.warning("%s; retention will age %s by the image's created label", exc, built.tag)

    def _source(self, context: Any) -> Any:
        from include.nightly_ci.build.source import SourceInfo

        dag_run = context["dag_run"]
        # The run's own time, not this try's: a cleared build makes the same labels.
        when = (dag_run.logical_date or dag_run.run_after).isoformat()
        return SourceInfo(
            repository=self.repository,
            commit=self.commit,
            ref=self.commit,
            reason="a culprit search's candidate",
            committed_at="",
            run_id=dag_run.run_id,
            run_type="culprit",
            night=when,
            publish=False,
            resolved_at=when,
        )
