"""Shared fixtures. Services are real and started here (or by scripts/provision.sh, which
.ci/run calls first): the Docker engine, registries with htpasswd auth on loopback, moto."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Airflow reads its home and config when first imported: give the test session its own.
ROOT = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="nightly-ci-test-airflow-")
# Removed at exit: every session made one, and /tmp filled with them.
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
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


DEFAULT_SOCKET = "/var/run/docker.sock"


def _snapshot(client) -> dict:
    return {
        "images": sorted((i["Id"], tuple(sorted(i["RepoTags"] or []))) for i in client.images(all=True)),
        "containers": sorted((c["Id"], c["State"]) for c in client.containers(all=True)),
    }


@pytest.fixture(scope="session", autouse=True)
def an_unrelated_engine_stays_untouched():
    """The machine's own Docker engine (the default socket) is not the setup's: nothing in
    `make test` builds on it, runs in it, or empties it. If none runs, the session starts
    one with an image and two containers of its own, standing in for another project's."""
    import docker

    from tests.services import ScratchEngine, ensure_provisioned

    if os.geteuid() != 0:
        yield
        return
    started = None
    try:
        client = docker.APIClient(base_url=f"unix://{DEFAULT_SOCKET}", timeout=60)
    except docker.errors.DockerException:  # no engine there: start one for the session
        ensure_provisioned()
        started = ScratchEngine("unrelated", socket=DEFAULT_SOCKET)
        started.start()
        client = docker.APIClient(base_url=f"unix://{DEFAULT_SOCKET}", timeout=60)
        mine = docker.APIClient(base_url=os.environ["DOCKER_HOST"], timeout=300)
        started.load_from(mine, "nightly-ci-base:bookworm-amd64")
        client.tag("nightly-ci-base:bookworm-amd64", "another-project/app", tag="1")
        host = client.create_host_config(network_mode="none")
        for name, command in (("another-running", ["sleep", "3600"]), ("another-exited", ["true"])):
            container = client.create_container("another-project/app:1", command, name=name, host_config=host)
            client.start(container)
        client.wait("another-exited", timeout=60)
    before = _snapshot(client)
    try:
        yield
    finally:
        after = _snapshot(client)
        if started is not None:
            started.stop()
    assert after == before, "make test changed another engine's images or containers"


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
