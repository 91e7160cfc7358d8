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
    # M3: Kubernetes counts the deadline from the kubelet's ack, before the image pull: the
    # backstop leaves the pull its startup budget, so a slow pull does not cut the suite.
    assert pod.spec.active_deadline_seconds == 150 * 60 + 1800 + 300
    # No XCom sidecar (an alpine image from Docker Hub): one container, results in its log.
    assert kpo.do_xcom_push is False and [c.name for c in pod.spec.containers] == ["base"]
    assert kpo.get_logs is True and kpo.callbacks  # streamed into the task log, and read back
    # M12: no service-account token for code from any git_ref; no network unless the pool says so.
    assert pod.spec.automount_service_account_token is False
    assert pod.metadata.labels["nightly-ci/network"] == "none"
    script = container.args[0]
    assert "timeout --signal=TERM --kill-after=30 9000s pytest --continue-on-collection-errors" in script
    assert "-m '(nightly or post_merge or pre_merge) and e2e and gpu_2'" in script
    assert "/tmp/pytest-output.log" not in script and "/airflow/xcom" not in script
    unit_task = dag.task_dict["trtllm_amd64.tests.unit"]
    assert isinstance(unit_task, KubernetesSuiteOperator)
    unit = unit_task.pod_operator("img").build_pod_request_obj(dry_run=True)
    assert unit.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"


def test_a_docker_suite_runs_under_its_own_timeout():
    """H7: the container ends itself at its deadline, whether or not a worker waits for it."""
    from include.nightly_ci.suites.run import suite_command

    assert suite_command(["pytest", "-m", "unit"], 2700) == [
        "timeout", "--signal=TERM", "--kill-after=30", "2700s", "pytest", "-m", "unit",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "elapsed", "fired"),
    [(124, 300, True), (137, 331, True), (137, 12, False), (1, 301, False), (0, 5, False), (None, 400, False)],
)
def test_only_the_suites_own_deadline_is_a_timeout(code, elapsed, fired):
    """137 is `timeout`'s KILL after its grace, or an OOM kill: only the clock tells them apart."""
    from include.nightly_ci.suites.run import deadline_fired

    assert deadline_fired(code, elapsed, 300) is fired


def test_the_task_timeout_leaves_the_suite_its_whole_time_after_the_pull(monkeypatch):
    """M2: the docker task's execution timeout is the pull's budget + the suite's timeout + grace."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag

    from include.nightly_ci.suites.base import GRACE

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_GPU", '{"conn_type": "kubernetes"}')
    dag = DagBag(str(ROOT / "dags")).dags["nightly_ci"]
    from include.nightly_ci.suites.docker import DockerSuiteOperator

    task = dag.task_dict["vllm_arm64.tests.unit"]
    assert isinstance(task, DockerSuiteOperator)
    assert task.execution_timeout == timedelta(minutes=45) + timedelta(seconds=1800) + GRACE
    assert task.network_mode == "none"  # the shipped arm64 pool says nothing: no network


def test_the_ecr_pull_secret_the_task_writes_before_its_pod():
    """M3: a fresh ECR token (12 h) as a docker-registry secret, written right before the pod."""
    import base64
    import json

    from include.nightly_ci.images.registries import RegistryAuth
    from include.nightly_ci.suites.kubernetes import pull_secret_body

    auth = RegistryAuth("ecr", "aws_default", "123456789012.dkr.ecr.us-east-1.amazonaws.com", "AWS", "tok3n")
    body = pull_secret_body("ecr-pull", auth)
    assert body["metadata"]["name"] == "ecr-pull" and body["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(body["data"][".dockerconfigjson"]))
    entry = config["auths"]["123456789012.dkr.ecr.us-east-1.amazonaws.com"]
    assert (entry["username"], entry["password"]) == ("AWS", "tok3n")
    assert base64.b64decode(entry["auth"]).decode() == "AWS:tok3n"


class _SecretsApi:
    """The two calls of the Kubernetes core API that refreshing a secret makes (no cluster here)."""

    def __init__(self, exists: bool):
        self.exists = exists
        self.calls: list[tuple[str, str, str]] = []

    def replace_namespaced_secret(self, name, namespace, body):
        from kubernetes.client.rest import ApiException

        self.calls.append(("replace", name, namespace))
        if not self.exists:
            raise ApiException(status=404, reason="Not Found")

    def create_namespaced_secret(self, namespace, body):
        self.calls.append(("create", body["metadata"]["name"], namespace))


@pytest.mark.parametrize(("exists", "calls"), [(True, ["replace"]), (False, ["replace", "create"])])
def test_the_pull_secret_is_replaced_or_created(exists, calls):
    from include.nightly_ci.images.registries import RegistryAuth
    from include.nightly_ci.suites.kubernetes import pull_secret_body, refresh_pull_secret

    api = _SecretsApi(exists)
    refresh_pull_secret(api, "nightly-ci", pull_secret_body("ecr-pull", RegistryAuth("e", "c", "h", "AWS", "t")))
    assert [c[0] for c in api.calls] == calls and {c[1:] for c in api.calls} == {("ecr-pull", "nightly-ci")}


def test_a_network_mode_needs_the_pool_to_allow_a_network(tmp_path):
    from include.nightly_ci.config import load_config
    from include.nightly_ci.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text(
        f"extends: {ROOT / 'dev' / 'local.yaml'}\n"
        "pools:\n  gpu-l40-amd64:\n    runner: !replace {backend: docker, network_mode: host}\n"
    )
    with pytest.raises(ConfigError, match=r"pools.gpu-l40-amd64.runner.*network_mode 'host' needs network: true"):
        load_config(config)


# ---------------------------------------------------------------- host folders mounted read-only

VOLUMES = (
    "pools:\n"
    "  cpu-arm-r8g-4xlarge:\n    runner: {volumes: {/srv/hf-cache/hub: /root/.cache/huggingface/hub}}\n"
    "  gpu-l40-amd64:\n    runner: {volumes: {/mnt/models/hub: /models/hub, /srv/fixtures: /data/fixtures}}\n"
)


def _dag_with_volumes(monkeypatch, tmp_path):
    from include.nightly_ci.dag import build_dag

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_GPU", '{"conn_type": "kubernetes"}')
    config = tmp_path / "volumes.yaml"
    config.write_text(f"extends: {SHIPPED}\n{VOLUMES}")
    return build_dag(load_plan(str(config)))


def test_docker_mounts_the_host_folders_read_only():
    import docker

    client = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")  # no connection is made
    config = host_config(
        client, gpus=0, cpus=None, memory=None, network_mode="none", volumes={"/srv/hf-cache/hub": "/models/hub"}
    )
    # A bind mount, not a `Binds` entry: the engine refuses a host folder that is not there
    # instead of making an empty one, so a missing cache fails loudly.
    assert config["Mounts"] == [
        {"Source": "/srv/hf-cache/hub", "Target": "/models/hub", "Type": "bind", "ReadOnly": True}
    ]
    assert "Mounts" not in host_config(client, gpus=0, cpus=None, memory=None, network_mode=None)


def test_the_pod_mounts_the_pools_host_folders_read_only(monkeypatch, tmp_path):
    from include.nightly_ci.suites.docker import DockerSuiteOperator
    from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator

    dag = _dag_with_volumes(monkeypatch, tmp_path)
    task = dag.task_dict["trtllm_amd64.tests.e2e_2gpu"]
    assert isinstance(task, KubernetesSuiteOperator)
    assert task.volumes == {"/mnt/models/hub": "/models/hub", "/srv/fixtures": "/data/fixtures"}
    pod = task.pod_operator("img").build_pod_request_obj(dry_run=True)
    volumes = {v.name: v for v in pod.spec.volumes}
    mounts = {m.name: m for m in pod.spec.containers[0].volume_mounts}
    assert set(volumes) == set(mounts) and len(volumes) == 2
    mounted = {
        (volumes[n].host_path.path, volumes[n].host_path.type, m.mount_path, m.read_only) for n, m in mounts.items()
    }
    assert mounted == {
        ("/mnt/models/hub", "Directory", "/models/hub", True),  # Directory: a folder missing on the node fails the pod
        ("/srv/fixtures", "Directory", "/data/fixtures", True),
    }
    # The suites of the pool without volumes (and the shipped config) mount nothing.
    docker_task = dag.task_dict["vllm_arm64.tests.unit"]
    assert isinstance(docker_task, DockerSuiteOperator)
    assert docker_task.volumes == {"/srv/hf-cache/hub": "/root/.cache/huggingface/hub"}
    # The flake reruns of a cell run on its runner: the same folders.
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    rerun = dag.task_dict["trtllm_amd64.reruns.rerun"]
    assert isinstance(rerun, MappedOperator) and rerun.partial_kwargs["volumes"] == task.volumes
    # So do the culprit finder's runs of a failing test on each candidate's image.
    from include.nightly_ci.culprit_dag import build_culprit_dag

    culprit = build_culprit_dag(load_plan(str(tmp_path / "volumes.yaml")))
    mounting = {
        t.task_id: t.partial_kwargs["volumes"]
        for t in culprit.tasks
        if isinstance(t, MappedOperator) and "volumes" in t.partial_kwargs
    }
    assert mounting and all(v == task.volumes for v in mounting.values()), mounting


def test_a_pool_without_volumes_mounts_nothing(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from include.nightly_ci.suites.docker import DockerSuiteOperator
    from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_GPU", '{"conn_type": "kubernetes"}')
    dag = DagBag(str(ROOT / "dags")).dags["nightly_ci"]
    task = dag.task_dict["trtllm_amd64.tests.e2e_2gpu"]
    assert isinstance(task, KubernetesSuiteOperator) and task.volumes == {}
    pod = task.pod_operator("img").build_pod_request_obj(dry_run=True)
    assert not pod.spec.volumes and not pod.spec.containers[0].volume_mounts
    docker_task = dag.task_dict["vllm_arm64.tests.unit"]
    assert isinstance(docker_task, DockerSuiteOperator) and docker_task.volumes == {}
