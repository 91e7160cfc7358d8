"""Shared fixtures. Services are real and started here (or by scripts/provision.sh, which
.ci/run calls first): the Docker engine, registries with htpasswd auth on loopback, moto."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Airflow reads its home and config when first imported: give the test session its own.
ROOT = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="nightly-ci-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ.pop("NIGHTLY_CI_CONFIG", None)

import pytest  # noqa: E402

from tests.services import (  # noqa: E402
    LocalRegistry,
    airflow_db,
    ensure_provisioned,
    free_port,
    run_dag,
)

__all__ = ["ROOT", "LocalRegistry", "free_port", "run_dag"]


@pytest.fixture(scope="session")
def provisioned() -> None:
    """Docker engine, qemu and base images (scripts/provision.sh; a no-op when present)."""
    ensure_provisioned()


@pytest.fixture
def registries(tmp_path, provisioned):
    """Factory of registries with htpasswd auth on free loopback ports, stopped after the test."""
    started: list[LocalRegistry] = []

    def make(name: str = "reg", user: str = "ci", password: str | None = None) -> LocalRegistry:
        reg = LocalRegistry(tmp_path / f"registry-{name}-{len(started)}", user=user, password=password)
        reg.start()
        started.append(reg)
        return reg

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture(scope="session")
def airflow_home(provisioned) -> str:
    airflow_db()
    return os.environ["AIRFLOW_HOME"]
