"""The registry is the only handoff between tasks: a cell is built on one engine (host A),
host A is then destroyed, and its push tasks and a test suite re-run against another
engine (host B, emptied too) and succeed on the very digest the build pushed."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import docker
import pytest

from dev.sample_repo import make_repo, nightly_history
from include.nightly_ci.names import tag_safe_run_id
from tests.services import (
    ENGINE,
    LocalRegistry,
    ScratchEngine,
    airflow_command,
    airflow_env,
    present,
    run_dag,
    run_id_of,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"
CELL = "vllm_amd64"


@pytest.fixture
def hosts(provisioned):
    a, b = ScratchEngine("a"), ScratchEngine("b")
    try:
        a.start()
        b.start()
        main = docker.APIClient(base_url=ENGINE)
        a.load_from(main, "nightly-ci-base:bookworm-amd64", "nightly-ci-runtime:bookworm-amd64")
        yield a, b
    finally:
        a.stop()
        b.stop()


def rerun(task_id: str, run_id: str, config, env) -> subprocess.CompletedProcess:
    argv = ["tasks", "test", "nightly_ci", f"{CELL}.{task_id}", run_id]
    return airflow_command(argv, airflow_env({"NIGHTLY_CI_CONFIG": str(config), **env}), timeout=300)


def test_pushes_and_tests_rerun_on_another_host_after_the_builder_is_gone(hosts, tmp_path, airflow_home):
    a, b = hosts
    ecr, acr = LocalRegistry(tmp_path / "ecr"), LocalRegistry(tmp_path / "acr")
    ecr.start()
    acr.start()
    try:
        repo = tmp_path / "sample.git"
        make_repo(repo, nightly_history(1, datetime.now(UTC)))
        config = write_config(
            tmp_path / "two-hosts.yaml",
            f"source: {{repository: {repo}}}\n"
            "registries:\n  ecr: {conn_id: h_ecr}\n  acr: {conn_id: h_acr}\n"
            "arches:\n  amd64:\n    builder: {conn_id: host_a}\n"
            "pools:\n  gpu-l40-amd64:\n    runner: !replace {backend: docker, conn_id: host_b, gpus: false, network_mode: none}\n"
            f"artifacts: {{base: {tmp_path / 'artifacts'}}}\n",
        )
        env = {
            **ecr.conn_env("h_ecr"),
            **acr.conn_env("h_acr", "azure_container_registry"),
            **a.conn_env("host_a"),
            **b.conn_env("host_b"),
        }
        proc = run_dag(config, conf={"frameworks": ["vllm"], "arches": ["amd64"], "publish": True}, env=env)
        assert proc.returncode == 0, proc.stdout[-5000:]
        run_id = run_id_of(proc.stdout)
        cell = tmp_path / "artifacts" / tag_safe_run_id(run_id) / CELL
        built = json.loads((cell / "build" / "metrics-runtime.json").read_text())["pushed"]
        assert built.startswith(f"{ecr.host}/{REPO}@sha256:")
        assert not any("nightly-ci/vllm-amd64" in str(i["RepoTags"]) for i in b.client().images())  # built on A only

        # Host A goes away with everything it built; host B forgets what it pulled.
        a.stop()
        for image in b.client().images():
            b.client().remove_image(image["Id"], force=True)

        for task in ("push_framework_ecr", "push_runtime_ecr", "push_runtime_acr", "tests.unit"):
            again = rerun(task, run_id, config, env)
            assert again.returncode == 0, f"{task}:\n{again.stdout[-4000:]}"
        digest = built.split("@", 1)[1]
        run_tag = f"nightly-vllm-amd64-run-{tag_safe_run_id(run_id)}"
        assert present(ecr.client().image(REPO, run_tag)).digest == digest
        assert present(acr.client().image(REPO, run_tag)).digest == digest
        record = json.loads((cell / "test-unit" / "record.json").read_text())
        assert record["outcome"] == "passed" and record["image"] == built  # the same bits, pulled by digest on B
        assert any(digest in d for i in b.client().images() for d in i["RepoDigests"] or [])
    finally:
        ecr.stop()
        acr.stop()
