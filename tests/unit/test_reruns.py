"""Flake reruns without services: the plan's rerun tasks and their names, JUnit ids as
pytest node ids, the find task on a real artifact folder and a real SQLite history (or
none), the pods a rerun and a suite create, and the sample project's flaky test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from include.nightly_ci.artifacts import ArtifactStore
from include.nightly_ci.config import load_config
from include.nightly_ci.names import RERUN, RERUN_ENV, run_kind
from include.nightly_ci.plan import JUNIT_FILE, build_plan, load_plan

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "config" / "nightly_ci.yaml"
LOCAL = ROOT / "dev" / "local.yaml"
NIGHT_1 = "scheduled__2026-11-01T08:00:00+00:00"
NIGHT_2 = "scheduled__2026-11-02T08:00:00+00:00"
IMAGE = "127.0.0.1:5000/ai-dynamo/dynamo@sha256:" + "a" * 64


# ---------------------------------------------------------------- the plan


def test_every_run_mode_cell_has_a_find_and_a_mapped_rerun_task_and_no_collect_cell_has():
    plan = load_plan(str(SHIPPED))
    for cell in plan.cells:
        if cell.arch == "arm64":  # collect only: nothing fails, nothing to rerun
            assert cell.reruns is None and list(cell.support_tasks()) == []
            continue
        r = cell.reruns
        assert r is not None
        fw = cell.framework
        assert (r.find_task.task_id, r.find_task.display_name) == (f"{fw}_amd64.reruns.find", f"{fw}-amd64-find-flakes")
        assert (r.rerun_task.task_id, r.rerun_task.display_name) == (f"{fw}_amd64.reruns.rerun", f"{fw}-amd64-rerun")
        assert r.find_task.stage == r.rerun_task.stage == RERUN
        # The find reads files and a database: the default pool and queue, never a GPU slot.
        assert (r.find_task.pool, r.find_task.queue) == (None, None)
        # A rerun runs where the suites ran; slots can't be mapped: the largest suite's GPUs.
        assert (r.rerun_task.pool, r.rerun_task.queue, r.rerun_task.pool_slots) == ("gpu-l40-amd64",) * 2 + (2,)
        assert [j.suite for j in r.jobs] == ["unit", "integration", "e2e_1gpu", "e2e_2gpu"]
        assert list(cell.support_tasks()) == [r.find_task, r.rerun_task]


def test_rerun_tasks_are_not_rows_of_the_table_but_tasks_of_the_plan():
    plan = load_plan(str(SHIPPED))
    cell = plan.cell("vllm", "amd64")
    assert cell.reruns is not None
    table = {t.task_id for t in cell.tasks()}
    assert not {t for t in table if ".reruns." in t}
    assert plan.task("vllm_amd64.reruns.rerun") == cell.reruns.rerun_task
    assert plan.task("vllm_amd64.reruns.find") == cell.reruns.find_task


def test_the_rerun_artifact_and_record_paths():
    plan = load_plan(str(SHIPPED))
    r = plan.cell("sglang", "amd64").reruns
    assert r is not None
    assert r.artifact_key(NIGHT_2, "unit", 2, JUNIT_FILE) == (
        "scheduled-20261102T080000Z/sglang_amd64/reruns/unit/2/pytest_test_report.xml"
    )
    assert r.artifact_key(NIGHT_2, "e2e_1gpu", 1, "output.log") == (
        "scheduled-20261102T080000Z/sglang_amd64/reruns/e2e_1gpu/1/output.log"
    )
    # Each mapped instance keeps its own record: the map index is in its name.
    assert r.record_key(NIGHT_2, 0) != r.record_key(NIGHT_2, 1)
    assert r.record_key(NIGHT_2, 3) == "scheduled-20261102T080000Z/sglang_amd64/tasks/reruns.rerun.3.json"
    assert r.selection_key(NIGHT_2) == "scheduled-20261102T080000Z/sglang_amd64/reruns/selection.json"


def test_the_rerun_command_runs_only_the_node_ids_and_writes_the_junit():
    from include.nightly_ci.plan import rerun_command

    cmd = rerun_command(["tests/unit/test_a.py::test_x[1]", "tests/unit/test_b.py::T::test_y"], "/w/test-results")
    assert cmd[0] == "pytest" and "-m" not in cmd
    assert "--junitxml=/w/test-results/pytest_test_report.xml" in cmd
    assert cmd[-2:] == ("tests/unit/test_a.py::test_x[1]", "tests/unit/test_b.py::T::test_y")


def test_run_kind_is_shared():
    assert run_kind(NIGHT_1) == "nightly"
    assert run_kind("backfill__2026-11-01T08:00:00+00:00") == "nightly"
    assert run_kind("manual__2026-11-01T08:00:00+00:00") == run_kind("my-run") == "manual"


# ---------------------------------------------------------------- JUnit ids -> node ids


@pytest.mark.parametrize(
    ("junit_id", "node_id"),
    [
        ("tests.unit.test_router::test_x[p]", "tests/unit/test_router.py::test_x[p]"),
        ("tests.unit.test_router.TestFoo::test_x", "tests/unit/test_router.py::TestFoo::test_x"),
        ("tests.unit.test_router.TestFoo.TestIn::test_x", "tests/unit/test_router.py::TestFoo::TestIn::test_x"),
        ("test_top::test_x[a.b::c]", "test_top.py::test_x[a.b::c]"),  # a parameter may hold dots and '::'
    ],
)
def test_junit_ids_become_pytest_node_ids(junit_id, node_id):
    from include.nightly_ci.history.junit import node_id as convert

    assert convert(junit_id) == node_id


@pytest.mark.parametrize("bad", ["::test_x", "tests.unit.test_router::", "no-separator"])
def test_an_id_that_names_no_test_is_refused(bad):
    from include.nightly_ci.history.junit import node_id

    with pytest.raises(ValueError, match="not a JUnit test id"):
        node_id(bad)


def test_node_ids_select_the_same_cases_in_a_real_pytest_run(tmp_path):
    """The conversion against pytest itself: the JUnit of a run, converted, reruns exactly
    the failed cases (a module function, a parametrized case, a method of a nested class)."""
    from include.nightly_ci.history.junit import junit_cases, node_id

    pkg = tmp_path / "tests" / "unit"
    pkg.mkdir(parents=True)
    (pkg / "test_mod.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "@pytest.mark.parametrize('p', ['a.b', 'c'])\n"
        "def test_param(p): assert p == 'c'\n"
        "class TestOuter:\n"
        "    class TestInner:\n"
        "        def test_m(self): assert 0\n"
    )
    first = tmp_path / "first.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={first}"],
                   cwd=tmp_path, capture_output=True, check=False)  # fmt: skip
    failed = sorted(k for k, v in junit_cases(first.read_text()).items() if v in ("failed", "error"))
    assert failed == ["tests.unit.test_mod.TestOuter.TestInner::test_m", "tests.unit.test_mod::test_param[a.b]"]
    again = tmp_path / "again.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={again}",
         *(node_id(f) for f in failed)],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert junit_cases(again.read_text()) == dict.fromkeys(failed, "failed")


# ---------------------------------------------------------------- the find task


class _TI:
    try_number = 1
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _context(run_id: str, night: str = "2026-11-02T08:00:00+00:00") -> dict[str, Any]:
    return {
        "ti": _TI(),
        "dag_run": SimpleNamespace(run_id=run_id, logical_date=datetime.fromisoformat(night), run_after=None),
        "params": {"frameworks": ["vllm"], "arches": ["amd64"]},
    }


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.unit.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.unit.test_a" name="test_new[1]" time="0.1"><failure message="x"/></testcase>
<testcase classname="tests.unit.test_a.TestB" name="test_err" time="0.1"><error message="y"/></testcase>
<testcase classname="tests.unit.test_a" name="test_old" time="0.1"><failure message="z"/></testcase>
</testsuite></testsuites>"""
NEW = ["tests/unit/test_a.py::TestB::test_err", "tests/unit/test_a.py::test_new[1]"]
OLD = "tests/unit/test_a.py::test_old"


@pytest.fixture
def night(tmp_path):
    """The local plan, its artifact folder with tonight's unit suite (one pass, three
    failures) and the record that says which image it ran in; integration left no files."""
    plan = build_plan(load_config(LOCAL))
    store = ArtifactStore(str(tmp_path / "artifacts"), None)
    cell = plan.cell("vllm", "amd64")
    unit = next(j for j in cell.tests if j.suite == "unit")
    root = tmp_path / "artifacts"

    def suite_ran(run_id: str) -> None:
        junit = root / unit.task.artifact_key(run_id, JUNIT_FILE)
        junit.parent.mkdir(parents=True)
        junit.write_text(JUNIT)
        record = root / unit.task.record_key(run_id)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"task_id": unit.task.task_id, "state": "failed", "image": IMAGE}))

    suite_ran(NIGHT_2)
    return SimpleNamespace(plan=plan, cell=cell, store=store, root=root, suite_ran=suite_ran)


def _history(tmp_path, monkeypatch, conn_id: str = "nightly_ci_history", *, migrate: bool = True):
    """A real SQLite history behind an Airflow connection (from the environment): night 1
    had test_old failing already and test_new passing."""
    from include.nightly_ci.history.records import CaseRecord, NightRecord, SuiteRecord
    from include.nightly_ci.history.store import HistoryStore

    db = tmp_path / "history.db"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    if migrate:
        store = HistoryStore(f"sqlite:///{db}")
        store.migrate()
        cases = {"tests.unit.test_a::test_old": "failed", "tests.unit.test_a::test_new[1]": "passed"}
        store.write_night(
            NightRecord("nightly_ci", NIGHT_1, "2026-11-01T08:00:00+00:00", "nightly"),
            [SuiteRecord("vllm_amd64", "unit", "vllm_amd64.tests.unit", "failed", "failed", tests=4)],
            [CaseRecord("vllm_amd64", "unit", t, o) for t, o in cases.items()],
        )
        store.close()
    return conn_id


def find(night, *, conn_id: str | None, attempts: int = 3, max_cases: int = 25, run_id: str = NIGHT_2):
    from airflow.sdk import DAG

    from include.nightly_ci.suites.reruns import FindRerunsOperator

    r = night.cell.reruns
    with DAG("nightly_ci", schedule=None):
        op = FindRerunsOperator(
            spec=r.find_task,
            store=night.store,
            reruns=r,
            framework="vllm",
            arch="amd64",
            history_conn_id=conn_id,
            attempts=attempts,
            max_cases=max_cases,
        )
    return op.execute(_context(run_id))


def _items(tests: list[str], attempts: int = 3) -> list[dict[str, Any]]:
    return [
        {"suite": "unit", "attempt": a, "image": IMAGE, "tests": tests, "gpus": 0, "timeout_minutes": 45}
        for a in range(1, attempts + 1)
    ]


def test_find_reruns_only_the_newly_failing_cases_r_times_in_the_image_that_failed(night, tmp_path, monkeypatch):
    conn_id = _history(tmp_path, monkeypatch)
    assert find(night, conn_id=conn_id) == _items(NEW)
    selection = _selection(night)
    assert selection["history"] == "2 of 3 failed cases seen before"
    unit = selection["suites"]["unit"]
    new = ["tests.unit.test_a.TestB::test_err", "tests.unit.test_a::test_new[1]"]
    assert unit["rerun"] == unit["newly_failing"] == new
    assert unit["failed"] == 3
    assert "no JUnit" in selection["suites"]["integration"]["why"]
    record = json.loads((night.root / night.cell.reruns.find_task.record_key(NIGHT_2)).read_text())
    assert record["state"] == "success" and record["stage"] == RERUN


def _selection(night, run_id: str = NIGHT_2) -> dict[str, Any]:
    return json.loads((night.root / night.cell.reruns.selection_key(run_id)).read_text())


def test_a_manual_run_compares_with_manual_runs_only(night, tmp_path, monkeypatch):
    conn_id = _history(tmp_path, monkeypatch)
    night.suite_ran(manual := "manual__2026-11-02T08:00:00+00:00")
    assert find(night, conn_id=conn_id, run_id=manual) == _items(sorted([*NEW, OLD]))


@pytest.mark.parametrize("history", ["none", "down", "undefined"])
def test_without_a_history_every_failed_case_is_newly_failing(night, tmp_path, monkeypatch, history):
    down = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "no-such-folder" / "history.db")})
    monkeypatch.setenv("AIRFLOW_CONN_HISTORY_DOWN", down)
    conn_id = {"none": None, "down": "history_down", "undefined": "no_such_history_conn"}[history]
    assert find(night, conn_id=conn_id) == _items(sorted([*NEW, OLD]))
    why = _selection(night)["history"]
    assert why.endswith("every failed case counts as newly failing")
    said = {"none": "history.conn_id is null", "down": "unable to open database file", "undefined": "is not defined"}
    assert said[history] in why


def test_a_new_store_is_migrated_by_the_first_find_and_has_no_past(night, tmp_path, monkeypatch):
    from include.nightly_ci.history.store import HistoryStore

    conn_id = _history(tmp_path, monkeypatch, migrate=False)
    assert find(night, conn_id=conn_id) == _items(sorted([*NEW, OLD]))
    assert "every failed case counts" not in _selection(night)["history"]  # no warning: it just has no past
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    assert store.recorded_runs("nightly_ci") == set()  # its tables exist now
    store.close()


def test_more_newly_failing_cases_than_the_cap_are_not_flakiness(night, tmp_path, monkeypatch):
    conn_id = _history(tmp_path, monkeypatch)
    assert find(night, conn_id=conn_id, max_cases=1) == []
    unit = _selection(night)["suites"]["unit"]
    assert unit["rerun"] == [] and len(unit["newly_failing"]) == 2
    assert unit["why"].startswith("2 newly failing cases, more than history.max_rerun_cases (1)")


def test_no_reruns_configured_finds_nothing(night):
    assert find(night, conn_id=None, attempts=0) == []


def test_a_suite_without_its_record_is_not_rerun(night):
    unit = next(j for j in night.cell.tests if j.suite == "unit")
    (night.root / unit.task.record_key(NIGHT_2)).unlink()
    assert find(night, conn_id=None) == []
    assert _selection(night)["suites"]["unit"]["why"].startswith("no image by digest in its record")


# ---------------------------------------------------------------- the rerun task's pod, and the suites'


def _dag(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_GPU", '{"conn_type": "kubernetes"}')
    return DagBag(str(ROOT / "dags")).dags["nightly_ci"]


def test_the_pod_of_a_mapped_rerun(monkeypatch):
    """The mapped task as Airflow unmaps it with one item of the find's list: the exact
    image, only those ids, the attempt in the environment, its own GPUs, no network."""
    from include.nightly_ci.suites.rerun import KubernetesRerunOperator

    mapped = _dag(monkeypatch).task_dict["vllm_amd64.reruns.rerun"]
    item = {"suite": "e2e_1gpu", "attempt": 2, "image": IMAGE, "tests": NEW, "gpus": 1, "timeout_minutes": 120}
    op = mapped.unmap(item)
    assert isinstance(op, KubernetesRerunOperator)
    assert op.task_id == "vllm_amd64.reruns.rerun" and (op.pool, op.pool_slots) == ("gpu-l40-amd64", 2)
    assert op.image == IMAGE
    pod = op.pod_operator(op.image).build_pod_request_obj(dry_run=True)
    container = pod.spec.containers[0]
    assert container.image == IMAGE
    assert {e.name: e.value for e in container.env} == {RERUN_ENV: "2"}
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.metadata.labels["nightly-ci/network"] == "none"
    script = container.args[0]
    assert "timeout --signal=TERM --kill-after=30 7200s pytest" in script
    ids = "tests/unit/test_a.py::TestB::test_err 'tests/unit/test_a.py::test_new[1]'"  # quoted where bash needs it
    assert f"--junitxml=/workspace/test-results/pytest_test_report.xml {ids} 2>&1" in script
    assert " -m " not in script and "/workspace/test-results/pytest_test_report.xml" in script


def test_a_suites_own_pod_says_it_is_run_zero(monkeypatch):
    task = _dag(monkeypatch).task_dict["vllm_amd64.tests.unit"]
    container = task.pod_operator(IMAGE).build_pod_request_obj(dry_run=True).spec.containers[0]
    assert {e.name: e.value for e in container.env} == {RERUN_ENV: "0"}


def test_a_mapped_docker_rerun_keeps_its_files_apart(tmp_path):
    """The local plan's Docker rerun, unmapped twice: each (suite, attempt) has its own
    folder and each map index its own record, so no instance overwrites another."""
    from airflow.sdk import DAG

    from include.nightly_ci.dag import rerun_task
    from include.nightly_ci.suites.rerun import DockerRerunOperator

    plan = build_plan(load_config(LOCAL))
    cell = plan.cell("vllm", "amd64")
    assert cell.reruns is not None
    with DAG("nightly_ci", schedule=None):
        mapped = rerun_task(plan, cell, cell.reruns, [])
    ops = [
        mapped.unmap({"suite": "unit", "attempt": a, "image": IMAGE, "tests": NEW, "gpus": 0, "timeout_minutes": 45})
        for a in (1, 2)
    ]
    assert all(isinstance(op, DockerRerunOperator) for op in ops)
    assert ops[0].container_env() == {RERUN_ENV: "1"} and ops[1].container_env() == {RERUN_ENV: "2"}
    keys = {op.artifact_key(NIGHT_2, JUNIT_FILE) for op in ops}
    assert keys == {f"scheduled-20261102T080000Z/vllm_amd64/reruns/unit/{a}/{JUNIT_FILE}" for a in (1, 2)}
    records = {op.record_key({"dag_run": SimpleNamespace(run_id=NIGHT_2), "ti": SimpleNamespace(map_index=i)})
               for i, op in enumerate(ops)}  # fmt: skip
    assert len(records) == 2


# ---------------------------------------------------------------- the sample project's flaky test


def _sample_pytest(tmp_path: Path, marker: bool, rerun: str | None) -> int:
    project = tmp_path / "proj"
    if not project.exists():
        shutil.copytree(ROOT / "dev" / "sample_project", project, ignore=shutil.ignore_patterns("__pycache__"))
    flag = project / "tests" / "unit" / "flaky-marker"
    if marker:
        flag.write_text("x\n")
    elif flag.exists():
        flag.unlink()
    env = {k: v for k, v in os.environ.items() if k != RERUN_ENV} | {"PYTHONPATH": str(project / "src")}
    if rerun is not None:
        env[RERUN_ENV] = rerun
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "unit and (nightly or post_merge or pre_merge)",
         "tests/unit/test_flaky.py"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.returncode


@pytest.mark.parametrize(
    ("marker", "rerun", "code"),
    [
        (False, None, 0),
        (False, "2", 0),
        (True, None, 1),
        (True, "0", 1),
        (True, "1", 0),
        (True, "2", 1),
        (True, "3", 0),
    ],
)
def test_the_sample_flaky_test_fails_on_every_other_run_only_with_its_marker(tmp_path, marker, rerun, code):
    assert _sample_pytest(tmp_path, marker, rerun) == code


def test_a_sample_repo_commit_adds_the_flaky_marker(tmp_path):
    from dev.sample_repo import FLAKY_MARKER, add_flaky_marker, make_repo, nightly_history

    repo = tmp_path / "sample.git"
    ids = make_repo(repo, nightly_history(1, datetime.now(UTC)))
    head = add_flaky_marker(repo)
    log = subprocess.run(["git", f"--git-dir={repo}", "log", "--format=%H", "main"], capture_output=True, text=True)
    assert log.stdout.split()[:2] == [head, ids[-1]]
    files = subprocess.run(["git", f"--git-dir={repo}", "show", "--name-only", "--format=", head],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    assert files == [FLAKY_MARKER]
    assert not (ROOT / "dev" / "sample_project" / FLAKY_MARKER).exists()  # only a commit adds it
