"""Faults of the git server and of the registries: the run ends as the fault decides, each
failure in its class, and nothing of another run is touched."""

from __future__ import annotations

import time

import pytest

from include.nightly_ci.names import LABEL_LOGICAL_DATE
from tests.faults.conftest import manifest_put
from tests.faults.proxy import Fault
from tests.services import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]
RESOLVE = "resolve_source"
PUSH_ACR = "vllm_amd64.push_runtime_acr"
REPO = "ai-dynamo/dynamo"


def test_a_git_server_that_is_down_fails_resolve_source_as_infra(stand, untouched):
    config = stand.config(
        "git-down", "build: {retries: 0}\n", source=f"repository: 'git://127.0.0.1:{free_port()}/sample.git'"
    )
    night = stand.run("2026-11-26T08:00:00+00:00", config=config)
    assert night.state == "failed"
    row = night.row(RESOLVE)
    assert (row["status"], row["failure_class"]) == ("failed", "infra"), row
    assert night.states[RESOLVE] == "failed" and night.states["results_summary"] == "success"


def test_a_stalled_git_server_ends_at_the_source_timeout_as_infra(stand, untouched, stalled_port):
    config = stand.config(
        "git-stalled",
        "build: {retries: 0}\n",
        source=f"repository: 'git://127.0.0.1:{stalled_port}/sample.git', timeout_seconds: 5",
    )
    started = time.monotonic()
    night = stand.run("2026-11-27T08:00:00+00:00", config=config)
    assert time.monotonic() - started < 120
    assert night.state == "failed"
    row = night.row(RESOLVE)
    assert (row["status"], row["failure_class"]) == ("failed", "infra"), row
    assert "did not finish within 5 s" in night.output


def test_a_registry_answering_503_for_10_seconds_is_waited_out(stand, untouched):
    acr = stand.proxies["acr"]
    acr.inject(Fault(status=503, seconds=10, match=manifest_put))
    night = stand.run("2026-11-28T08:00:00+00:00")
    refused = [t for t, m, p, s in acr.seen if s == 503]
    assert refused and refused[-1] - refused[0] >= 5, refused  # the pushes kept trying through the outage
    assert night.state == "success", night.output[-3000:]
    assert night.row(PUSH_ACR)["status"] == "success"


def test_a_registry_refusing_the_credentials_fails_its_push_at_once_as_infra(stand, untouched):
    acr = stand.proxies["acr"]
    acr.inject(Fault(status=401, headers={"WWW-Authenticate": 'Basic realm="test"'}))
    night = stand.run("2026-11-29T06:00:00+00:00")
    row = night.row(PUSH_ACR)
    assert (row["status"], row["failure_class"]) == ("failed", "infra"), row
    assert night.state == "failed"
    assert 1 <= acr.statuses().count(401) <= 4, (
        acr.seen
    )  # no retry loop against a registry that refuses the credentials
    assert night.row("vllm_amd64.tests.unit")["status"] == "success"  # the tests pull from ECR: they ran


def test_a_registry_answering_429_is_waited_for_as_its_retry_after_says(stand, untouched, waited_out):
    """ACR answers 429 with Retry-After: 3 to two manifest PUTs: the push waits as told
    (the night of tests/faults/conftest.py waited_out)."""
    night = waited_out.night
    assert night.state == "success", night.output[-3000:]
    assert waited_out.statuses("acr", "PUT").count(429) == 2
    puts = [t for t, m, p, s in waited_out.seen["acr"] if manifest_put(m, p)]
    assert puts[1] - puts[0] >= 2.9 and puts[2] - puts[1] >= 2.9, puts


def test_a_run_dated_in_the_future_moves_no_moving_tag(stand, untouched):
    before = stand.ecr.client().image(REPO, "nightly-vllm-amd64")
    night = stand.run("2030-01-01T08:00:00+00:00")
    assert night.state == "success"
    after = stand.ecr.client().image(REPO, "nightly-vllm-amd64")
    assert after.digest == before.digest and after.labels[LABEL_LOGICAL_DATE] != "2030-01-01T08:00:00+00:00"
    assert "in the future" in night.output
