"""The stand every fault test runs its nights on: the real DAG (`airflow dags test`), one
cell (vllm amd64) built on the project's engine, ECR and ACR stand-ins (registries with
auth), artifacts on S3 (moto), Slack (the stand-in), each behind a fault proxy where a
fault is injected. A first night runs before any fault: every fault test then checks
that not one of its files changed (no artifact or result of another run lost)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dev.fake_slack import FakeSlack
from dev.sample_repo import make_repo, nightly_history
from include.nightly_ci.names import tag_safe_run_id
from tests.faults.proxy import Fault, FaultProxy
from tests.services import (
    LocalRegistry,
    MotoServer,
    airflow_env,
    dag_runs,
    free_port,
    run_dag,
    run_id_of,
    stalled_server,
    task_states,
    write_config,
)

ONE_CELL = {"frameworks": ["vllm"], "arches": ["amd64"], "publish": True}
BUCKET, PREFIX = "nightly-ci-faults", "nightly"
FIRST_NIGHT = "2026-11-20T08:00:00+00:00"


@dataclass(frozen=True)
class Night:
    """One run of the DAG on the stand, as its users see it afterwards."""

    returncode: int
    output: str
    run_id: str
    state: str  # the DagRun's final state, as Airflow recorded it
    states: dict[str, str]  # task id -> state
    results: dict[str, Any] | None  # its results.json, None if none was written

    def row(self, task_id: str) -> dict[str, Any]:
        assert self.results is not None, "the run wrote no results.json"
        rows = {r["task_id"]: r for r in self.results["rows"]}
        assert task_id in rows, sorted(rows)
        return rows[task_id]


class FaultStand:
    def __init__(self, root: Path):
        self.root = root
        self.moto = MotoServer()
        self.ecr = LocalRegistry(root / "ecr")
        self.acr = LocalRegistry(root / "acr")
        self.repo = root / "sample.git"
        self.commits = make_repo(self.repo, nightly_history(3, datetime.now(UTC)))
        self.slack_log = root / "slack.jsonl"
        self.slack = FakeSlack(free_port(), self.slack_log)
        self.proxies: dict[str, FaultProxy] = {}

    def start(self) -> None:
        self.moto.start()
        self.s3().create_bucket(Bucket=BUCKET)
        self.ecr.start()
        self.acr.start()
        threading.Thread(target=self.slack.serve_forever, daemon=True).start()
        self.proxies = {
            "s3": FaultProxy(self.moto.port).start(),
            "ecr": FaultProxy(self.ecr.port).start(),
            "acr": FaultProxy(self.acr.port).start(),
        }

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        self.slack.shutdown()
        for server in (self.acr, self.ecr, self.moto):
            server.stop()

    def clear_faults(self) -> None:
        for proxy in self.proxies.values():
            proxy.inject(None)
        self.slack.script.clear()

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.moto.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        def registry(proxy: str, reg: LocalRegistry, conn_type: str) -> str:
            host = self.proxies[proxy].host
            return json.dumps({"conn_type": conn_type, "host": host, "login": reg.user, "password": reg.password})

        s3 = {
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": f"http://{self.proxies['s3'].host}",
                      "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10}},
        }  # fmt: skip
        slack = {
            "conn_type": "slackwebhook",
            "password": f"http://127.0.0.1:{self.slack.server_address[1]}/services/T/B/x",
        }
        return {
            "AIRFLOW_CONN_FAULTS_ECR": registry("ecr", self.ecr, "docker"),
            "AIRFLOW_CONN_FAULTS_ACR": registry("acr", self.acr, "azure_container_registry"),
            "AIRFLOW_CONN_FAULTS_S3": json.dumps(s3),
            "AIRFLOW_CONN_NIGHTLY_CI_SLACK": json.dumps(slack),
            "AIRFLOW_CONN_NIGHTLY_CI_HISTORY": json.dumps(
                {"conn_type": "sqlite", "host": str(self.root / "history.db")}
            ),
        }

    def config(self, name: str = "nightly", extra: str = "", source: str | None = None) -> Path:
        """The stand's config; SOURCE replaces the source mapping's body, EXTRA adds sections."""
        return write_config(
            self.root / f"{name}.yaml",
            f"source: {{{source or f'repository: {self.repo}'}}}\n"
            "registries:\n"
            "  ecr: {kind: docker, conn_id: faults_ecr}\n"
            "  acr: {conn_id: faults_acr}\n"
            f"artifacts: {{base: 's3://{BUCKET}/{PREFIX}', conn_id: faults_s3}}\n" + extra,
        )

    def run(self, logical_date: str, *, conf: dict | None = None, config: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 900) -> Night:  # fmt: skip
        config = config or self.config()
        proc = run_dag(config, logical_date=logical_date, conf=conf or ONE_CELL, env={**self.env(), **(env or {})},
                       timeout=timeout)  # fmt: skip
        log = self.root / f"run-{logical_date[:19].replace(':', '')}.log"
        log.write_text(proc.stdout)
        run_id = run_id_of(proc.stdout)
        runs = {r["run_id"]: r["state"] for r in dag_runs("nightly_ci")}
        return Night(
            proc.returncode, proc.stdout, run_id, runs[run_id], task_states("nightly_ci", run_id),
            self.results(run_id),
        )  # fmt: skip

    def launch(
        self, logical_date: str, log: Path, *, config: Path, conf: dict | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """`airflow dags test` of a night, started and left running: the worker of that night,
        in a session of its own so that the test can SIGKILL it whole (os.killpg); its
        output goes to LOG."""
        cmd = [sys.executable, "-m", "airflow", "dags", "test", "nightly_ci", logical_date, "-c",
               json.dumps(conf or ONE_CELL)]  # fmt: skip
        with log.open("ab") as out:
            return subprocess.Popen(
                cmd, env=airflow_env({"NIGHTLY_CI_CONFIG": str(config), **self.env(), **(env or {})}),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def runs_of(self, logical_date: str) -> list[dict[str, Any]]:
        """The DagRuns Airflow holds for LOGICAL_DATE (run_id, state, ...)."""
        runs = dag_runs("nightly_ci")
        night = datetime.fromisoformat(logical_date)
        return [r for r in runs if r.get("logical_date") and datetime.fromisoformat(r["logical_date"]) == night]

    def stored(self, run_id: str, key: str) -> bytes | None:
        """The file KEY (vllm_amd64/test-unit/output.log) of RUN_ID's folder in the store, None if absent."""
        try:
            return self.s3().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{tag_safe_run_id(run_id)}/{key}")["Body"].read()
        except self.s3().exceptions.NoSuchKey:
            return None

    def results(self, run_id: str) -> dict[str, Any] | None:
        key = f"{PREFIX}/{tag_safe_run_id(run_id)}/results.json"
        try:
            return json.loads(self.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except self.s3().exceptions.NoSuchKey:
            return None

    def store_files(self, run_id: str | None = None) -> dict[str, str]:
        """Every object of the store (or of RUN_ID's folder) and its sha256."""
        prefix = f"{PREFIX}/{tag_safe_run_id(run_id)}/" if run_id else f"{PREFIX}/"
        files = {}
        for page in self.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = self.s3().get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
                files[obj["Key"]] = hashlib.sha256(body).hexdigest()
        return files

    def slack_posts(self) -> list[dict[str, Any]]:
        if not self.slack_log.exists():
            return []
        return [json.loads(line) for line in self.slack_log.read_text().splitlines()]


@pytest.fixture(scope="session")
def stand(tmp_path_factory, provisioned, airflow_home) -> Iterator[FaultStand]:
    s = FaultStand(tmp_path_factory.mktemp("faults"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def first_night(stand) -> tuple[Night, dict[str, str]]:
    """A night with no fault, and every file it left: no fault test may change one."""
    night = stand.run(FIRST_NIGHT)
    assert night.state == "success", night.output[-5000:]
    return night, stand.store_files(night.run_id)


@dataclass(frozen=True)
class WaitedOut:
    """A night through transient faults, each on a path of its own and each waited out,
    and what each proxy and the stand-in Slack saw meanwhile."""

    night: Night
    seen: dict[str, list[tuple[float, str, str, int]]]  # proxy -> (time, method, path, status)
    slack_statuses: list[int]  # of the night's posts, in order

    def statuses(self, proxy: str, method: str) -> list[int]:
        return [s for _, m, _, s in self.seen[proxy] if m == method]


def manifest_put(method: str, path: str) -> bool:
    return method == "PUT" and "/manifests/" in path


@pytest.fixture(scope="session")
def waited_out(stand, first_night) -> WaitedOut:
    """One night, three faults that the night must wait out, one test reading each (a
    night each would cost a night each, and the faults meet nowhere): moto S3 answers 503
    to the unit suite's first two output.log writes (botocore's own retries off), Slack
    answers 500 then 503, ACR answers 429 with Retry-After: 3 to two manifest PUTs."""
    stand.proxies["s3"].inject(
        Fault(status=503, times=2, match=lambda m, p: m == "PUT" and "test-unit/output.log" in p)
    )
    stand.proxies["acr"].inject(Fault(status=429, headers={"Retry-After": "3"}, times=2, match=manifest_put))
    stand.slack.script[:] = [(500, None), (503, None)]
    posted = len(stand.slack_posts())
    try:
        night = stand.run("2026-11-21T08:00:00+00:00")
        seen = {name: list(proxy.seen) for name, proxy in stand.proxies.items()}
        slack = [post["status"] for post in stand.slack_posts()[posted:]]
    finally:
        stand.clear_faults()
    return WaitedOut(night, seen, slack)


@pytest.fixture
def untouched(stand, first_night) -> Iterator[None]:
    """After the test: every fault cleared, and the first night's files all still there, unchanged."""
    yield
    stand.clear_faults()
    night, files = first_night
    assert stand.store_files(night.run_id) == files, "a fault run changed or lost another run's files"


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A port that accepts every connection and never answers (a hung git daemon or proxy)."""
    with stalled_server() as port:
        yield port
