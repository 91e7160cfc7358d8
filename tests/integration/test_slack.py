"""Slack through the provider's hooks against a stand-in Slack on loopback that records
every payload: webhook and API, the posting policies, 429/5xx retries, 4xx failures."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from dev.fake_slack import FakeSlack, parse_script
from include.nightly_ci.config import load_config
from include.nightly_ci.errors import SlackError
from include.nightly_ci.plan import build_plan
from include.nightly_ci.report.operators import SlackNotifyOperator
from include.nightly_ci.report.results import Change, NightOverNight, Results, Row
from include.nightly_ci.report.slack import post_to_slack
from tests.services import ROOT, free_port

pytestmark = pytest.mark.integration
MESSAGE = {"text": "*Nightly CI Pipeline - Success ✅*\nSummary: 3/3 jobs passed", "blocks": []}


class Slack:
    def __init__(self, tmp: Path):
        self.log = tmp / "slack.jsonl"
        self.server = FakeSlack(free_port(), self.log)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, text: str) -> None:
        self.server.script = parse_script(text)

    def received(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def slack(tmp_path, monkeypatch):
    s = Slack(tmp_path)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_HOOK", json.dumps({"conn_type": "slackwebhook", "password": f"{s.url}/services/T0/B0/x"})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_API",
        json.dumps({"conn_type": "slack", "password": "xoxb-test-token", "extra": {"base_url": f"{s.url}/api/"}}),
    )
    yield s
    s.server.shutdown()


def test_webhook_and_api_deliver_the_message(slack):
    post_to_slack("slack_hook", None, MESSAGE, retries=2)
    post_to_slack("slack_api", "#nightly-ci", MESSAGE, retries=2)
    hook, api = slack.received()
    assert hook["path"] == "/services/T0/B0/x" and hook["body"]["text"] == MESSAGE["text"]
    assert api["path"] == "/api/chat.postMessage" and api["auth"]
    assert api["body"]["channel"] == "#nightly-ci" and api["body"]["text"] == MESSAGE["text"]


def test_429_is_retried_after_retry_after(slack):
    slack.script("429:2,200")
    started = time.monotonic()
    post_to_slack("slack_hook", None, MESSAGE, retries=3)
    assert time.monotonic() - started >= 2  # honoured the Retry-After of 2 s
    assert [r["status"] for r in slack.received()] == [429, 200]


@pytest.mark.parametrize("conn", ["slack_hook", "slack_api"])
def test_500_then_success(slack, conn):
    slack.script("500,502,200")
    post_to_slack(conn, "#c" if conn == "slack_api" else None, MESSAGE, retries=3)
    assert [r["status"] for r in slack.received()] == [500, 502, 200]


@pytest.mark.parametrize("conn", ["slack_hook", "slack_api"])
def test_404_fails_at_once_and_clearly(slack, conn):
    slack.script("404")
    with pytest.raises(SlackError, match=f"connection '{conn}'.*404"):
        post_to_slack(conn, "#c" if conn == "slack_api" else None, MESSAGE, retries=5)
    assert [r["status"] for r in slack.received()] == [404]  # not retried


def results(success: bool, new_failures: list[str] | None = None, previous: bool = True) -> dict:
    """The summary's XCom of a one-job night."""
    row = Row("vllm_amd64.tests.unit", "vllm-amd64-unit", "test", "success" if success else "failed")
    non = NightOverNight()
    if previous:
        non = NightOverNight("r0", "2026-11-27T08:00:00+00:00", Change(new_failures=tuple(new_failures or ())))
    return Results(
        "nightly_ci", "r1", "2026-11-28T08:00:00+00:00", "http://ui/run", rows=(row,), night_over_night=non
    ).to_json()


class _TI:
    def __init__(self, value, dag_id: str = "nightly_ci"):
        self.value = value
        self.dag_id = dag_id

    def xcom_pull(self, task_ids):
        return self.value


@pytest.mark.parametrize(
    ("when", "result", "posted"),
    [
        ("always", results(True), True),
        ("failure", results(True), False),
        ("failure", results(False), True),
        ("change", results(False), False),  # still failing, nothing new
        ("change", results(False, new_failures=["vllm_amd64.tests.unit"]), True),
    ],
)
def test_posting_policies_through_the_notify_task(slack, tmp_path, when, result, posted):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"extends: {ROOT / 'dev/local.yaml'}\n"
        f"notifications: {{slack: {{conn_id: slack_hook, when: {when}, ops_group_id: S0OPS}}}}\n"
    )
    plan = build_plan(load_config(config))
    assert plan.slack.conn_id == "slack_hook"
    op = SlackNotifyOperator(
        task_id="notify_slack",
        summary_task_id=plan.summary.task_id,
        slack_conn_id=plan.slack.conn_id,
        channel=plan.slack.channel,
        ops_group_id=plan.slack.ops_group_id,
        when=plan.slack.when,
        slack_retries=plan.slack.retries,
    )
    out = op.execute({"ti": _TI(result)})
    assert out["posted"] is posted
    assert len(slack.received()) == int(posted)
    if posted and not result["success"]:
        body = json.dumps(slack.received()[0]["body"], ensure_ascii=False)
        assert "Failed ❌" in body and "<!subteam^S0OPS|@ops-support>" in body


def test_the_deadline_callback_posts_while_the_run_goes_on(slack):
    import asyncio

    from include.nightly_ci.report.deadline import notify_overrun

    # The context as Airflow 3.3's scheduler builds it (Deadline.handle_miss): the run as
    # the REST API's JSON. The system test sees the same callback fire under a triggerer.
    context = {
        "dag_run": {"dag_run_id": "scheduled__2026-11-28T08:00:00+00:00", "queued_at": "2026-11-28T08:00:01Z"},
        "deadline": {"id": "0", "deadline_time": "2026-11-28T13:00:01Z"},
    }
    asyncio.run(notify_overrun(context, conn_id="slack_hook", channel=None, hours=5, dag_id="nightly_ci"))
    (msg,) = slack.received()
    text = msg["body"]["text"]
    assert "still running after 5 h" in text and "Run `scheduled__2026-11-28T08:00:00+00:00` of `nightly_ci`" in text
    assert "/dags/nightly_ci/runs/scheduled__2026-11-28T08%3A00%3A00%2B00%3A00|View the run>" in text


def test_the_deadline_callback_stays_quiet_for_a_run_that_already_ended(slack):
    """Airflow keeps a failed run's deadline and fires it later: no "still running" then."""
    import asyncio

    from include.nightly_ci.deadline import notify_overrun

    context = {"dag_run": {"dag_run_id": "scheduled__2026-11-28T08:00:00+00:00", "state": "failed"}}
    asyncio.run(notify_overrun(context, conn_id="slack_hook", channel=None, hours=5, dag_id="nightly_ci"))
    context["dag_run"]["state"] = "running"
    asyncio.run(notify_overrun(context, conn_id="slack_hook", channel=None, hours=5, dag_id="nightly_ci"))
    assert len(slack.received()) == 1  # only the running one


# AUDIT-RELIABILITY.md H5: Slack refuses a section over 3000 characters (invalid_blocks),
# and the stand-in refuses it as Slack does.
LONG_CASE = "tests.serve.test_vllm.TestDisaggregatedServing::test_serve_deployment[agg_router-Qwen/Qwen3-0.6B-tp1-max_tokens={}]"


def worst_night() -> Results:
    """25 new failures, 20 fixed and 40 still failing cases, 60 failed jobs with long names."""
    rows = tuple(
        Row(f"cell_{i}.tests.suite", f"framework-arch-suite-with-a-long-name-{i:03d}", "test", "failed")
        for i in range(60)
    )
    cases = Change(
        new_failures=tuple(LONG_CASE.format(i) for i in range(25)),
        fixed=tuple(LONG_CASE.format(100 + i) for i in range(20)),
        still_failing=tuple(LONG_CASE.format(200 + i) for i in range(40)),
    )
    non = NightOverNight("scheduled__2026-11-28T08:00:00+00:00", "2026-11-28T08:00:00+00:00", Change(), cases)
    return Results(
        "nightly_ci",
        "scheduled__2026-11-29T08:00:00+00:00",
        "2026-11-29T08:00:00+00:00",
        "http://ui/run",
        rows,
        {},
        non,
    )


def test_the_stand_in_refuses_a_section_slack_would_refuse(slack):
    too_long = {"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}]}
    with pytest.raises(SlackError, match="invalid_blocks"):
        post_to_slack("slack_hook", None, too_long, retries=1)


def test_the_worst_night_still_posts_within_slacks_limits_with_a_link_to_the_table(slack):
    from include.nightly_ci.report.slack import slack_message

    message = slack_message(worst_night(), "S0OPS")
    post_to_slack("slack_hook", None, message, retries=1)
    (got,) = slack.received()
    assert got["status"] == 200
    texts = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]
    assert all(len(t) <= 3000 for t in texts) and len(message["blocks"]) <= 50
    joined = "\n".join(texts)
    assert "*Failed Jobs (60):*" in joined and LONG_CASE.format(0) in joined  # the first ones are named
    assert "more lines in <http://ui/run|the full table>" in joined  # the rest counted, with the link


def test_without_a_summary_slack_is_still_told_and_the_task_fails(slack, tmp_path):
    """H4: a summary that failed left notify_slack raising, and nobody was told."""
    from types import SimpleNamespace

    from include.nightly_ci.errors import NoResultsError

    op = SlackNotifyOperator(
        task_id="notify_slack", summary_task_id="results_summary", slack_conn_id="slack_hook", when="change"
    )
    context = {"ti": _TI(None), "dag_run": SimpleNamespace(run_id="scheduled__2026-11-29T08:00:00+00:00")}
    with pytest.raises(NoResultsError):
        op.execute(context)
    (got,) = slack.received()
    text = got["body"]["text"]
    assert "No results ❌" in text and "the results summary did not complete" in text
    assert "/dags/nightly_ci/runs/scheduled__2026-11-29T08%3A00%3A00%2B00%3A00" in text
