"""The culprit finder's findings on Slack: read from a real history store, posted through
the provider's hooks to the stand-in Slack on loopback, threaded under the night's own
message when the night posted through the API to the same channel."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from include.nightly_ci import artifacts
from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.errors import FindingMissing, SlackError
from include.nightly_ci.history import findings
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.names import SLACK_THREAD
from include.nightly_ci.report.culprit import CulpritReportOperator
from include.nightly_ci.report.operators import SlackNotifyOperator
from tests.integration.test_slack import Slack, results

pytestmark = pytest.mark.integration
NIGHT = "scheduled__2026-11-28T08:00:00+00:00"
SHA = "c0ffee1234567890" + "0" * 24
CHANNEL = "#nightly-ci"


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


@pytest.fixture
def store(tmp_path):
    """A migrated SQLite history store (as conftest's, SQLite only: what is read is the same)."""
    history = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    history.migrate()
    yield history
    history.close()


@pytest.fixture
def history(store, tmp_path, monkeypatch):
    """The store, with a finding of the night saved, as the culprit DAG leaves it; and its connection."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_HISTORY", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "history.db")})
    )
    finding = findings.CulpritFinding(
        "nightly_ci", NIGHT, "2026-11-28T08:00:00+00:00", "vllm_amd64", "unit", ("tests/test_ops.py::test_matmul",),
        "a" * 40, "b" * 40, status=findings.CULPRIT, culprit=SHA, parent="d" * 40, author="Ada", subject="Speed up",
        rounds=2, builds=3, gpu_seconds=600.0,
        evidence=({"mode": "verify", "round": 2, "commit": SHA, "image": None, "runs": {"t": ["failed"] * 3},
                   "verdict": "bad", "dag_id": "nightly_ci_culprit", "run_id": "r1", "task_id": "verify.run"},),
    )  # fmt: skip
    findings.save(store, finding)
    findings.save(store, replace(finding, suite="e2e", status=findings.FLAKY, culprit=None))  # another of the night
    return store


@pytest.fixture
def nightly(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def report(nightly: ArtifactStore, slack_conn_id: str | None, channel: str | None = None) -> CulpritReportOperator:
    return CulpritReportOperator(
        task_id="report_finding",
        history_conn_id="history",
        slack_conn_id=slack_conn_id,
        channel=channel,
        slack_retries=2,
        ops_group_id="S0OPS",
        nightly_store=nightly,
        repository_url="https://github.com/acme/vllm",
    )


def context(suite: str = "unit") -> dict:
    key = {"dag_id": "nightly_ci", "nightly_run_id": NIGHT, "cell": "vllm_amd64", "suite": suite}
    return {"dag_run": SimpleNamespace(dag_id="nightly_ci_culprit", run_id="manual__x", conf={"finding": key})}


class _TI:
    def __init__(self, value):
        self.value, self.dag_id = value, "nightly_ci"

    def xcom_pull(self, task_ids):
        return self.value


def notify(nightly: ArtifactStore | None, conn_id: str, channel: str | None) -> dict:
    """The nightly's notify task, on a failed night."""
    op = SlackNotifyOperator(
        task_id="notify_slack", summary_task_id="results_summary", slack_conn_id=conn_id, channel=channel,
        when="failure", slack_retries=2, store=nightly,
    )  # fmt: skip
    return op.execute({"ti": _TI(results(False)), "dag_run": SimpleNamespace(run_id=NIGHT)})


def test_a_finding_goes_to_the_webhook_unthreaded(history, slack, nightly):
    out = report(nightly, "slack_hook").execute(context())
    (got,) = slack.received()
    assert got["path"] == "/services/T0/B0/x" and got["status"] == 200
    assert "culprit found and verified" in got["body"]["text"] and "thread_ts" not in got["body"]
    assert SHA[:12] in json.dumps(got["body"])
    kept = json.loads((nightly.run_folder(NIGHT) / "culprit" / f"{out['file'].split('/culprit/')[1]}").read_text())
    assert (
        out.pop("file").endswith("/culprit/vllm_amd64.unit.json") and kept["culprit"] == SHA
    )  # beside the night's results
    assert out == {"status": "culprit", "culprit": SHA, "posted": True, "thread_ts": None}


def test_the_night_posted_through_the_api_and_the_finding_is_threaded_under_it(history, slack, nightly):
    night = notify(nightly, "slack_api", CHANNEL)
    saved = json.loads((nightly.run_folder(NIGHT) / SLACK_THREAD).read_text())
    (night_post,) = slack.received()
    assert saved == {"channel": CHANNEL, "ts": night_post["ts"]} and night["posted"]

    out = report(nightly, "slack_api", CHANNEL).execute(context())
    reply = slack.received()[1]
    assert reply["path"] == "/api/chat.postMessage" and reply["body"]["channel"] == CHANNEL
    assert reply["body"]["thread_ts"] == night_post["ts"]  # under the night's message
    assert out["thread_ts"] == night_post["ts"] and out["posted"]


def test_another_channel_or_no_night_message_posts_unthreaded(history, slack, nightly):
    report(nightly, "slack_api", CHANNEL).execute(context())  # the night posted nothing
    notify(nightly, "slack_api", "#elsewhere")
    out = report(nightly, "slack_api", CHANNEL).execute(context())
    first, _, second = slack.received()
    assert "thread_ts" not in first["body"] and "thread_ts" not in second["body"]
    assert out["thread_ts"] is None


def test_the_webhook_night_leaves_no_thread_and_the_notify_writes_nothing(history, slack, nightly):
    out = notify(nightly, "slack_hook", None)
    assert out["posted"] and not (nightly.run_folder(NIGHT) / SLACK_THREAD).exists()


def test_a_night_whose_thread_cannot_be_written_is_still_posted_and_green(slack, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(artifacts, "STORE_BACKOFF_SECONDS", 0.01)
    (tmp_path / "a-file").write_text("")
    out = notify(ArtifactStore(str(tmp_path / "a-file")), "slack_api", CHANNEL)  # no folder can be made under a file
    assert out["posted"] and len(slack.received()) == 1
    assert "could not keep the night's Slack thread" in "".join(capfd.readouterr())  # a warning in the task's log


def test_without_a_slack_connection_the_message_is_logged_and_nothing_posted(history, slack, nightly, capfd):
    out = report(nightly, None).execute(context("e2e"))
    assert out.pop("file") and out == {"status": "flaky", "culprit": None, "posted": False, "thread_ts": None}
    assert slack.received() == [] and "handed to the flake handling" in "".join(capfd.readouterr())


def test_a_missing_finding_is_a_clear_error(history, slack, nightly):
    with pytest.raises(
        FindingMissing, match=r"no finding of vllm_amd64/nope of night scheduled__2026.* connection 'history'"
    ):
        report(nightly, "slack_hook").execute(context("nope"))
    assert slack.received() == []


def test_a_refusal_fails_the_task_with_slacks_error_and_keeps_the_finding(history, slack, nightly):
    slack.script("404")
    with pytest.raises(SlackError, match=r"connection 'slack_hook'.*404"):
        report(nightly, "slack_hook").execute(context())
    (kept,) = [f for f in findings.load(history, "nightly_ci", NIGHT) if f.suite == "unit"]
    assert kept.status == findings.CULPRIT and kept.culprit == SHA
