"""docker-compose.yaml validates with Debian's docker-compose, has a worker for the queue
of every runner pool of the shipped config, and needs nothing its services would share on
one host's disk: a worker may run on any host from the image and the environment."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from include.nightly_ci.config import load_config
from include.nightly_ci.plan import load_plan
from tests.services import ROOT

pytestmark = pytest.mark.integration


# What an operator's .env gives (docs/operations.md).
# AIRFLOW_BASE_URL too: Slack links and the table point there, never at a default localhost (L4).
REQUIRED = {
    "FERNET_KEY": "k" * 44,
    "JWT_SECRET": "s" * 32,
    "DOCKER_GID": "105",
    "AIRFLOW_BASE_URL": "https://airflow.example.com",
}


def compose(*args: str, cwd=ROOT, env: dict[str, str] = REQUIRED) -> subprocess.CompletedProcess:
    assert shutil.which("docker-compose"), "docker-compose is installed by scripts/provision.sh"
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yaml", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**clean, **env},
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
    # Every queue a task of the shipped DAGs is sent to has a worker (a pool that only counts
    # slots, like the culprit finder's, sends its tasks to the queues of the cells' pools).
    from include.nightly_ci.culprit_dag import build_culprit_dag
    from include.nightly_ci.dag import build_dag
    from include.nightly_ci.retention.dag import build_retention_dag

    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    used = {t.queue for build in (build_dag, build_retention_dag, build_culprit_dag) for t in build(plan).tasks}
    assert {"default", "cpu-amd-m5-4xlarge", "cpu-arm-r8g-4xlarge", "gpu-l40-amd64"} <= used <= queues, (used, queues)
    api = services["airflow-apiserver"]
    assert api["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert {v.split(":")[1] for v in api["volumes"]} >= {
        "/opt/airflow/dags",
        "/opt/airflow/plugins",
        "/opt/airflow/include",
    }
    assert "pools" in " ".join(services["airflow-init"]["command"])
    assert "FROM apache/airflow:3.3.2" in (ROOT / "Dockerfile").read_text().splitlines()


def test_a_broken_compose_file_is_refused(tmp_path):
    broken = (ROOT / "docker-compose.yaml").read_text().replace("    command: scheduler\n", "    comand: scheduler\n")
    (tmp_path / "docker-compose.yaml").write_text(broken)
    proc = compose("config", "-q", cwd=tmp_path)
    assert proc.returncode != 0 and "comand" in proc.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_each_required_setting_is_asked_for_by_name(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    proc = compose("config", "-q", env=env)
    assert proc.returncode != 0
    assert f"set {missing} in .env" in proc.stderr


def test_the_services_share_nothing_on_disk_a_run_needs():
    services = yaml.safe_load(compose("config").stdout)["services"]
    airflow = {n: s for n, s in services.items() if n.startswith("airflow-")}
    for name, service in airflow.items():
        env = service["environment"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == REQUIRED["FERNET_KEY"], name
        assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "true", name
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://"), name
        targets = {v.split(":")[1] for v in service.get("volumes", [])}
        # Code (read-only, also in the image) and the engine's socket; no logs, no artifacts.
        assert targets <= {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include", "/var/run/docker.sock"}
        assert all(v.endswith(":ro") for v in service.get("volumes", []) if "docker.sock" not in v), name
        if "/var/run/docker.sock" in targets:
            assert service["group_add"] == [REQUIRED["DOCKER_GID"]], name
    config = airflow["airflow-worker-default"]["environment"]["NIGHTLY_CI_CONFIG"].removeprefix("/opt/airflow/")
    artifacts = load_config(ROOT / config).artifacts
    assert "://" in artifacts.base and not artifacts.base.startswith("file:") and not artifacts.single_host


def test_the_image_has_the_docker_cli_and_git_and_runs_as_airflow():
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.strip()]
    users = [i for i, ln in enumerate(lines) if ln.startswith("USER ")]
    install = next(i for i, ln in enumerate(lines) if "apt-get install" in ln)
    assert lines[users[0]] == "USER root" and users[0] < install < users[1]
    assert "docker.io" in lines[install] and "git" in lines[install].split()
    assert lines[users[-1]] == "USER airflow"
    copied = {ln.split()[-1] for ln in lines if ln.startswith("COPY")}
    assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= copied
