"""The end of a nightly: the summary (always runs, stores results first) and Slack."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperator, TriggerRule

from include.nightly_ci.names import tag_safe_run_id
from include.nightly_ci.plan import JUNIT_FILE, Plan

SUMMARY_TASK_ID = "results_summary"


def ui_base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{ui_base_url()}/dags/{dag_id}/runs/{quote(run_id)}"


def log_url(dag_id: str, run_id: str, task_id: str, try_number: int | None) -> str:
    """The task's log in the Airflow UI (the same form as RuntimeTaskInstance.log_url)."""
    return f"{run_url(dag_id, run_id)}/tasks/{task_id}" + (f"?try_number={try_number}" if try_number else "")


class SummaryOperator(BaseOperator):
    """Builds the results table of the run, whatever failed before it, and stores
    results.md and results.json before anyone is notified."""

    ui_color = "#fde7e9"

    def __init__(self, *, plan: Plan, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, **kwargs)
        self.plan = plan

    def execute(self, context: Any) -> dict[str, Any]:
        from include.nightly_ci.artifacts import plan_store, write_json, write_text
        from include.nightly_ci.results import build_rows, previous_results, summarize, to_markdown

        ti, dag_run = context["ti"], context["dag_run"]
        run_id = dag_run.run_id
        night = (dag_run.logical_date or dag_run.run_after).isoformat()
        store = plan_store(self.plan)
        run_dir = store / tag_safe_run_id(run_id)

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        records = self._records(run_dir)
        cases = self._cases(run_dir)
        rows = build_rows(
            self.plan,
            states,
            records,
            cases,
            log_url=lambda task_id, try_number: log_url(ti.dag_id, run_id, task_id, try_number),
            artifacts_url=lambda task_id: str(run_dir / self._artifact_dir(task_id)),
            selected=(context["params"]["frameworks"], context["params"]["arches"]),
        )
        before = previous_results(self._completed_runs(store, run_dir.name), night)
        results = summarize(self.plan, run_id, night, run_url(ti.dag_id, run_id), rows, cases, before)
        markdown = to_markdown(results)
        results["files"] = {
            "markdown": write_text(store, f"{run_dir.name}/results.md", markdown),
            "json": str(run_dir / "results.json"),
        }
        write_json(store, f"{run_dir.name}/results.json", results)
        self.log.info("Results of %s (also in %s):\n%s", run_id, results["files"]["markdown"], markdown)
        ti.xcom_push(key="results_md", value=markdown)
        return results

    @staticmethod
    def _artifact_dir(task_id: str) -> str:
        cell, _, rest = task_id.partition(".")
        return f"{cell}/test-{rest.split('.')[-1]}" if ".tests." in task_id else f"{cell}/build"

    @staticmethod
    def _records(run_dir) -> dict[str, dict[str, Any]]:
        if not run_dir.exists():
            return {}
        found = (json.loads(p.read_text()) for p in run_dir.rglob("*.json") if p.parent.name == "tasks")
        return {r["task_id"]: r for r in found}

    def _cases(self, run_dir) -> dict[str, dict[str, str]]:
        from include.nightly_ci.results import junit_cases

        cases = {}
        for cell in self.plan.cells:
            for job in cell.tests:
                report = run_dir / cell.group_id / f"test-{job.suite}" / JUNIT_FILE
                if report.exists():
                    cases[f"{cell.group_id}.tests.{job.suite}"] = junit_cases(report.read_text())
        return cases

    @staticmethod
    def _completed_runs(store, this_run: str) -> list[dict[str, Any]]:
        if not store.exists():
            return []
        runs = []
        for folder in store.iterdir():
            results = folder / "results.json"
            if folder.name != this_run and results.exists():
                runs.append(json.loads(results.read_text()))
        return runs


def slack_retry_handlers(retries: int) -> list:
    """429 after its Retry-After, any 5xx and connection errors with exponential backoff
    (slack_sdk's own server-error handler covers only 500 and 503)."""
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
    from slack_sdk.http_retry.handler import RetryHandler

    class ServerErrorsRetryHandler(RetryHandler):
        def _can_retry(self, *, state, request, response=None, error=None) -> bool:
            return response is not None and response.status_code >= 500

    backoff = BackoffRetryIntervalCalculator(backoff_factor=1.0)
    return [
        RateLimitErrorRetryHandler(max_retry_count=retries),
        ServerErrorsRetryHandler(max_retry_count=retries, interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
    ]


class VerdictOperator(BaseOperator):
    """The run's verdict: fails when any job did not pass, so that the run itself is red
    (the summary and Slack tasks always run and would otherwise end it green)."""

    ui_color = "#f1f3f4"

    def __init__(self, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowException

        results = context["ti"].xcom_pull(task_ids=SUMMARY_TASK_ID)
        if not results:
            raise AirflowException("the results summary did not complete: the nightly has no verdict")
        if not results["success"]:
            failed = [r["job"] for r in results["rows"] if r["status"] != "success"]
            raise AirflowException(
                f"{results['passed']}/{results['total']} jobs passed; not passing: {', '.join(failed)}"
            )
        self.log.info("All %d jobs passed", results["total"])


def post_to_slack(conn_id: str, channel: str | None, message: dict[str, Any], retries: int) -> None:
    """Through the Slack provider: a webhook connection, or the Slack API with a channel.
    Fails at once, naming the connection, on anything but 2xx after the retries."""
    from airflow.sdk.exceptions import AirflowException

    handlers = slack_retry_handlers(retries)
    if channel:
        from airflow.providers.slack.hooks.slack import SlackHook
        from slack_sdk.errors import SlackApiError

        try:
            SlackHook(slack_conn_id=conn_id, retry_handlers=handlers).call(
                "chat.postMessage", json={"channel": channel, **message}
            )
        except SlackApiError as exc:
            raise AirflowException(
                f"Slack API of connection {conn_id!r} refused chat.postMessage to {channel}: "
                f"HTTP {exc.response.status_code} {exc.response.get('error')}"
            ) from None
        return
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    try:
        SlackWebhookHook(slack_webhook_conn_id=conn_id, retry_handlers=handlers).send(**message)
    except AirflowException as exc:
        raise AirflowException(f"Slack webhook of connection {conn_id!r} refused the message: {exc}") from None


class SlackNotifyOperator(BaseOperator):
    """Posts the stored results to Slack, per the config's policy. 429 is retried after
    Retry-After and 5xx with backoff; any other 4xx fails at once, naming the connection."""

    ui_color = "#ece2f7"

    def __init__(self, *, plan: Plan, **kwargs: Any):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, retries=0, **kwargs)
        self.plan = plan

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        from include.nightly_ci.results import should_post, slack_message

        slack = self.plan.slack
        results = context["ti"].xcom_pull(task_ids=SUMMARY_TASK_ID)
        if not results:
            raise AirflowException("the results summary produced no results: nothing to post")
        if not slack.conn_id or not should_post(results, slack.when):
            self.log.info("Not posting to Slack (policy %r, success=%s)", slack.when, results["success"])
            return {"posted": False}
        message = slack_message(results, slack.ops_group_id)
        post_to_slack(slack.conn_id, slack.channel, message, slack.retries)
        self.log.info("Posted the results to Slack through connection %r", slack.conn_id)
        return {"posted": True, "text": message["text"]}
