"""A nightly with one cell's build broken: that cell's 4 test tasks never start (no
container, no pool slot), every other cell builds, publishes and passes its tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import docker
import pytest

from dev.sample_repo import make_repo, nightly_history
from include.nightly_ci.names import tag_safe_run_id
from tests.services import ENGINE, airflow_env, run_dag, run_id_of, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BROKEN = "sglang_arm64"


def test_a_broken_build_leaves_only_its_own_tests_upstream_failed(airflow_home, tmp_path):
    repo = tmp_path / "sample.git"
    make_repo(repo, nightly_history(1, datetime.now(UTC)))
    # A base image on a loopback port where nothing listens: the FROM fails fast, offline.
    config = write_config(
        tmp_path / "broken.yaml",
        f"source: {{repository: {repo}}}\n"
        "overrides:\n  arm64:\n    sglang: {BASE_IMAGE: '127.0.0.1:9/missing'}\n"
        f"artifacts: {{base: {tmp_path / 'artifacts'}}}\n",
    )
    started = int(time.time())
    proc = run_dag(config)
    ended = int(time.time()) + 1
    (tmp_path / "run.log").write_text(proc.stdout)
    run_id = run_id_of(proc.stdout)
    states = json.loads(
        subprocess.run(
            [sys.executable, "-m", "airflow", "tasks", "states-for-dag-run", "nightly_ci", run_id, "-o", "json"],
            env=airflow_env({"NIGHTLY_CI_CONFIG": str(config)}),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    state = {r["task_id"]: r["state"] for r in states}
    assert state[f"{BROKEN}.build_framework"] == "failed"
    broken_tests = {t: s for t, s in state.items() if t.startswith(f"{BROKEN}.tests.")}
    assert broken_tests == {
        f"{BROKEN}.tests.{s}": "upstream_failed" for s in ("unit", "integration", "e2e_1gpu", "e2e_2gpu")
    }
    other_tests = {t: s for t, s in state.items() if ".tests." in t and not t.startswith(BROKEN)}
    assert len(other_tests) == 20 and set(other_tests.values()) == {"success"}

    engine = docker.APIClient(base_url=ENGINE)

    def created(cell: str) -> list:
        return list(
            engine.events(
                since=started,
                until=ended,
                decode=True,
                filters={"type": "container", "event": "create", "label": f"dev.nightly-ci.cell={cell}"},
            )
        )

    assert created(BROKEN) == []
    assert len(created("sglang_amd64")) == 4  # the filter does see the other cells' test containers

    # The summary ran anyway and says what happened to every job.
    results = json.loads((tmp_path / "artifacts" / tag_safe_run_id(run_id) / "results.json").read_text())
    rows = {r["task_id"]: r for r in results["rows"]}
    assert rows[f"{BROKEN}.build_framework"]["failure_class"] == "infra"  # its base image could not be pulled
    assert {rows[f"{BROKEN}.tests.{s}"]["failure_class"] for s in ("unit", "integration", "e2e_1gpu", "e2e_2gpu")} == {
        "upstream"
    }
    assert (results["passed"], results["total"]) == (54 - 9, 54)
    assert state["verdict"] == "failed" and state["results_summary"] == "success"
