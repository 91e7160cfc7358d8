"""The test stage without services: commands, outcomes, JUnit and collect counts from real
pytest runs, Docker device requests, the pod a KubernetesPodOperator would create."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from include.nightly_ci.plan import load_plan, pytest_command
from include.nightly_ci.suites.run import (
    COLLECTED,
    COLLECTION_ERROR,
    ERROR,
    FAILED,
    NO_TESTS,
    PASSED,
    TIMEOUT,
    collected_count,
    host_config,
    junit_counts,
    outcome_of,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "config" / "nightly_ci.yaml"
PROJECT = textwrap.dedent(
    """
    import pytest

    @pytest.mark.unit
    def test_ok(): pass

    @pytest.mark.unit
    def test_bad(): assert 0

    @pytest.mark.unit
    @pytest.mark.skip(reason="not today")
    def test_skipped(): pass

    @pytest.mark.unit
    def test_error(broken): pass

    @pytest.fixture
    def broken(): raise RuntimeError("fixture")

    @pytest.mark.e2e
    def test_other(): pass
    """
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("proj")
    (folder / "test_sample.py").write_text(PROJECT)
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    unit\n    e2e\n")
    return folder


def pytest_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=folder, capture_output=True, text=True)


def test_run_command_is_the_originals_line():
    assert pytest_command("unit and nightly", "run", "/workspace/test-results") == (
        "pytest", "--continue-on-collection-errors", "-v", "--tb=short", "--basetemp=/tmp",
        "-o", "cache_dir=/tmp/.pytest_cache", "--junitxml=/workspace/test-results/pytest_test_report.xml",
        "--durations=10", "-m", "unit and nightly",
    )  # fmt: skip
    assert pytest_command("unit", "collect", "/r") == ("pytest", "-v", "--collect-only", "-m", "unit")


def test_rendered_commands_per_suite_and_arch():
    plan = load_plan(str(SHIPPED))
    amd = {j.suite: j for j in plan.cell("sglang", "amd64").tests}
    arm = {j.suite: j for j in plan.cell("sglang", "arm64").tests}
    assert amd["e2e_1gpu"].command[-2:] == ("-m", "sglang and e2e and gpu_1")
    assert "--junitxml=/workspace/test-results/pytest_test_report.xml" in amd["unit"].command
    assert arm["e2e_2gpu"].command == (
        "pytest", "-v", "--collect-only", "-m", "(nightly or post_merge or pre_merge) and e2e and gpu_2",
    )  # fmt: skip


def test_junit_counts_from_a_real_pytest_run(project, tmp_path):
    junit = tmp_path / "r.xml"
    proc = pytest_in(project, f"--junitxml={junit}", "-m", "unit")
    assert proc.returncode == 1
    assert junit_counts(junit.read_text()) == {"tests": 4, "passed": 1, "failed": 1, "skipped": 1, "errors": 1}


def test_collected_counts_from_real_collect_only_runs(project):
    selected = pytest_in(project, "-v", "--collect-only", "-m", "unit")
    assert selected.returncode == 0 and collected_count(selected.stdout) == 4
    one = pytest_in(project, "-v", "--collect-only", "-m", "e2e")
    assert collected_count(one.stdout) == 1
    none = pytest_in(project, "-v", "--collect-only", "-m", "gpu_2")
    assert none.returncode == 5 and collected_count(none.stdout) == 0


@pytest.mark.parametrize(
    ("mode", "code", "timed_out", "collected", "outcome"),
    [
        ("run", 0, False, 0, PASSED),
        ("run", 1, False, 0, FAILED),
        ("run", 5, False, 0, NO_TESTS),
        ("run", 2, False, 0, ERROR),
        ("run", None, True, 0, TIMEOUT),
        ("collect", 0, False, 3, COLLECTED),
        ("collect", 5, False, 0, NO_TESTS),
        ("collect", 0, False, 0, NO_TESTS),
        ("collect", 2, False, 1, COLLECTION_ERROR),
        ("collect", None, True, 0, TIMEOUT),
    ],
)
def test_outcomes(mode, code, timed_out, collected, outcome):
    assert outcome_of(mode, code, timed_out, collected) == outcome


def test_docker_gpu_request_cpu_and_memory_limits():
    import docker

    client = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")  # no connection is made
    config = host_config(client, gpus=2, cpus=10, memory="48g", network_mode="host")
    assert config["DeviceRequests"] == [
        {"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert config["NanoCpus"] == 10_000_000_000
    assert config["Memory"] == 48 * 1024**3
    assert "DeviceRequests" not in host_config(client, gpus=0, cpus=None, memory=None, network_mode=None)


def test_the_pod_a_kubernetes_test_task_creates(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_GPU", '{"conn_type": "kubernetes"}')
    dag = DagBag(str(ROOT / "dags")).dags["nightly_ci"]
    task = dag.task_dict["trtllm_amd64.tests.e2e_2gpu"]
    assert isinstance(task, KubernetesSuiteOperator)
    assert (task.pool, task.pool_slots) == ("gpu-l40-amd64", 2)
    kpo = task.pod_operator("ecr.example/ai-dynamo/dynamo@sha256:" + "a" * 64)
    pod = kpo.build_pod_request_obj(dry_run=True)
    container = pod.spec.containers[0]
    assert container.image.endswith("@sha256:" + "a" * 64)
    assert container.resources.limits == {"nvidia.com/gpu": "2", "cpu": "10.0", "memory": "64Gi"}
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-L40"}
    assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert [s.name for s in pod.spec.image_pull_secrets] == ["ecr-pull"]
    assert pod.metadata.namespace == "nightly-ci"
    # Waiting for a GPU node is the startup timeout; the suite's own 150 min is separate.
    assert kpo.startup_timeout_seconds == 1800
    assert pod.spec.active_deadline_seconds == 150 * 60 + 300
    script = container.args[0]
    assert "timeout --signal=TERM --kill-after=30 9000s pytest --continue-on-collection-errors" in script
    assert "-m '(nightly or post_merge or pre_merge) and e2e and gpu_2'" in script
    unit_task = dag.task_dict["trtllm_amd64.tests.unit"]
    assert isinstance(unit_task, KubernetesSuiteOperator)
    unit = unit_task.pod_operator("img").build_pod_request_obj(dry_run=True)
    assert unit.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
