"""Slack, in one place: when to post, the message (the original pipeline's, plus night
over night), and posting through the Slack provider with retries.

A webhook connection (`slackwebhook`, the URL as its password) or, with a channel, the
Slack API (`slack`, the bot token). 429 is retried after its Retry-After, 5xx and
connection errors with backoff; anything else fails at once, naming the connection.
"""

from __future__ import annotations

from typing import Any

from include.nightly_ci.errors import SlackError
from include.nightly_ci.report.markdown import (
    headline,
    night_over_night_lines,
    not_run_line,
    root_failure_lines,
    triage_lines,
)
from include.nightly_ci.report.results import Results


def changed(results: Results) -> bool:
    non = results.night_over_night
    if non.previous_run_id is None:
        return not results.success
    return any(c.new_failures or c.fixed for c in (non.jobs, non.cases))


def should_post(results: Results, when: str) -> bool:
    return when == "always" or (when == "failure" and not results.success) or (when == "change" and changed(results))


# Slack refuses a section whose text is longer (HTTP 400 invalid_blocks): the nights
# with the most failures were the ones that posted nothing (H5).
SECTION_LIMIT = 3000


def _section(lines: list[str], run_url: str) -> dict[str, Any]:
    """LINES as one section; those that don't fit are counted, with the full table's link."""
    text = "\n".join(lines)
    if len(text) > SECTION_LIMIT:
        kept: list[str] = []
        for i, line in enumerate(lines):
            rest = f"… {len(lines) - i} more lines in <{run_url}|the full table>"
            if len("\n".join([*kept, line, rest])) > SECTION_LIMIT:
                text = "\n".join([*kept, rest])
                break
            kept.append(line)
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_message(results: Results, ops_group_id: str | None) -> dict[str, Any]:
    """The original's message (section 9): title, 'Summary: S/T jobs passed' (and how
    many failed, did not run, were skipped), run link; on failure the jobs that failed by
    themselves, with their class, and one line for the jobs they kept from running, and
    a mention of the ops group; plus night over night."""
    ok = results.success
    title = "*Nightly CI Pipeline - Success ✅*" if ok else "*Nightly CI Pipeline - Failed ❌*"
    skipped = [r.job for r in results.rows if r.status == "skipped"]
    text = f"{title}\nSummary: {headline(results)}\n<{results.run_url}|View Workflow Summary>"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if not ok:
        # The root failures by name and class; the jobs they kept from running, counted:
        # 16 upstream_failed names once buried the 3 that mattered. That line is a section
        # of its own, so a long list cut to Slack's limit never cuts it.
        failed = root_failure_lines(results)
        blocks.append(_section([f"*Failed Jobs ({len(failed)}):*", *(f"• {line}" for line in failed)], results.run_url))
        if stopped := not_run_line(results):
            blocks.append(_section([stopped], results.run_url))
    if skipped:  # not failures, but never silent
        blocks.append(
            _section([f"*Skipped Jobs ({len(skipped)}):*", *(f"• {name}" for name in skipped)], results.run_url)
        )
    blocks.append(_section(night_over_night_lines(results), results.run_url))
    told_apart = triage_lines(results)
    if told_apart:
        blocks.append(_section(told_apart, results.run_url))
    if results.warnings:
        note = f"⚠️ {len(results.warnings)} file(s) of the store could not be read and were skipped: see the table"
        blocks.append(_section([note], results.run_url))
    if not ok:
        mention = f"<!subteam^{ops_group_id}|@ops-support>" if ops_group_id else "@ops-support"
        blocks.append({"type": "divider"})
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f":rotating_light: cc {mention} - Please investigate the failures above."}
        ]})  # fmt: skip
    return {"text": text, "blocks": blocks}


def no_results_message(run_url: str, ops_group_id: str | None) -> dict[str, Any]:
    """When the summary failed: nothing to judge, but the team must still hear of the night."""
    mention = f"<!subteam^{ops_group_id}|@ops-support>" if ops_group_id else "@ops-support"
    text = (
        "*Nightly CI Pipeline - No results ❌*\n"
        f"the results summary did not complete, so this night was not judged. cc {mention}\n"
        f"<{run_url}|View the run>"
    )
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def slack_retry_handlers(retries: int) -> list[Any]:
    """429 after its Retry-After, any 5xx and connection errors with exponential backoff
    (slack_sdk's own server-error handler covers only 500 and 503)."""
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
    from slack_sdk.http_retry.handler import RetryHandler

    class ServerErrorsRetryHandler(RetryHandler):
        def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            return response is not None and response.status_code >= 500

    backoff = BackoffRetryIntervalCalculator(backoff_factor=1.0)
    return [
        RateLimitErrorRetryHandler(max_retry_count=retries),
        ServerErrorsRetryHandler(max_retry_count=retries, interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
    ]


def post_to_slack(
    conn_id: str, channel: str | None, message: dict[str, Any], retries: int, *, thread_ts: str | None = None
) -> str | None:
    """Through the Slack provider: a webhook connection, or the Slack API with a channel.
    Returns the posted message's `ts` from the API (a reply's thread_ts), None from a
    webhook (it answers no ts, and can't thread: THREAD_TS needs a channel).
    Raises SlackError, naming the connection, on anything but 2xx after the retries."""
    from airflow.sdk.exceptions import AirflowException

    handlers = slack_retry_handlers(retries)
    if channel:
        from airflow.providers.slack.hooks.slack import SlackHook
        from slack_sdk.errors import SlackApiError

        body = {"channel": channel, **message, **({"thread_ts": thread_ts} if thread_ts else {})}
        try:
            answer = SlackHook(slack_conn_id=conn_id, retry_handlers=handlers).call("chat.postMessage", json=body)
        except SlackApiError as exc:
            raise SlackError(
                f"Slack API of connection {conn_id!r} refused chat.postMessage to {channel}: "
                f"HTTP {exc.response.status_code} {exc.response.get('error')}"
            ) from None
        ts = answer.get("ts")
        return str(ts) if ts else None
    if thread_ts:
        raise ValueError(f"connection {conn_id!r} is a webhook: a thread (thread_ts) needs the Slack API and a channel")
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    try:
        SlackWebhookHook(slack_webhook_conn_id=conn_id, retry_handlers=handlers).send(**message)
    except AirflowException as exc:
        raise SlackError(f"Slack webhook of connection {conn_id!r} refused the message: {exc}") from None
    return None
