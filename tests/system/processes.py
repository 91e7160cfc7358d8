"""The production topology as processes on this machine: Postgres and Redis from Debian's
packages, and Airflow's api-server, scheduler, dag-processor, triggerer and one Celery
worker per group of queues, all on loopback with their own ports. Each worker has a
folder of its own (working folder, Airflow home, task logs, TMPDIR), as on its own host."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import requests

from tests.services import ROOT, Postgres, free_port, wait_for


class Redis:
    """redis-server with a password on 127.0.0.1:PORT, nothing persisted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if not server:
            raise RuntimeError("redis-server is not installed: run scripts/provision.sh (apt: redis-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "redis.conf"  # the password stays off the command line
        conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {self.root}\nrequirepass {self.password}\n'
        )
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([server, str(conf)], stdout=log, stderr=log)

        def up() -> bool:
            cli = ["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", self.password, "ping"]
            return subprocess.run(cli, capture_output=True, text=True).stdout.strip() == "PONG"

        wait_for(up, 15, f"redis on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Worker:
    """One Celery worker, as on a host of its own: ENV adds to the stack's (its engine's
    DOCKER_HOST, say); the stack gives it its own folder (see AirflowStack.folder)."""

    name: str
    queues: list[str]
    concurrency: int
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class AirflowStack:
    """api-server, scheduler, dag-processor, triggerer and Celery workers on one
    Postgres and one Redis, as the compose file runs them, but as local processes."""

    root: Path
    config: Path
    workers: list[Worker]
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.postgres = Postgres()
        self.redis = Redis(self.root / "redis")
        self.home = self.root / "airflow"
        self.logs = self.root / "logs"
        self._token: str | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def history_conn(self) -> dict[str, Any]:
        p = self.postgres
        return {"conn_type": "postgres", "host": "127.0.0.1", "port": p.port, "login": "airflow",
                "password": p.password, "schema": "nightly_ci_history"}  # fmt: skip

    @cached_property
    def env(self) -> dict[str, str]:
        """Every process's environment: one database, one broker, one JWT secret."""
        from cryptography.fernet import Fernet

        passwords = self.home / "passwords.json"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},
            "AIRFLOW_HOME": str(self.home),
            "PYTHONPATH": str(ROOT),
            "NIGHTLY_CI_CONFIG": str(self.config),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.system.hostname.worker_hostname",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            # The test history in a database of its own on the same server, as in compose.
            "AIRFLOW_CONN_NIGHTLY_CI_HISTORY": json.dumps(self.history_conn),
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url.replace("+psycopg2", ""),
            # As docker-compose.yaml: each worker loads what the tasks import once.
            "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"imports": ["include.nightly_ci.worker_preload"]}),
            "AIRFLOW__API__BASE_URL": self.api,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(24),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
            "AIRFLOW__LOGGING__TRIGGERER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            **self.extra_env,
        }
        self.home.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({"admin": self.password}))
        return env

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """One Airflow CLI command against the stack's database; raises on failure."""
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return proc

    def folder(self, worker: Worker) -> Path:
        """The worker's host: its working folder, holding its Airflow home, task logs and
        temporary folder; nothing of it is shared with another process of the stack."""
        return self.root / "hosts" / worker.name

    def _worker_env(self, worker: Worker) -> dict[str, str]:
        folder = self.folder(worker)
        for sub in ("airflow", "logs", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "NIGHTLY_CI_WORKER_NAME": worker.name,
            "AIRFLOW_HOME": str(folder / "airflow"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(folder / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "TMPDIR": str(folder / "tmp"),
            **worker.env,
        }

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[name] = subprocess.Popen(
            cmd,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )

    def start(self) -> None:
        began = time.monotonic()
        self.postgres.start()
        self.postgres.createdb(self.history_conn["schema"])
        self.redis.start()
        self.timings["postgres and redis up (s)"] = time.monotonic() - began
        began = time.monotonic()
        self.airflow("db", "migrate")
        subprocess.run(
            [sys.executable, "-m", "include.nightly_ci", "pools", str(self.config)],
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.timings["db migrate and pools (s)"] = time.monotonic() - began
        began = time.monotonic()
        airflow = [sys.executable, "-m", "airflow"]
        self._spawn("api-server", [*airflow, "api-server"])
        self._spawn("scheduler", [*airflow, "scheduler"])
        self._spawn("dag-processor", [*airflow, "dag-processor"])
        self._spawn("triggerer", [*airflow, "triggerer"])
        for w in self.workers:
            self._spawn(
                f"worker-{w.name}",
                [
                    *airflow,
                    "celery",
                    "worker",
                    "--queues",
                    ",".join(w.queues),
                    "--concurrency",
                    str(w.concurrency),
                    "--celery-hostname",
                    f"{w.name}@%h",
                ],
                env=self._worker_env(w),
                cwd=self.folder(w),
            )
        wait_for(self._api_up, 120, "the api-server")
        self.timings["processes up (s)"] = time.monotonic() - began

    def _api_up(self) -> bool:
        self.check_alive()
        try:
            return requests.get(f"{self.api}/api/v2/monitor/health", timeout=2).ok
        except requests.ConnectionError:
            return False

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.redis.stop()
        self.postgres.stop()

    # The REST API, as the UI and an operator's scripts use it.
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        if self._token is None:
            resp = requests.post(
                f"{self.api}/auth/token", json={"username": "admin", "password": self.password}, timeout=10
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        headers = {"Authorization": f"Bearer {self._token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.api}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def get(self, path: str) -> dict:
        resp = self.request("GET", path)
        assert resp.ok, f"GET {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        def parsed() -> bool:
            self.check_alive()
            return self.request("GET", f"/dags/{dag_id}").ok

        wait_for(parsed, timeout, f"DAG {dag_id} parsed")

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns?order_by=run_after&limit=100")["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise TimeoutError(f"run {run_id} not finished within {timeout} s")

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")
        return {t["task_id"]: t for t in body["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}?deserialize=true"
        return self.get(path)["value"]
