"""The artifact store failing under a task (AUDIT-RELIABILITY.md M1), on moto's S3 server:
writes are retried while it is down, and a suite that passed stays passed when it refuses
for good, with what could not be stored kept in the task log."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from include.nightly_ci.artifacts import ArtifactStore, store_root, write_text
from include.nightly_ci.config import load_config
from include.nightly_ci.errors import StoreError
from include.nightly_ci.plan import build_plan
from include.nightly_ci.suites.base import SuiteOperator
from include.nightly_ci.suites.run import PASSED, SuiteRun
from tests.services import ROOT, MotoServer

pytestmark = pytest.mark.integration
BUCKET = "nightly-ci-store"
CONN = "store_s3"


@pytest.fixture
def s3(monkeypatch):
    from airflow.sdk.io import store

    moto = MotoServer()
    moto.start()
    # Airflow keeps one store per protocol and connection id for the life of the process:
    # an earlier test's, whose moto is gone, would be this one's (every write refused).
    monkeypatch.setattr(store, "_STORE_CACHE", {})
    # One botocore attempt with a short connect timeout per write: the retries under test
    # are the project's (botocore's own make each try against a dead endpoint take ~30 s).
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {
            "region_name": "us-east-1",
            "endpoint_url": moto.url,
            "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 2},
        },
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(conn))
    make_bucket(moto)
    yield moto
    moto.stop()


def s3_client(moto: MotoServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def make_bucket(moto: MotoServer) -> None:
    s3_client(moto).create_bucket(Bucket=BUCKET)


def test_a_write_is_retried_until_the_store_is_back(s3):
    s3.stop()
    back: list[BaseException | float] = []  # what the restart met: its error, or when it was back

    def come_back() -> None:
        time.sleep(3)
        try:
            s3.start()
            make_bucket(s3)  # moto keeps nothing across a restart
        except BaseException as exc:  # the test's failure says why the store never came back
            back.append(exc)
        else:
            back.append(time.monotonic())

    threading.Thread(target=come_back, daemon=True).start()
    started = time.monotonic()
    # The default 4 tries, 1, 2 and 4 s apart: moto is back in 3 s (and half a second).
    root = store_root(f"s3://{BUCKET}/nightly", CONN)
    try:
        path = write_text(root, "run/cell/record.json", "{}\n", backoff_seconds=1)
    except StoreError as exc:
        came = [b - started if isinstance(b, float) else b for b in back]
        raise AssertionError(
            f"the store came back after {came or 'not yet'} s ({time.monotonic() - started:.1f} s)"
        ) from exc
    assert time.monotonic() - started >= 3
    body = s3_client(s3).get_object(Bucket=BUCKET, Key="nightly/run/cell/record.json")["Body"].read()
    assert body == b"{}\n" and path.endswith("run/cell/record.json")


def test_a_store_that_stays_down_is_a_clear_error_naming_the_path(s3):
    s3.stop()
    with pytest.raises(
        StoreError, match=rf"the artifact store refused s3://{CONN}@{BUCKET}/nightly/run/x.txt \(3 of 3 tries\)"
    ):
        write_text(store_root(f"s3://{BUCKET}/nightly", CONN), "run/x.txt", "x", attempts=3, backoff_seconds=0.2)


class LocalSuiteOperator(SuiteOperator):
    """A suite run by pytest on this machine, standing in for a container: the subject
    here is what happens to its results."""

    def __init__(self, *, spec: Any, store: ArtifactStore, framework: str, arch: str, tests: str, **kwargs: Any):
        super().__init__(task_id=spec.local_id, **kwargs)
        self.spec, self.store = spec, store
        self.framework, self.arch, self.suite, self.image = framework, arch, "unit", "local"
        self.command, self.mode, self.marker, self.workdir = (), "run", "unit", tests
        self.junit_path, self.timeout_minutes, self.gpus = None, 5, 0
        self.tests = tests

    def execute_suite(self, context: Any, run: SuiteRun) -> None:
        junit = f"{self.tests}/junit.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", self.tests],
            capture_output=True,
            text=True,
            timeout=120,
        )
        run.exit_code, run.output = proc.returncode, proc.stdout + proc.stderr
        run.junit = Path(junit).read_text()


class _TI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_a_passed_suite_stays_passed_when_the_store_refuses_and_its_results_are_in_the_log(
    s3, tmp_path, capfd, monkeypatch
):
    """M1: a suite that passed after hours of GPU time failed on one refused write, and its
    JUnit was lost."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    plan = build_plan(load_config(ROOT / "dev" / "local.yaml"))
    cell = plan.cells[0]
    spec = cell.tests[0].task
    store = ArtifactStore(f"s3://{BUCKET}/nightly", CONN)
    op = LocalSuiteOperator(spec=spec, store=store, framework=cell.framework, arch=cell.arch, tests=str(tests))
    s3.stop()  # the store goes down while the suite runs
    context = {
        "ti": _TI(),
        "dag_run": SimpleNamespace(run_id="scheduled__2026-11-29T08:00:00+00:00"),
        "params": {"frameworks": [cell.framework], "arches": [cell.arch]},
    }
    monkeypatch.setattr("include.nightly_ci.artifacts.STORE_BACKOFF_SECONDS", 0.1)
    out = op.run(context)
    assert out["outcome"] == PASSED and out["counts"]["passed"] == 1
    assert op.record_extra()["outcome"] == PASSED  # the record's class follows the suite
    logged = "".join(capfd.readouterr())  # the task log (Airflow's handler writes to the console here)
    assert "the artifact store refused" in logged
    assert "<testsuites" in logged and 'name="test_ok"' in logged  # the JUnit, kept in the log
    assert json.dumps("passed") in logged  # the record too
