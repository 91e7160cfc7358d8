"""The end of a nightly: the summary (always runs, stores results first), the verdict and Slack."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperator, TriggerRule

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.errors import NightlyFailed, NoResultsError
from include.nightly_ci.plan import JUNIT_FILE, Plan
from include.nightly_ci.records import TaskRecord

if TYPE_CHECKING:
    from include.nightly_ci.report.results import Cases, Results


def ui_base_url() -> str:
    from airflow.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{ui_base_url()}/dags/{dag_id}/runs/{quote(run_id)}"


def log_url(dag_id: str, run_id: str, task_id: str, try_number: int | None) -> str:
    """The task's log in the Airflow UI (the same form as RuntimeTaskInstance.log_url)."""
    return f"{run_url(dag_id, run_id)}/tasks/{task_id}" + (f"?try_number={try_number}" if try_number else "")


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
        from include.nightly_ci.report.results import build_rows, cells_of, previous_results, summarize, to_markdown

        ti, dag_run = context["ti"], context["dag_run"]
        run_id = dag_run.run_id
        night = (dag_run.logical_date or dag_run.run_after).isoformat()
        root = self.store.root()
        run_dir = self.store.run_folder(run_id)

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        cases, case_warnings = self._cases(run_dir)
        records, record_warnings = self._records(run_dir)
        rows = build_rows(
            self.plan,
            states,
            records,
            cases,
            log_url=lambda task_id, try_number: log_url(ti.dag_id, run_id, task_id, try_number),
            artifacts_url=lambda task_id: str(run_dir / self.plan.task(task_id).artifact_dir),
            selected=(context["params"]["frameworks"], context["params"]["arches"]),
        )
        earlier, run_warnings = self._completed_runs(root, run_dir.name)
        before = previous_results(earlier, dag_id=ti.dag_id, run_id=run_id, logical_date=night, cells=cells_of(rows))
        warnings = [*record_warnings, *case_warnings, *run_warnings]
        for warning in warnings:
            self.log.warning("%s", warning)
        results = summarize(self.plan, run_id, night, run_url(ti.dag_id, run_id), rows, cases, before, warnings)
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

    def _records(self, run_dir: Any) -> tuple[dict[str, TaskRecord], list[str]]:
        """The record each task of the plan left, where it left a readable one."""
        found, warnings = {}, []
        for task in self.plan.tasks():
            path = run_dir / task.record_file
            if path.exists():
                try:
                    found[task.task_id] = TaskRecord.from_json(json.loads(path.read_text()))
                except _UNREADABLE as exc:
                    warnings.append(_skipped(task.record_file, exc))
        return found, warnings

    def _cases(self, run_dir: Any) -> tuple[Cases, list[str]]:
        from include.nightly_ci.report.results import junit_cases

        cases, warnings = {}, []
        for cell in self.plan.cells:
            for job in cell.tests:
                report = run_dir / job.task.artifact_dir / JUNIT_FILE
                if report.exists():
                    try:
                        cases[job.task.task_id] = junit_cases(report.read_text())
                    except _UNREADABLE as exc:
                        warnings.append(_skipped(f"{job.task.artifact_dir}/{JUNIT_FILE}", exc))
        return cases, warnings

    @staticmethod
    def _completed_runs(root: Any, this_run: str) -> tuple[list[Results], list[str]]:
        """Every earlier run's results that can be read; one warning for each that can't
        (truncated, an older schema, anything else's file): one bad file once made every
        later summary fail (H4)."""
        from include.nightly_ci.report.results import Results

        if not root.exists():
            return [], []
        runs, warnings = [], []
        for folder in root.iterdir():
            results = folder / "results.json"
            if folder.name != this_run and results.exists():
                try:
                    runs.append(Results.from_json(json.loads(results.read_text())))
                except _UNREADABLE as exc:
                    warnings.append(_skipped(f"{folder.name}/results.json", exc))
        return runs, warnings


# What a file of the store may be: cut short, of another schema, not ours, or unreadable.
# (A JUnit report cut short raises ElementTree's ParseError, a SyntaxError.)
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, OSError, SyntaxError)


def _skipped(name: str, exc: BaseException) -> str:
    return f"{name}: could not be read ({type(exc).__name__}: {str(exc)[:200]}), skipped"


class VerdictOperator(BaseOperator):
    """The run's verdict: fails when any job did not pass, so that the run itself is red
    (the summary and Slack tasks always run and would otherwise end it green)."""

    ui_color = "#f1f3f4"

    def __init__(self, *, summary_task_id: str, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)
        self.summary_task_id = summary_task_id

    def execute(self, context: Any) -> None:
        from include.nightly_ci.report.results import FAILING_STATES

        results = _results_of(context, self.summary_task_id)
        if not results.success:
            failed = [r.job for r in results.rows if r.status in FAILING_STATES]
            raise NightlyFailed(f"{results.passed}/{results.total} jobs passed; not passing: {', '.join(failed)}")
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
        **kwargs: Any,
    ):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)
        self.summary_task_id = summary_task_id
        self.slack_conn_id = slack_conn_id
        self.channel = channel
        self.ops_group_id = ops_group_id
        self.when = when
        self.slack_retries = slack_retries

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
        post_to_slack(self.slack_conn_id, self.channel, message, self.slack_retries)
        self.log.info("Posted the results to Slack through connection %r", self.slack_conn_id)
        return {"posted": True, "text": message["text"]}

    def _post_no_results(self, context: Any) -> None:
        from include.nightly_ci.report.slack import no_results_message, post_to_slack

        url = run_url(context["ti"].dag_id, context["dag_run"].run_id)
        post_to_slack(self.slack_conn_id, self.channel, no_results_message(url, self.ops_group_id), self.slack_retries)
        self.log.info("Told Slack that the run has no results, through connection %r", self.slack_conn_id)
