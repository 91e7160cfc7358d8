"""The Deadline Alert's callback: runs in the triggerer while an overrunning nightly is
still going, and posts to the Slack connection of the config."""

from __future__ import annotations

import asyncio
from typing import Any


async def notify_overrun(context: dict[str, Any] | None = None, **kwargs: Any) -> None:
    conn_id, channel, hours = kwargs["conn_id"], kwargs.get("channel"), kwargs["hours"]
    dag_run = (context or {}).get("dag_run")
    run = getattr(dag_run, "run_id", None) or (context or {}).get("run_id", "a nightly run")
    text = (
        f"*Nightly CI Pipeline - still running after {hours:g} h* :hourglass:\n"
        f"Run `{run}` of `{kwargs['dag_id']}` has not finished. <{kwargs['url']}|View the run>"
    )
    await asyncio.to_thread(_post, conn_id, channel, text)


def _post(conn_id: str, channel: str | None, text: str) -> None:
    if channel:
        from airflow.providers.slack.hooks.slack import SlackHook

        SlackHook(slack_conn_id=conn_id).call("chat.postMessage", json={"channel": channel, "text": text})
    else:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        SlackWebhookHook(slack_webhook_conn_id=conn_id).send(text=text)
