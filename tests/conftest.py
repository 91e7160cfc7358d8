"""Shared fixtures. Services are real and started here (or by scripts/provision.sh, which
.ci/run calls first): the Docker engine, registries with htpasswd auth on loopback, moto."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
    ScratchEngine,
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


class UnrelatedEngine:
    """The machine's own Docker engine (the default socket) is not the setup's: nothing in
    `make test` builds on it, runs in it, or empties it. If none runs, the session starts
    one with an image and two containers of its own, standing in for another project's.

    A plugin of the controlling process (the only process of a run without workers, the
    controller of pytest-xdist's workers otherwise): one engine on the one default socket,
    looked at before the first test starts and after the last one ends, wherever they ran."""

    def __init__(self) -> None:
        self.client: Any = None
        self.started: ScratchEngine | None = None
        self.before: dict = {}

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        import docker

        try:
            self.client = docker.APIClient(base_url=f"unix://{DEFAULT_SOCKET}", timeout=60)
        except docker.errors.DockerException:  # no engine there: start one for the session
            ensure_provisioned()
            self.started = started = ScratchEngine("unrelated", socket=DEFAULT_SOCKET)
            started.start()
            self.client = client = docker.APIClient(base_url=f"unix://{DEFAULT_SOCKET}", timeout=60)
            mine = docker.APIClient(base_url=os.environ["DOCKER_HOST"], timeout=300)
            started.load_from(mine, "nightly-ci-base:bookworm-amd64")
            client.tag("nightly-ci-base:bookworm-amd64", "another-project/app", tag="1")
            host = client.create_host_config(network_mode="none")
            for name, command in (("another-running", ["sleep", "3600"]), ("another-exited", ["true"])):
                client.start(client.create_container("another-project/app:1", command, name=name, host_config=host))
            client.wait("another-exited", timeout=60)
        self.before = _snapshot(self.client)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.client is None:
            return
        after = _snapshot(self.client)
        if self.started is not None:
            self.started.stop()
        if after != self.before:
            session.config.get_terminal_writer().line(
                f"make test changed another engine's images or containers (before: {self.before}, after: {after})",
                red=True,
            )
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def only_unit_tests(config: pytest.Config) -> bool:
    """Whether the session runs unit tests only (`make check`): no engine is used."""
    unit = ROOT / "tests" / "unit"
    return all(
        (Path(config.invocation_params.dir) / a.split("::")[0]).resolve().is_relative_to(unit) for a in config.args
    )


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() == 0 and not hasattr(config, "workerinput") and not only_unit_tests(config):
        config.pluginmanager.register(UnrelatedEngine(), "nightly-ci-unrelated-engine")  # the controlling process


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


# pytest-xdist: `make test` runs the tests on several workers. Tests of one group run on
# one worker, one after another; a module is a group of its own unless it is named here
# with the others it shares something with.
GROUPS = {
    # The clone's .local/ (the demo's Airflow home, artifacts and history), the setup's
    # registries' moving tags the demo asserts on, provision.sh on the setup's state.
    "local-setup": ("tests/e2e/test_demo.py", "tests/e2e/test_up.py", "tests/integration/test_local_setup.py"),
    # A fault stand (a session fixture: servers, proxies, a first night every fault test
    # checks) in each worker that runs fault tests; the tests that share its waited_out
    # night in one group.
    "faults-registries-store-slack": (
        "tests/faults/test_source_registry.py",
        "tests/faults/test_store_slack_results.py",
        "tests/faults/test_config_race.py",
    ),
    # One api-server with the plugin and its filled history store (test_triage_page.airflow).
    "triage": ("tests/integration/test_triage_page.py", "tests/integration/test_triage_findings.py"),
}
WEIGHTS = {"system": 1000, "faults": 500, "e2e": 300, "slow": 100, "integration": 10}  # a rough test's seconds


def group_of(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    for group, paths in GROUPS.items():
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in paths):
            return group
    return path


def weight(item: pytest.Item) -> int:
    return sum(w for name, w in WEIGHTS.items() if item.get_closest_marker(name)) or 1


@pytest.hookimpl(trylast=True)  # after --random-order's shuffle, which this keeps within each group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The groups in order of their expected time, longest first, so that the last group a
    worker starts is a short one (each group keeps its tests' order)."""
    totals: dict[str, int] = {}
    for item in items:
        totals[group_of(item.nodeid)] = totals.get(group_of(item.nodeid), 0) + weight(item)
    items.sort(key=lambda item: -totals[group_of(item.nodeid)])


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pytest-xdist's scheduling by scope, the scope being the group (group_of). Its own
    grouping (--dist loadgroup and xdist_group marks) renames the tests' node ids, which
    pytest 9.2's items no longer allow: with it every test is a group of its own."""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)
