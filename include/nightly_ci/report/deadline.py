"""The Deadline Alert's callback: runs in the triggerer while an overrunning nightly is
still going, and posts to the Slack connection of the config (report.slack)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any


def overrun_text(dag_run: dict[str, Any], dag_id: str, hours: float) -> str:
    """The message for DAG_RUN: Airflow 3.3 hands an AsyncCallback the run as the REST
    API's JSON (context["dag_run"]["dag_run_id"]), not as a DagRun object."""
    from include.nightly_ci.report.operators import run_url

    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id")
    queued = dag_run.get("queued_at")
    title = f"*Nightly CI Pipeline - still running after {hours:g} h* :hourglass:\n"
    if not run_id:
        return title + f"A run of `{dag_id}` has not finished."
    return (
        title + f"Run `{run_id}` of `{dag_id}`{f' (queued at {queued})' if queued else ''} has not finished. "
        f"<{run_url(dag_id, run_id)}|View the run>"
    )


async def notify_overrun(context: dict[str, Any] | None = None, **kwargs: Any) -> None:
    # Airflow prunes a run's deadline when the run succeeds but keeps it when the run fails,
    # so the alert also fires hours after a failed nightly ended: its failure was already
    # posted by notify_slack, and "still running" would be false.
    dag_run = (context or {}).get("dag_run") or {}
    if dag_run.get("state") in ("success", "failed"):
        logging.getLogger(__name__).info("Not posting an overrun: the run already ended (%s).", dag_run["state"])
        return
    text = overrun_text(dag_run, kwargs["dag_id"], kwargs["hours"])
    await asyncio.to_thread(_post, kwargs["conn_id"], kwargs.get("channel"), text)


def _post(conn_id: str, channel: str | None, text: str) -> None:
    from include.nightly_ci.report.slack import post_to_slack

    post_to_slack(conn_id, channel, {"text": text}, retries=3)
