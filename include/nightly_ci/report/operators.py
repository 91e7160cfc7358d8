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
        from include.nightly_ci.report.results import build_rows, previous_results, summarize, to_markdown

        ti, dag_run = context["ti"], context["dag_run"]
        run_id = dag_run.run_id
        night = (dag_run.logical_date or dag_run.run_after).isoformat()
        root = self.store.root()
        run_dir = self.store.run_folder(run_id)

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        cases = self._cases(run_dir)
        rows = build_rows(
            self.plan,
            states,
            self._records(run_dir),
            cases,
            log_url=lambda task_id, try_number: log_url(ti.dag_id, run_id, task_id, try_number),
            artifacts_url=lambda task_id: str(run_dir / self.plan.task(task_id).artifact_dir),
            selected=(context["params"]["frameworks"], context["params"]["arches"]),
        )
        before = previous_results(self._completed_runs(root, run_dir.name), night)
        results = summarize(self.plan, run_id, night, run_url(ti.dag_id, run_id), rows, cases, before)
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
        return results.to_json()

    def _records(self, run_dir: Any) -> dict[str, TaskRecord]:
        """The record each task of the plan left, where it left one."""
        found = {}
        for task in self.plan.tasks():
            path = run_dir / task.record_file
            if path.exists():
                found[task.task_id] = TaskRecord.from_json(json.loads(path.read_text()))
        return found

    def _cases(self, run_dir: Any) -> Cases:
        from include.nightly_ci.report.results import junit_cases

        cases = {}
        for cell in self.plan.cells:
            for job in cell.tests:
                report = run_dir / job.task.artifact_dir / JUNIT_FILE
                if report.exists():
                    cases[job.task.task_id] = junit_cases(report.read_text())
        return cases

    @staticmethod
    def _completed_runs(root: Any, this_run: str) -> list[Results]:
        from include.nightly_ci.report.results import Results

        if not root.exists():
            return []
        runs = []
        for folder in root.iterdir():
            results = folder / "results.json"
            if folder.name != this_run and results.exists():
                runs.append(Results.from_json(json.loads(results.read_text())))
        return runs


class VerdictOperator(BaseOperator):
    """The run's verdict: fails when any job did not pass, so that the run itself is red
    (the summary and Slack tasks always run and would otherwise end it green)."""

    ui_color = "#f1f3f4"

    def __init__(self, *, summary_task_id: str, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)
        self.summary_task_id = summary_task_id

    def execute(self, context: Any) -> None:
        results = _results_of(context, self.summary_task_id)
        if not results.success:
            failed = [r.job for r in results.rows if r.status != "success"]
            raise NightlyFailed(f"{results.passed}/{results.total} jobs passed; not passing: {', '.join(failed)}")
        self.log.info("All %d jobs passed", results.total)


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

        results = _results_of(context, self.summary_task_id)
        if not should_post(results, self.when):
            self.log.info("Not posting to Slack (policy %r, success=%s)", self.when, results.success)
            return {"posted": False}
        message = slack_message(results, self.ops_group_id)
        post_to_slack(self.slack_conn_id, self.channel, message, self.slack_retries)
        self.log.info("Posted the results to Slack through connection %r", self.slack_conn_id)
        return {"posted": True, "text": message["text"]}
