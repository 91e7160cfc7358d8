"""The end of a nightly: the summary (always runs, stores results first), the verdict and Slack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, TriggerRule

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.errors import NightlyFailed, NoResultsError
from include.nightly_ci.plan import Plan
from include.nightly_ci.ui.links import log_url, run_url  # shared with the triage page

if TYPE_CHECKING:
    from include.nightly_ci.report.results import Results


def _results_of(context: Any, summary_task_id: str) -> Results:
    from include.nightly_ci.report.results import Results  # at run time only: the DAG file imports this module

    pulled = context["ti"].xcom_pull(task_ids=summary_task_id)
    if not pulled:
        raise NoResultsError("the results summary did not complete: the nightly has no results to judge or post")
    return Results.from_json(pulled)


class SummaryOperator(BaseOperator):
    """Builds the results table of the run, whatever failed before it, and stores
    results.md and results.json before anyone is notified."""

    ui_color = "#fde7e9"

    def __init__(self, *, plan: Plan, store: ArtifactStore, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, **kwargs)
        self.plan = plan
        self.store = store

    def execute(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.artifacts import write_json, write_text
        from include.nightly_ci.history.records import NightRecord
        from include.nightly_ci.names import run_kind
        from include.nightly_ci.report.markdown import to_markdown
        from include.nightly_ci.report.reading import RunFolder, completed_runs
        from include.nightly_ci.report.results import build_rows, cells_of, previous_results, summarize
        from include.nightly_ci.report.triage import Night, mute

        ti, dag_run = context["ti"], context["dag_run"]
        run_id = dag_run.run_id
        night = (dag_run.logical_date or dag_run.run_after).isoformat()
        root = self.store.root()
        run_dir = self.store.run_folder(run_id)

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        folder = RunFolder(self.plan, run_dir)
        cases, durations, case_warnings = folder.cases()
        reruns, rerun_warnings = folder.reruns()
        records, record_warnings = folder.records()
        rows = build_rows(
            self.plan,
            states,
            records,
            cases,
            log_url=lambda task_id, try_number: log_url(ti.dag_id, run_id, task_id, try_number),
            artifacts_url=lambda task_id: str(run_dir / self.plan.task(task_id).artifact_dir),
            selected=(context["params"]["frameworks"], context["params"]["arches"]),
        )
        earlier, run_warnings = completed_runs(root, run_dir.name)
        before = previous_results(earlier, dag_id=ti.dag_id, run_id=run_id, logical_date=night, cells=cells_of(rows))
        warnings = [*record_warnings, *case_warnings, *rerun_warnings, *run_warnings]
        source = ti.xcom_pull(task_ids=self.plan.resolve.task_id) or {}
        url = run_url(ti.dag_id, run_id)
        record = NightRecord(ti.dag_id, run_id, night, run_kind(run_id), source.get("commit"), url)
        triage = self._triage(
            Night(self.plan, record, tuple(rows), records, cases, durations, reruns), before, warnings
        )
        for warning in warnings:
            self.log.warning("%s", warning)
        results = summarize(
            self.plan, run_id, night, url, mute(rows, triage), cases, before, warnings, triage, record.commit
        )
        markdown = to_markdown(results)
        results = results.with_files(
            {
                "markdown": write_text(root, f"{run_dir.name}/results.md", markdown),
                "json": str(run_dir / "results.json"),
            }
        )
        write_json(root, f"{run_dir.name}/results.json", results.to_json())
        self.log.info("Results of %s (also in %s):\n%s", run_id, results.files["markdown"], markdown)
        ti.xcom_push(key="results_md", value=markdown)
        return results.for_xcom()

    def _triage(self, night: Any, before: Any, warnings: list[str]) -> Any:
        """Flaky or regression, the quarantine, drift; the night recorded in the history
        store. The store being down or missing is a warning, never a lost table."""
        from sqlalchemy.exc import SQLAlchemyError

        from include.nightly_ci.errors import NightlyCiError
        from include.nightly_ci.report.triage import with_store, without_store

        conn_id = self.plan.history.conn_id
        if not conn_id:
            return without_store(night, before, "not recorded: no history store is configured (history.conn_id)")
        from include.nightly_ci.history.store import HistoryStore

        try:
            store = HistoryStore.from_connection(conn_id)
            try:
                return with_store(night, store, before, self.log.info)
            finally:
                store.close()
        except (NightlyCiError, SQLAlchemyError) as exc:
            self.log.exception("The history store of connection %r failed", conn_id)
            why = (
                f"not recorded in the history store ({type(exc).__name__}: {str(exc).splitlines()[0][:300]});"
                " `python -m include.nightly_ci history import` brings the night in later"
            )
            warnings.append(why)
            return without_store(night, before, why)


class VerdictOperator(BaseOperator):
    """The run's verdict: fails when any job did not pass, so that the run itself is red
    (the summary and Slack tasks always run and would otherwise end it green)."""

    ui_color = "#f1f3f4"

    def __init__(self, *, summary_task_id: str, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)
        self.summary_task_id = summary_task_id

    def execute(self, context: Any) -> None:
        from include.nightly_ci.report.markdown import verdict_text

        results = _results_of(context, self.summary_task_id)
        muted = [r.job for r in results.rows if r.muted]
        if muted:
            self.log.info("Failed only on flaky or quarantined test cases (not red): %s", ", ".join(muted))
        if not results.success:
            raise NightlyFailed(verdict_text(results))
        self.log.info("No job failed: %d of %d passed, %d skipped", results.passed, results.total, results.skipped)


class SlackNotifyOperator(BaseOperator):
    """Posts the stored results to Slack, per the config's policy (see report.slack)."""

    ui_color = "#ece2f7"

    def __init__(
        self,
        *,
        summary_task_id: str,
        slack_conn_id: str,
        channel: str | None = None,
        ops_group_id: str | None = None,
        when: str = "failure",
        slack_retries: int = 5,
        store: ArtifactStore | None = None,
        **kwargs: Any,
    ):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)
        self.summary_task_id = summary_task_id
        self.slack_conn_id = slack_conn_id
        self.channel = channel
        self.ops_group_id = ops_group_id
        self.when = when
        self.slack_retries = slack_retries
        self.store = store  # where the night's message is noted, for the culprit finder's replies

    def execute(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.report.slack import post_to_slack, should_post, slack_message

        try:
            results = _results_of(context, self.summary_task_id)
        except NoResultsError:
            # Never silent: a night without a summary is told, whatever the policy.
            self._post_no_results(context)
            raise
        if not should_post(results, self.when):
            self.log.info("Not posting to Slack (policy %r, success=%s)", self.when, results.success)
            return {"posted": False}
        message = slack_message(results, self.ops_group_id)
        ts = post_to_slack(self.slack_conn_id, self.channel, message, self.slack_retries)
        self.log.info("Posted the results to Slack through connection %r", self.slack_conn_id)
        if ts and self.channel:
            self._keep_thread(context["dag_run"].run_id, ts)
        return {"posted": True, "text": message["text"]}

    def _keep_thread(self, run_id: str, ts: str) -> None:
        """The night's message (channel, ts) in its run folder: the culprit finder's findings
        of the night are posted as replies to it. Losing it only unthreads them: a warning."""
        from include.nightly_ci.artifacts import write_json
        from include.nightly_ci.names import SLACK_THREAD

        if self.store is None:
            return
        try:
            folder = self.store.run_folder(run_id)
            write_json(self.store.root(), f"{folder.name}/{SLACK_THREAD}", {"channel": self.channel, "ts": ts})
        except Exception as exc:  # every store has its own error types; the night is posted either way
            self.log.warning("Posted, but could not keep the night's Slack thread (%s: %s): the culprit finder"
                             " will post its findings unthreaded", type(exc).__name__, str(exc)[:300])  # fmt: skip

    def _post_no_results(self, context: Any) -> None:
        from include.nightly_ci.report.slack import no_results_message, post_to_slack

        url = run_url(context["ti"].dag_id, context["dag_run"].run_id)
        post_to_slack(self.slack_conn_id, self.channel, no_results_message(url, self.ops_group_id), self.slack_retries)
        self.log.info("Told Slack that the run has no results, through connection %r", self.slack_conn_id)
