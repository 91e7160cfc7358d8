"""A nightly with two cells' builds broken and one suite failing (issue 14's night): the
broken cells' test tasks never start (no container, no pool slot), every other cell
builds, publishes and tests; the table, the verdict and Slack name the 3 root failures
and count the 16 jobs they kept from running on one line."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import UTC, datetime
from urllib.parse import quote

import docker
import pytest

from dev.fake_slack import FakeSlack
from dev.sample_repo import BROKEN_ROUTER, ROUTER, add_commit, make_repo, nightly_history
from include.nightly_ci.names import LABEL_CELL, LABEL_RUN_ID, tag_safe_run_id
from tests.services import ENGINE, free_port, run_dag, run_id_of, task_states, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BROKEN = "sglang_amd64"
ALSO_BROKEN = "trtllm_amd64"
SUITES = ("unit", "integration", "e2e_1gpu", "e2e_2gpu")


def test_a_broken_build_leaves_only_its_own_tests_upstream_failed(airflow_home, tmp_path):
    repo = tmp_path / "sample.git"
    make_repo(repo, nightly_history(1, datetime.now(UTC)))
    add_commit(repo, {ROUTER: BROKEN_ROUTER}, "break the router: vllm-amd64-unit fails")
    # A base image on a loopback port where nothing listens: the FROM fails fast, offline.
    config = write_config(
        tmp_path / "broken.yaml",
        f"source: {{repository: {repo}}}\n"
        "build: {retries: 0}\n"  # the broken builds are not retried a minute later: nothing here reads a retry
        "overrides:\n  amd64:\n    sglang: {BASE_IMAGE: '127.0.0.1:9/missing'}\n"
        "    trtllm: {BASE_IMAGE: '127.0.0.1:9/missing'}\n"
        f"artifacts: {{base: {tmp_path / 'artifacts'}}}\n",
    )
    slack = FakeSlack(free_port(), tmp_path / "slack.jsonl")
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    hook = {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{slack.server_port}/services/T0/B0/x"}
    # Every container the engine creates while the night runs, as it happens: the engine
    # keeps only its last 256 events for a later look, and other tests' nights run on it too.
    engine = docker.APIClient(base_url=ENGINE)
    stream = engine.events(decode=True, filters={"type": "container", "event": "create"})
    seen: list[dict] = []

    def watch() -> None:
        with contextlib.suppress(Exception):  # the stream closed under it: the night is over
            seen.extend(stream)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = run_dag(config, env={"AIRFLOW_CONN_NIGHTLY_CI_SLACK": json.dumps(hook)})
    finally:
        slack.shutdown()
        time.sleep(1)  # the last create's event on its way
        stream.close()
        watcher.join(10)
    (tmp_path / "run.log").write_text(proc.stdout)
    run_id = run_id_of(proc.stdout)
    state = task_states("nightly_ci", run_id)
    for cell in (BROKEN, ALSO_BROKEN):
        assert state[f"{cell}.build_framework"] == "failed"
        broken_tests = {t: s for t, s in state.items() if t.startswith(f"{cell}.tests.")}
        assert broken_tests == {f"{cell}.tests.{s}": "upstream_failed" for s in SUITES}
    assert state["vllm_amd64.tests.unit"] == "failed"  # the router's round robin is broken
    other_tests = {
        t: s
        for t, s in state.items()
        if ".tests." in t and not t.startswith((BROKEN, ALSO_BROKEN, "vllm_amd64.tests.unit"))
    }
    assert len(other_tests) == 15 and set(other_tests.values()) == {"success"}

    def created(cell: str) -> list:
        """This run's containers of CELL: other tests' nights run on the same engine meanwhile."""
        return [
            e
            for e in seen
            if e["Actor"]["Attributes"].get(LABEL_CELL) == cell and e["Actor"]["Attributes"].get(LABEL_RUN_ID) == run_id
        ]

    assert created(BROKEN) == [] and created(ALSO_BROKEN) == []
    assert len(created("sglang_arm64")) == 4  # the filter does see the other cells' test containers

    # The summary ran anyway and says what happened to every job.
    results = json.loads((tmp_path / "artifacts" / tag_safe_run_id(run_id) / "results.json").read_text())
    rows = {r["task_id"]: r for r in results["rows"]}
    assert rows[f"{BROKEN}.build_framework"]["failure_class"] == "infra"  # its base image could not be pulled
    assert {rows[f"{BROKEN}.tests.{s}"]["failure_class"] for s in SUITES} == {"upstream"}
    assert rows[f"{BROKEN}.tests.unit"]["blocked_by"] == [f"{BROKEN}.build_framework"]
    # Issue 14.4: passed, failed and not run apart; every row kept.
    assert (results["passed"], results["failed"], results["not_run"], results["total"]) == (35, 3, 16, 54)
    md = (tmp_path / "artifacts" / tag_safe_run_id(run_id) / "results.md").read_text()
    assert "**Summary: 35/54 jobs passed, 3 failed, 16 not run**" in md
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 54
    assert state["verdict"] == "failed" and state["results_summary"] == "success"
    assert "NightlyFailed: 35/54 jobs passed, 3 failed, 16 not run; failed: " in proc.stdout

    # Issue 14.3: Slack names the 3 root failures with their class, and the 16 on one line.
    (posted,) = [json.loads(line) for line in (tmp_path / "slack.jsonl").read_text().splitlines()]
    assert quote(run_id, safe="") in posted["body"]["text"]
    sections = [b["text"]["text"] for b in posted["body"]["blocks"] if b["type"] == "section"]
    assert sections[0].splitlines()[1] == "Summary: 35/54 jobs passed, 3 failed, 16 not run"
    assert sections[1].splitlines() == [
        "*Failed Jobs (3):*",
        "• vllm-amd64-unit (test)",
        "• sglang-framework (amd64) (infra)",
        "• trtllm-framework (amd64) (infra)",
    ]
    assert sections[2] == "16 jobs not run: their build failed"
