"""`make up`: the Airflow UI with the project's DAGs, and the login it prints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.services import ECR_PORT, ROOT, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAGS = {"nightly_ci", "nightly_ci_retention", "nightly_ci_culprit"}  # dags/: the nightly, retention, culprit finder


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_make_up_serves_the_dags_and_prints_the_login(tmp_path):
    assert not port_in_use(8080), "something already listens on 8080: this test must reach its own server"
    env = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW_HOME", "NIGHTLY_CI_CONFIG")}
    # The local config, starting tomorrow: unpausing a catchup-off DAG otherwise queues the
    # latest night at once (all 6 cells, ahead of the REST-triggered run: max one active run).
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    env["NIGHTLY_CI_LOCAL_CONFIG"] = str(write_config(tmp_path / "up.yaml", f"dag: {{start_date: {tomorrow}}}\n"))
    # Its own metadata database: the demo's (.local/airflow) knows the DAG with the local
    # config's start date, and the scheduler may queue that night before the dag-processor
    # has read this config (what a user meets after `make demo`: issue 14's to settle).
    env["NIGHTLY_CI_AIRFLOW_HOME"] = str(tmp_path / "airflow")
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "up.sh")],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        login = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and login is None:
            found = re.search(
                r"^\[up\] the UI is at (\S+); login: admin, its password in (\S+)$",
                (tmp_path / "up.log").read_text(),
                re.M,
            )
            login = json.loads(Path(found.group(2)).read_text())["admin"] if found else None
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(2)
        assert login, "make up printed no login"
        out = (tmp_path / "up.log").read_text()
        assert login not in out  # where it is, never what it is
        # Before the scheduler starts, make up says what it will run: in a new database
        # nothing, the DAGs are created paused (issue 14).
        said = out[: out.index("[up] starting airflow standalone")]
        assert "[up] nightly_ci: not in the database yet: it starts paused (new DAGs are created paused)\n" in said
        assert "UNPAUSED" not in said, said
        listening = subprocess.run(["ss", "-ltnH", "sport = :8080"], capture_output=True, text=True).stdout
        assert "127.0.0.1:8080" in listening and "0.0.0.0:8080" not in listening and "*:8080" not in listening
        token = requests.post(
            "http://127.0.0.1:8080/auth/token", json={"username": "admin", "password": login}, timeout=10
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        dags: set[str] = set()
        while time.monotonic() < deadline and dags != DAGS:
            body = requests.get("http://127.0.0.1:8080/api/v2/dags", headers=headers, timeout=10).json()
            dags = {d["dag_id"] for d in body["dags"]}
            time.sleep(2)
        assert dags == DAGS
        errors = requests.get("http://127.0.0.1:8080/api/v2/importErrors", headers=headers, timeout=10).json()
        assert errors["total_entries"] == 0
        pools = requests.get("http://127.0.0.1:8080/api/v2/pools", headers=headers, timeout=10).json()
        assert {"cpu-amd-m5-4xlarge", "cpu-arm-r8g-4xlarge", "gpu-l40-amd64", "culprit"} <= {
            p["name"] for p in pools["pools"]
        }
        triggered_with_params_under_the_scheduler(headers)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        deadline = time.monotonic() + 60
        while port_in_use(8080) and time.monotonic() < deadline:
            time.sleep(1)
        assert not port_in_use(8080), "make up left its server behind"
    # The UI unpaused the nightly above: the next `make up` says so before it starts, when its
    # next night comes and how to pause it (the same command in the same database).
    said = subprocess.run(
        ["bash", "-c", "source scripts/local_env.sh && python -m include.nightly_ci paused"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert re.search(
        rf"^nightly_ci: UNPAUSED: the scheduler queues its next run at {tomorrow} 08:00 UTC \(in \d+ h \d+ min\);"
        r" to stop it: `airflow dags pause nightly_ci`, or the UI's toggle$",
        said,
        re.M,
    ), said


API = "http://127.0.0.1:8080/api/v2"


def run_state(run_id: str, headers: dict) -> str | None:
    """The run's state, or None when the api-server did not answer within 30 s: standalone's
    SQLite lets one writer in at a time, and on a busy machine (CI: 4 test workers on 2
    cores) a read once waited more than 10 s for the scheduler's write. One slow answer is
    not the end of the wait."""
    try:
        return requests.get(f"{API}/dags/nightly_ci/dagRuns/{run_id}", headers=headers, timeout=30).json()["state"]
    except requests.exceptions.ReadTimeout:
        return None


def triggered_with_params_under_the_scheduler(headers: dict) -> None:
    """A run triggered through the REST API with Params builds and tests only the chosen
    cell under the real scheduler; the UI's extra links lead to its image and JUnit."""
    assert requests.patch(f"{API}/dags/nightly_ci", json={"is_paused": False}, headers=headers, timeout=10).ok
    resp = requests.post(
        f"{API}/dags/nightly_ci/dagRuns",
        headers=headers,
        timeout=10,
        json={"logical_date": None, "conf": {"frameworks": ["vllm"], "arches": ["amd64"]}},
    )
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    runs = requests.get(f"{API}/dags/nightly_ci/dagRuns", headers=headers, timeout=10).json()["dag_runs"]
    assert [r["dag_run_id"] for r in runs if r["run_type"] == "scheduled"] == []  # none before the start date
    deadline, state = time.monotonic() + 600, "queued"
    while time.monotonic() < deadline and state not in ("success", "failed"):
        time.sleep(5)
        state = run_state(run_id, headers) or state
    tis = requests.get(
        f"{API}/dags/nightly_ci/dagRuns/{run_id}/taskInstances?limit=100", headers=headers, timeout=10
    ).json()["task_instances"]
    states = {t["task_id"]: t["state"] for t in tis}
    assert state == "success", states
    ran = {t for t, s in states.items() if s == "success"}
    assert {t.split(".")[0] for t in ran} == {
        "resolve_source",
        "vllm_amd64",
        "results_summary",
        "verdict",
        "notify_slack",
    }
    assert states["sglang_arm64.build_framework"] == "skipped"

    def links(task_id: str) -> dict:
        url = f"{API}/dags/nightly_ci/dagRuns/{run_id}/taskInstances/{task_id}/links"
        return requests.get(url, headers=headers, timeout=10).json()["extra_links"]

    push_links = links("vllm_amd64.push_runtime_ecr")
    assert "Image in registry" in push_links, push_links
    image = push_links["Image in registry"]
    assert image.startswith(f"http://127.0.0.1:{ECR_PORT}/v2/ai-dynamo/dynamo/manifests/sha256:")
    unit = links("vllm_amd64.tests.unit")
    assert unit["JUnit report"].endswith("/vllm_amd64/test-unit/pytest_test_report.xml")
    assert unit["Test output"].endswith("/vllm_amd64/test-unit/output.log")
