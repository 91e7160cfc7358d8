"""Faults of the store, of Slack and of earlier results: the night goes on, and says so."""

from __future__ import annotations

import pytest

from include.nightly_ci.names import tag_safe_run_id
from tests.faults.conftest import BUCKET, PREFIX

pytestmark = [pytest.mark.faults, pytest.mark.slow]
UNIT = "vllm_amd64.tests.unit"


def test_the_store_down_during_a_write_is_retried_and_the_suite_still_passes(stand, untouched, waited_out):
    """moto S3 answers 503 to the unit suite's first two output.log writes (botocore's own
    retries off): the write's own retries carry it (the night of tests/faults/conftest.py
    waited_out)."""
    night = waited_out.night
    assert waited_out.statuses("s3", "PUT").count(503) == 2
    assert night.state == "success", night.output[-3000:]
    assert night.row(UNIT)["status"] == "success" and night.row(UNIT)["failure_class"] is None
    assert any(k.endswith("vllm_amd64/test-unit/output.log") for k in stand.store_files(night.run_id))


def test_slack_answering_5xx_is_retried_and_the_message_goes_out(stand, untouched, waited_out):
    """Slack answers 500, then 503: the message goes out on the third try (the night of
    waited_out)."""
    night = waited_out.night
    assert night.state == "success"
    assert waited_out.slack_statuses == [500, 503, 200], waited_out.slack_statuses
    assert night.states["notify_slack"] == "success"


def test_slack_refusing_the_message_400_fails_only_the_notify_task(stand, untouched):
    stand.slack.script[:] = [(400, None)]
    night = stand.run("2026-11-23T08:00:00+00:00")
    assert night.states["notify_slack"] == "failed"
    assert night.states["results_summary"] == "success" and night.results is not None
    assert night.state == "failed"  # the message did not go out: the run says so


def test_a_truncated_results_json_of_an_earlier_night_is_skipped_with_a_warning(stand, untouched):
    earlier = stand.run("2026-11-24T08:00:00+00:00")
    assert earlier.state == "success"
    key = f"{PREFIX}/{tag_safe_run_id(earlier.run_id)}/results.json"
    body = stand.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    stand.s3().put_object(Bucket=BUCKET, Key=key, Body=body[: len(body) // 2])
    night = stand.run("2026-11-25T08:00:00+00:00")
    assert night.state == "success"
    assert any(tag_safe_run_id(earlier.run_id) in w for w in night.results["warnings"]), night.results["warnings"]
