"""Build secrets come from an Airflow connection, reach the step that mounts them, and
never leave the build: not in a layer, the history, the image config or its labels, the
build log, the metrics, XCom or the task log. A wrong source fails the build at once,
naming the connection and never a value."""

from __future__ import annotations

import gzip
import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime

import docker
import pytest

from dev.sample_repo import make_repo, nightly_history
from include.nightly_ci.names import tag_safe_run_id
from tests.services import (
    AMD64_BASES,
    LocalRegistry,
    airflow_env,
    empty_engine_of_its_own,
    run_dag,
    run_id_of,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"
ONE_CELL = {"frameworks": ["vllm"], "arches": ["amd64"], "publish": True}  # a night: moves the moving tags


@pytest.fixture(scope="module")
def builder(provisioned):
    """The nights' engine: one of the module's own with only the base images and no build
    cache, so that the secrets' step really runs (see empty_engine_of_its_own)."""
    with empty_engine_of_its_own("secrets", *AMD64_BASES) as engine:
        yield engine


@pytest.fixture(scope="module")
def stack(tmp_path_factory, builder, airflow_home):
    root = tmp_path_factory.mktemp("secrets")
    ecr, acr = LocalRegistry(root / "ecr"), LocalRegistry(root / "acr")
    ecr.start()
    acr.start()
    repo = root / "sample.git"
    make_repo(repo, nightly_history(1, datetime.now(UTC)))
    key, value = f"AKIA{secrets.token_hex(8).upper()}", f"sk-{secrets.token_urlsafe(24)}"
    env = {
        **ecr.conn_env("s_ecr"),
        **acr.conn_env("s_acr", "azure_container_registry"),
        "AIRFLOW_CONN_S_SCCACHE": json.dumps({"conn_type": "aws", "login": key, "password": value}),
        "DOCKER_HOST": builder.url,  # builds and suites: its engine
    }
    yield root, ecr, repo, env, (key, value)
    ecr.stop()
    acr.stop()


def config(root, repo, secrets_yaml: str, name: str):
    return write_config(
        root / f"{name}.yaml",
        f"source: {{repository: {repo}}}\n"
        "registries:\n  ecr: {conn_id: s_ecr}\n  acr: {conn_id: s_acr}\n"
        f"artifacts: {{base: {root / 'artifacts'}}}\n"
        f"build:\n  secrets: !replace\n{secrets_yaml}",
    )


GOOD = "    aws-key-id: {conn_id: s_sccache, field: login}\n    aws-secret-id: {conn_id: s_sccache, field: password}\n"


@pytest.fixture(scope="module")
def night(stack):
    root, _, repo, env, _ = stack
    proc = run_dag(config(root, repo, GOOD, "good"), conf=ONE_CELL, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc, run_id_of(proc.stdout)


def registry_bytes(ecr: LocalRegistry, tag: str) -> bytes:
    """Every byte of the image TAG as the registry holds it: manifest, config, each layer unpacked."""
    client = ecr.client()
    manifest = client.manifest(REPO, tag)
    out = [manifest.body]
    for digest, _ in manifest.blobs():
        blob = client.request("GET", f"{REPO}/blobs/{digest}").content
        out.append(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)
    return b"".join(out)


def test_the_secret_reached_its_step_and_left_no_trace(stack, night):
    root, ecr, _, env, (key, value) = stack
    proc, run_id = night
    run_tag = f"nightly-vllm-amd64-run-{tag_safe_run_id(run_id)}"
    cell = root / "artifacts" / tag_safe_run_id(run_id) / "vllm_amd64"
    framework_image = json.loads((cell / "build" / "metrics-framework.json").read_text())["image_id"]
    engine = docker.APIClient(base_url=env["DOCKER_HOST"])
    # It was there: the wheel step, which mounts both secrets, took the S3 cache path.
    runtime = engine.create_container(
        json.loads((cell / "build" / "metrics-runtime.json").read_text())["image_id"],
        ["cat", "/opt/wheels/build-info"],
        host_config=engine.create_host_config(network_mode="none"),
    )
    engine.start(runtime)
    engine.wait(runtime, timeout=60)
    assert "sccache=s3" in engine.logs(runtime).decode()
    engine.remove_container(runtime, force=True)
    # And it is nowhere else.
    places = {
        "layers, config and labels in the registry": registry_bytes(ecr, run_tag)
        + registry_bytes(ecr, "main-vllm-framework-amd64"),
        "docker history": json.dumps(engine.history(framework_image)).encode(),
        "docker inspect": json.dumps(engine.inspect_image(framework_image)).encode(),
        "build logs and metrics": b"".join(p.read_bytes() for p in (cell / "build").iterdir()),
        "every artifact of the run": b"".join(p.read_bytes() for p in cell.parent.rglob("*") if p.is_file()),
        "the task logs": proc.stdout.encode(),
        "XCom": xcom_of(run_id, env).encode(),
    }
    for where, data in places.items():
        assert key.encode() not in data and value.encode() not in data, f"a build secret is in {where}"
    assert len(places["XCom"]) > 1000  # the XComs were really read


def xcom_of(run_id: str, env: dict[str, str]) -> str:
    """Every XCom value of the run, as stored."""
    code = (
        "import sys\nfrom airflow.models.xcom import XComModel\nfrom airflow.utils.session import create_session\n"
        "with create_session() as s:\n"
        f"    rows = s.query(XComModel).filter(XComModel.run_id == {run_id!r}).all()\n"
        "    print('\\n'.join(f'{r.task_id} {r.key} {r.value}' for r in rows))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=airflow_env(env), capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{conn_id: s_missing, field: password}", "Airflow connection 's_missing' does not exist"),
        ("{conn_id: s_sccache, field: extra.region}", "connection 's_sccache' has no extra.region"),
    ],
)
def test_a_wrong_secret_source_fails_the_build_naming_the_connection_not_a_value(stack, source, says):
    root, _, repo, env, (key, value) = stack
    bad = config(root, repo, f"    aws-key-id: {source}\n", f"bad-{source.split(',')[1].strip()[7:-1]}")
    proc = run_dag(bad, conf=ONE_CELL, env=env)
    assert proc.returncode != 0
    assert f"build secret 'aws-key-id': {says}" in proc.stdout
    assert key not in proc.stdout and value not in proc.stdout
    # A permanent error: failed at once, not retried.
    assert "Retry policy decision" in proc.stdout and 'reason="a permanent error' in proc.stdout
