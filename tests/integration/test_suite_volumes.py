"""A pool's volumes for real on the local engine: a host folder named in the config
(pools.NAME.runner.volumes) reaches the test container read-only, through the plan, the
DAG's runner arguments and the Docker operator. A test reads a file from it and can't
write there; changing the file on the host fails the same image (a failure caused outside
the image, what the culprit finder must tell from a commit); a folder the engine's host
does not have is the runner's problem (infra), not the tests'."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.config import load_config
from include.nightly_ci.history.junit import junit_cases
from include.nightly_ci.names import LABEL_RUN_ID
from include.nightly_ci.plan import JUNIT_FILE, build_plan
from tests.services import ENGINE, ROOT, build_sample

pytestmark = pytest.mark.integration
RUN_ID = "manual__volumes"
MOUNTED = "/data/fixtures"
READS = "tests.unit.test_mounted::test_reads_the_mounted_file"
WRITES = "tests.unit.test_mounted::test_cannot_write_the_mounted_folder"
IDS = ["tests/unit/test_mounted.py::test_reads_the_mounted_file",
       "tests/unit/test_mounted.py::test_cannot_write_the_mounted_folder"]  # fmt: skip
TEST_MOUNTED = textwrap.dedent(
    f"""
    import errno
    import pathlib

    import pytest

    FIXTURES = pathlib.Path({MOUNTED!r})


    @pytest.mark.unit
    def test_reads_the_mounted_file():
        assert (FIXTURES / "expected.txt").read_text() == "the answer is 42\\n"


    @pytest.mark.unit
    def test_cannot_write_the_mounted_folder():
        with pytest.raises(OSError) as err:
            (FIXTURES / "written-by-a-test.txt").write_text("x")
        assert err.value.errno == errno.EROFS, err.value  # read-only, not merely not allowed
    """
)


@pytest.fixture(scope="module")
def engine(provisioned):
    client = docker.APIClient(base_url=ENGINE, timeout=600)
    yield client
    for c in client.containers(all=True, filters={"label": f"{LABEL_RUN_ID}={RUN_ID}"}):
        client.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module")
def pushed(engine, tmp_path_factory):
    """The sample image plus a test that reads a mounted file, in a registry with auth, by digest."""
    from tests.services import LocalRegistry

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (
            ("Dockerfile", f"FROM {build_sample('amd64')}\nCOPY test_mounted.py /workspace/tests/unit/\n"),
            ("test_mounted.py", TEST_MOUNTED),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    out = list(engine.build(fileobj=context, custom_context=True, tag="nightly-ci-test/mounted:latest", rm=True,
                            forcerm=True, decode=True))  # fmt: skip
    image = next(c["aux"]["ID"] for c in out if "aux" in c)
    reg = LocalRegistry(tmp_path_factory.mktemp("reg"))
    reg.start()
    auth = {"username": reg.user, "password": reg.password}
    engine.tag(image, f"{reg.host}/ai-dynamo/dynamo", tag="mounted")
    for _ in engine.push(f"{reg.host}/ai-dynamo/dynamo", tag="mounted", auth_config=auth, stream=True, decode=True):
        pass
    digest = engine.inspect_image(f"{reg.host}/ai-dynamo/dynamo:mounted")["RepoDigests"][0].split("@")[1]
    engine.remove_image(f"{reg.host}/ai-dynamo/dynamo:mounted")  # the task pulls it by digest
    yield SimpleNamespace(image=f"{reg.host}/ai-dynamo/dynamo@{digest}", registry=reg)
    reg.stop()


class _TI:
    try_number = 1

    def __init__(self, map_index: int) -> None:
        self.map_index = map_index

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _context(map_index: int) -> dict[str, Any]:
    return {
        "ti": _TI(map_index),
        "dag_run": SimpleNamespace(run_id=RUN_ID),
        "params": {"frameworks": ["vllm"], "arches": ["amd64"]},
    }


def _local(pushed, tmp_path: Path, monkeypatch, folder: Path) -> SimpleNamespace:
    """The local plan, its GPU pool (vllm amd64's tests) mounting FOLDER at MOUNTED."""
    from dataclasses import replace

    for key, value in pushed.registry.conn_env("nightly_ci_ecr").items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "volumes.yaml"
    config.write_text(
        f"extends: {ROOT / 'dev' / 'local.yaml'}\n"
        f"pools:\n  gpu-l40-amd64:\n    runner: {{volumes: {{{folder}: {MOUNTED}}}}}\n"
    )
    plan = build_plan(load_config(config))
    plan = replace(plan, store=ArtifactStore(str(tmp_path / "artifacts"), None))
    return SimpleNamespace(plan=plan, cell=plan.cell("vllm", "amd64"), root=tmp_path / "artifacts")


def _rerun(local: SimpleNamespace, image: str, attempt: int) -> Any:
    """The cell's rerun task as the DAG makes it (its runner's arguments), for IDS in IMAGE."""
    from airflow.sdk import DAG

    from include.nightly_ci.dag import rerun_task

    with DAG("nightly_ci", schedule=None):
        mapped = rerun_task(local.plan, local.cell, local.cell.reruns, [])
    item = {"suite": "unit", "attempt": attempt, "image": image, "tests": IDS, "gpus": 0, "timeout_minutes": 5}
    return mapped.unmap(item)


def test_a_test_reads_a_mounted_host_folder_and_cannot_write_to_it(engine, pushed, tmp_path, monkeypatch):
    folder = tmp_path / "fixtures"
    folder.mkdir()
    (folder / "expected.txt").write_text("the answer is 42\n")
    local = _local(pushed, tmp_path, monkeypatch, folder)
    reruns = local.cell.reruns

    def cases(attempt: int) -> dict[str, str]:
        op = _rerun(local, pushed.image, attempt)
        assert op.volumes == {str(folder): MOUNTED}
        op.execute(_context(attempt - 1))  # tests failing in a rerun are an observation, not a failed task
        return junit_cases((local.root / reruns.artifact_key(RUN_ID, "unit", attempt, JUNIT_FILE)).read_text())

    assert cases(1) == {READS: "passed", WRITES: "passed"}
    assert sorted(p.name for p in folder.iterdir()) == ["expected.txt"]  # nothing written through the mount
    # The same image, a different file on the host: the test fails, with no commit involved.
    (folder / "expected.txt").write_text("the answer is 41\n")
    assert cases(2) == {READS: "failed", WRITES: "passed"}
    assert engine.containers(all=True, filters={"label": f"{LABEL_RUN_ID}={RUN_ID}"}) == []


def test_a_host_folder_the_engine_does_not_have_is_an_infra_failure(engine, pushed, tmp_path, monkeypatch):
    from include.nightly_ci.errors import EngineConfigError
    from include.nightly_ci.records import INFRA, classify_failure

    absent = tmp_path / "not-there"
    local = _local(pushed, tmp_path, monkeypatch, absent)
    with pytest.raises(EngineConfigError) as err:
        _rerun(local, pushed.image, 1).execute(_context(0))
    assert f"{absent} (mounted at {MOUNTED})" in str(err.value) and "runner.volumes" in str(err.value)
    assert classify_failure("rerun", type(err.value).__name__, str(err.value), "error") == INFRA
    assert not absent.exists()  # the engine made no empty folder in its place
    assert engine.containers(all=True, filters={"label": f"{LABEL_RUN_ID}={RUN_ID}"}) == []
