"""The local setup's own commands: pools from the config, builder engines from
connections, and provisioning refusing clearly when it can't install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.services import DOCKER_SOCK, ROOT, airflow_env

pytestmark = pytest.mark.integration


def test_pools_are_created_from_the_config_and_updated_on_rerun(airflow_home, tmp_path):
    def pools_cmd(config):
        return subprocess.run(
            [sys.executable, "-m", "include.nightly_ci", "pools", str(config)],
            env=airflow_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    shipped = ROOT / "include" / "config" / "nightly_ci.yaml"
    out = pools_cmd(shipped)
    assert "cpu-amd-m5-4xlarge" in out and "gpu-l40-amd64" in out
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "airflow", "pools", "list", "-o", "json"],
            env=airflow_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    slots = {p["pool"]: int(p["slots"]) for p in listed}
    assert slots["cpu-amd-m5-4xlarge"] == 4 and slots["cpu-arm-r8g-4xlarge"] == 4 and slots["gpu-l40-amd64"] == 8
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(f"extends: {shipped}\npools:\n  gpu-l40-amd64: {{slots: 16}}\n")
    assert "gpu-l40-amd64: slots 8 -> 16" in pools_cmd(bigger)
    assert "(unchanged)" in pools_cmd(bigger)


def test_builder_engine_from_a_connection(monkeypatch, provisioned):
    from include.nightly_ci.images.engine import engine_client

    monkeypatch.setenv(
        "AIRFLOW_CONN_BUILDER_ARM64", json.dumps({"conn_type": "docker", "host": f"unix://{DOCKER_SOCK}"})
    )
    assert engine_client("builder_arm64").ping()
    assert engine_client(None).ping()  # the local engine by default


def test_an_unreachable_builder_fails_clearly(monkeypatch):
    from include.nightly_ci.images.engine import engine_client

    monkeypatch.setenv(
        "AIRFLOW_CONN_BUILDER_GONE", json.dumps({"conn_type": "docker", "host": "unix:///nonexistent.sock"})
    )
    with pytest.raises(Exception, match="Failed to establish connection to any given Docker hosts"):
        engine_client("builder_gone")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_provision_without_docker_and_without_root_says_what_to_install():
    import tempfile
    from pathlib import Path

    state = Path(tempfile.mkdtemp(prefix="nightly-ci-nobody-"))
    shutil.chown(state, "nobody")
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "bash",
            str(ROOT / "scripts" / "provision.sh"),
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(state),
            "NIGHTLY_CI_STATE": str(state),
            "DOCKER_HOST": "unix:///nonexistent.sock",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "ERROR" in proc.stderr
    assert "install it as root" in proc.stderr or "start Docker" in proc.stderr, proc.stderr
    shutil.rmtree(state)
