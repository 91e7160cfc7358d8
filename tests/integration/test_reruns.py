"""Flake reruns for real on the local engine: the sample image with its flaky marker,
pushed to a registry with auth and pulled by digest; a rerun runs only the given node ids
with its attempt in NIGHTLY_CI_RERUN and leaves its JUnit where the summary reads it; a
suite's own run sees NIGHTLY_CI_RERUN=0."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
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
RUN_ID = "manual__reruns"
FLAKY = "tests.unit.test_flaky::test_flaky_on_every_other_run"
SEES = "tests.unit.test_sees_run::test_sees_its_run"
SEES_RUN = textwrap.dedent(
    """
    import os

    import pytest


    @pytest.mark.unit
    @pytest.mark.nightly
    def test_sees_its_run():
        raise AssertionError("NIGHTLY_CI_RERUN=" + os.environ.get("NIGHTLY_CI_RERUN", "unset"))
    """
)


@pytest.fixture(scope="module")
def engine(provisioned):
    client = docker.APIClient(base_url=ENGINE, timeout=600)
    yield client
    for c in client.containers(all=True, filters={"label": f"{LABEL_RUN_ID}={RUN_ID}"}):
        client.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module")
def flaky_image(engine) -> str:
    """The sample image as a commit adding the flaky marker makes it, plus a test that
    fails saying which run of it this is."""
    base = build_sample("amd64")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (
            ("Dockerfile", f"FROM {base}\nCOPY flaky-marker test_sees_run.py /workspace/tests/unit/\n"),
            ("flaky-marker", "added by a commit\n"),
            ("test_sees_run.py", SEES_RUN),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    out = list(engine.build(fileobj=context, custom_context=True, tag="nightly-ci-test/flaky:latest", rm=True,
                            forcerm=True, decode=True))  # fmt: skip
    return next(c["aux"]["ID"] for c in out if "aux" in c)


@pytest.fixture(scope="module")
def pushed(engine, flaky_image, tmp_path_factory):
    """The flaky image in a registry with auth, by digest, and the registry's connection."""
    from tests.services import LocalRegistry

    reg = LocalRegistry(tmp_path_factory.mktemp("reg"))
    reg.start()
    auth = {"username": reg.user, "password": reg.password}
    engine.tag(flaky_image, f"{reg.host}/ai-dynamo/dynamo", tag="flaky")
    for _ in engine.push(f"{reg.host}/ai-dynamo/dynamo", tag="flaky", auth_config=auth, stream=True, decode=True):
        pass
    digest = engine.inspect_image(f"{reg.host}/ai-dynamo/dynamo:flaky")["RepoDigests"][0].split("@")[1]
    engine.remove_image(f"{reg.host}/ai-dynamo/dynamo:flaky")  # the rerun pulls it by digest
    yield SimpleNamespace(image=f"{reg.host}/ai-dynamo/dynamo@{digest}", registry=reg)
    reg.stop()


class _TI:
    try_number = 1

    def __init__(self, map_index: int) -> None:
        self.map_index = map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context(map_index: int = -1) -> dict[str, Any]:
    return {
        "ti": _TI(map_index),
        "dag_run": SimpleNamespace(run_id=RUN_ID),
        "params": {"frameworks": ["vllm"], "arches": ["amd64"]},
    }


@pytest.fixture
def local(pushed, tmp_path, monkeypatch):
    """The local plan with the test registry on the fixture's registry, and a folder store."""
    from dataclasses import replace

    for key, value in pushed.registry.conn_env("nightly_ci_ecr").items():
        monkeypatch.setenv(key, value)
    plan = build_plan(load_config(ROOT / "dev" / "local.yaml"))
    plan = replace(plan, store=ArtifactStore(str(tmp_path / "artifacts"), None))
    return SimpleNamespace(plan=plan, cell=plan.cell("vllm", "amd64"), root=tmp_path / "artifacts")


def test_a_rerun_runs_only_its_node_ids_in_the_exact_image_with_its_attempt(engine, pushed, local):
    from airflow.sdk import DAG

    from include.nightly_ci.dag import rerun_task

    reruns = local.cell.reruns
    with DAG("nightly_ci", schedule=None):
        mapped = rerun_task(local.plan, local.cell, reruns, [])
    ids = ["tests/unit/test_flaky.py::test_flaky_on_every_other_run", "tests/unit/test_sees_run.py::test_sees_its_run"]
    seen = {}
    for index, attempt in enumerate((1, 2)):
        item = {"suite": "unit", "attempt": attempt, "image": pushed.image, "tests": ids, "gpus": 0,
                "timeout_minutes": 5}  # fmt: skip
        op = mapped.unmap(item)
        result = op.execute(_context(index))  # tests failing in a rerun are an observation, not a failed task
        assert result["image"] == pushed.image
        junit = local.root / reruns.artifact_key(RUN_ID, "unit", attempt, JUNIT_FILE)
        output = local.root / reruns.artifact_key(RUN_ID, "unit", attempt, "output.log")
        seen[attempt] = junit_cases(junit.read_text())
        assert f"NIGHTLY_CI_RERUN={attempt}" in junit.read_text()
        assert "test_flaky_on_every_other_run" in output.read_text()
        record = json.loads((local.root / reruns.record_key(RUN_ID, index)).read_text())
        assert record["state"] == "success" and record["image"] == pushed.image and record["stage"] == "rerun"
    # Only the two ids ran (the image has 5 unit tests): the flaky one passes on odd attempts.
    assert seen == {1: {FLAKY: "passed", SEES: "failed"}, 2: {FLAKY: "failed", SEES: "failed"}}
    assert engine.containers(all=True, filters={"label": f"{LABEL_RUN_ID}={RUN_ID}"}) == []


def test_a_rerun_of_ids_that_do_not_exist_fails_saying_so(engine, pushed, local):
    from airflow.sdk import DAG

    from include.nightly_ci.dag import rerun_task
    from include.nightly_ci.suites.base import SuiteFailed

    with DAG("nightly_ci", schedule=None):
        mapped = rerun_task(local.plan, local.cell, local.cell.reruns, [])
    op = mapped.unmap({"suite": "unit", "attempt": 1, "image": pushed.image, "tests": ["tests/unit/test_gone.py::test_x"],
                       "gpus": 0, "timeout_minutes": 5})  # fmt: skip
    with pytest.raises(SuiteFailed, match="could not select the ids"):
        op.execute(_context(0))


def test_a_suites_own_run_sees_rerun_zero(engine, pushed, local):
    from include.nightly_ci.suites.docker import DockerSuiteOperator
    from include.nightly_ci.suites.run import FAILED

    job = next(j for j in local.cell.tests if j.suite == "unit")
    op = DockerSuiteOperator(
        spec=job.task,
        store=local.plan.store,
        framework="vllm",
        arch="amd64",
        suite="unit",
        image=pushed.image,
        command=job.command,
        mode="run",
        marker=job.marker,
        workdir="/workspace",
        junit_path=job.junit_path,
        timeout_minutes=5,
        gpus=0,
        docker_conn_id=None,
        registry=local.plan.registries["ecr"],
        platform="linux/amd64",
        backoff=local.plan.backoff,
        network_mode="none",
        startup_timeout_seconds=300,
    )
    from include.nightly_ci.suites.base import SuiteFailed

    with pytest.raises(SuiteFailed):
        op.execute(_context())
    junit = (local.root / job.task.artifact_key(RUN_ID, JUNIT_FILE)).read_text()
    assert "NIGHTLY_CI_RERUN=0" in junit
    cases = junit_cases(junit)
    assert cases[FLAKY] == "failed" and cases[SEES] == "failed"  # run 0 is even: the marker makes it fail
    assert op.record_extra()["outcome"] == FAILED


ZERO_DAG = '''
import os

from airflow.sdk import DAG, BaseOperator, Param, TriggerRule

from include.nightly_ci.config import load_config
from include.nightly_ci.dag import rerun_task
from include.nightly_ci.plan import build_plan
from include.nightly_ci.suites.reruns import FindRerunsOperator

plan = build_plan(load_config(os.environ["NIGHTLY_CI_CONFIG"]))
cell = plan.cell("vllm", "amd64")


class After(BaseOperator):
    """Stands for the summary: ALL_DONE after the reruns."""

    def __init__(self, **kwargs):
        super().__init__(trigger_rule=TriggerRule.ALL_DONE, **kwargs)

    def execute(self, context):
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[context["dag_run"].run_id])
        print("STATES " + repr(sorted(states[context["dag_run"].run_id].items())), flush=True)


with DAG("reruns_zero", schedule=None, params={"frameworks": Param(["vllm"]), "arches": Param(["amd64"])}):
    find = FindRerunsOperator(
        spec=cell.reruns.find_task, store=plan.store, reruns=cell.reruns, framework="vllm", arch="amd64",
        history_conn_id=None, attempts=3, max_cases=25,
    )
    find >> rerun_task(plan, cell, cell.reruns, find.output) >> After(task_id="after")
'''


def test_no_case_to_rerun_skips_the_mapped_task_and_the_run_stays_green(airflow_home, tmp_path):
    """Airflow 3.3 for real (`airflow dags test`): the find task returns no item (no suite
    left a JUnit), the mapped rerun is skipped, and what comes after (ALL_DONE) runs."""
    import subprocess
    import sys

    from tests.services import airflow_env, write_config

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "reruns_zero.py").write_text(ZERO_DAG)
    config = write_config(tmp_path / "c.yaml", f"artifacts: {{base: {tmp_path / 'artifacts'}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "reruns_zero"],
        env=airflow_env({"NIGHTLY_CI_CONFIG": str(config), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    states = next(line for line in proc.stdout.splitlines() if "STATES " in line)
    assert "('find', 'success')" in states and "('rerun', 'skipped')" in states, states
    assert "state=success" in next(line for line in proc.stdout.splitlines() if "DagRun Finished" in line)
