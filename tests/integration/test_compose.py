"""docker-compose.yaml validates with Debian's docker-compose, and has a worker for the
queue of every runner pool of the shipped config."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from include.nightly_ci.plan import load_plan
from tests.services import ROOT

pytestmark = pytest.mark.integration


def compose(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    assert shutil.which("docker-compose"), "docker-compose is installed by scripts/provision.sh"
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yaml", *args], cwd=cwd, capture_output=True, text=True
    )


def test_the_compose_file_validates():
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_the_stack_has_every_service_and_a_worker_per_queue():
    config = yaml.safe_load(compose("config").stdout)
    services = config["services"]
    for name in (
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-init",
    ):
        assert name in services
    queues = {
        s["command"][-1] if isinstance(s["command"], list) else s["command"].split()[-1]
        for n, s in services.items()
        if n.startswith("airflow-worker")
    }
    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    assert set(plan.queues.values()) | {"default"} <= queues
    api = services["airflow-apiserver"]
    assert api["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert {v.split(":")[1] for v in api["volumes"]} >= {
        "/opt/airflow/dags",
        "/opt/airflow/plugins",
        "/opt/airflow/include",
    }
    assert "pools" in " ".join(services["airflow-init"]["command"])
    assert (ROOT / "Dockerfile").read_text().splitlines()[2] == "FROM apache/airflow:3.3.2"


def test_a_broken_compose_file_is_refused(tmp_path):
    broken = (ROOT / "docker-compose.yaml").read_text().replace("    command: scheduler\n", "    comand: scheduler\n")
    (tmp_path / "docker-compose.yaml").write_text(broken)
    proc = compose("config", "-q", cwd=tmp_path)
    assert proc.returncode != 0 and "comand" in proc.stderr
