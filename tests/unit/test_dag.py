"""The rendered DAG: imports cleanly, 6 build groups with the right edges, Params, pools."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["nightly_ci"]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "nightly_ci" in dagbag.dags


def test_schedule_and_run_settings(dag):
    assert dag.timetable.expression == "0 8 * * *"
    assert str(dag.timetable.timezone) in {"UTC", "Timezone('UTC')"}
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert "resolve_source" in dag.doc_md and "backfill" in dag.doc_md


def test_six_build_groups_with_their_edges(dag):
    groups = {t.task_id.split(".")[0] for t in dag.tasks if "." in t.task_id}
    assert groups == {f"{fw}_{a}" for fw in ("vllm", "sglang", "trtllm") for a in ("amd64", "arm64")}
    for g in groups:
        t = dag.task_dict
        assert t[f"{g}.build_framework"].upstream_task_ids == {"resolve_source"}
        assert t[f"{g}.push_framework_ecr"].upstream_task_ids == {f"{g}.build_framework"}
        assert t[f"{g}.build_runtime"].upstream_task_ids == {f"{g}.push_framework_ecr"}
        assert t[f"{g}.push_runtime_ecr"].upstream_task_ids == {f"{g}.build_runtime"}
        assert t[f"{g}.push_runtime_acr"].upstream_task_ids == {f"{g}.build_runtime"}
    # + the reruns' find and mapped rerun of the 3 run-mode cells + results_summary, verdict, notify_slack, announce
    assert len(dag.tasks) == 1 + 6 * (5 + 4) + 3 * 2 + 4


def test_the_plans_needs_are_the_dags_edges(dag):
    """The report follows Plan.needs from a job that did not run to the failure that
    stopped it: they must be the DAG's own edges, for every job of the table."""
    from include.nightly_ci.plan import load_plan

    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    jobs = [t.task_id for cell in plan.cells for t in cell.tasks()]
    assert sorted(plan.needs) == sorted(jobs)
    assert {j: set(plan.needs[j]) for j in jobs} == {j: dag.task_dict[j].upstream_task_ids for j in jobs}


SUITES = {
    "unit": ("unit and (nightly or post_merge or pre_merge)", 45, 1),
    "integration": ("integration and (nightly or post_merge or pre_merge)", 90, 1),
    "e2e_1gpu": ("{framework} and e2e and gpu_1", 120, 1),
    "e2e_2gpu": ("(nightly or post_merge or pre_merge) and e2e and gpu_2", 150, 2),
}


def test_each_test_group_waits_only_for_its_own_ecr_runtime_push(dag):
    for fw in ("vllm", "sglang", "trtllm"):
        for arch in ("amd64", "arm64"):
            g = f"{fw}_{arch}"
            for suite, (marker, minutes, gpus) in SUITES.items():
                t = dag.task_dict[f"{g}.tests.{suite}"]
                assert t.upstream_task_ids == {f"{g}.push_runtime_ecr"}
                assert t.marker == marker.format(framework=fw)
                assert t.timeout_minutes == minutes
                upstream = t.get_flat_relative_ids(upstream=True)
                assert {u.split(".")[0] for u in upstream} == {g, "resolve_source"}
                assert f"{g}.push_runtime_acr" not in upstream
                if arch == "amd64":
                    assert (t.pool, t.pool_slots, t.gpus, t.mode) == ("gpu-l40-amd64", gpus, gpus, "run")
                else:
                    assert (t.pool, t.pool_slots, t.gpus, t.mode) == ("cpu-arm-r8g-4xlarge", 1, 0, "collect")


def test_backends_follow_the_pools(dag):
    kinds = {t.task_id.split(".")[0]: type(t).__name__ for t in dag.tasks if ".tests." in t.task_id}
    assert {k for k, v in kinds.items() if v == "KubernetesSuiteOperator"} == {
        "vllm_amd64",
        "sglang_amd64",
        "trtllm_amd64",
    }
    assert {k for k, v in kinds.items() if v == "DockerSuiteOperator"} == {"vllm_arm64", "sglang_arm64", "trtllm_arm64"}


def test_acr_receives_runtime_images_only(dag):
    acr = [t for t in dag.tasks if t.task_id.endswith("_acr")]
    assert len(acr) == 6
    assert all(t.image == "runtime" for t in acr)
    assert not [t for t in dag.tasks if t.task_id.endswith("push_framework_acr")]


def test_builds_and_pushes_run_in_their_arch_pool(dag):
    """A push loads its builder's engine as a build does: it takes a slot of the same pool."""
    builds = pushes = 0
    for t in dag.tasks:
        if t.task_id.endswith(("build_framework", "build_runtime")) or ".push_" in t.task_id:
            want = "cpu-arm-r8g-4xlarge" if "_arm64." in t.task_id else "cpu-amd-m5-4xlarge"
            assert (t.pool, t.pool_slots) == (want, 1)
            builds += ".build_" in t.task_id
            pushes += ".push_" in t.task_id
    assert (builds, pushes) == (12, 18)


def test_ui_names_are_the_tables_job_names(dag):
    """One naming scheme: the UI's display names are the original pipeline's job names,
    which the results table's Stage column shows too."""
    from include.nightly_ci.plan import load_plan

    plan = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
    t = dag.task_dict
    assert t["vllm_amd64.build_framework"].task_display_name == "vllm-framework (amd64)"
    assert t["vllm_amd64.build_runtime"].task_display_name == "Build vllm (amd64)"
    assert t["vllm_arm64.push_runtime_acr"].task_display_name == "Push vllm (arm64) to acr"
    assert t["vllm_amd64.tests.unit"].task_display_name == "vllm-amd64-unit"
    assert t["sglang_arm64.tests.e2e_2gpu"].task_display_name == "sglang-arm64-e2e_2gpu (collect only)"
    assert t["results_summary"].task_display_name == "Results Summary"
    assert {task_id: op.task_display_name for task_id, op in t.items()} == {
        s.task_id: s.display_name for s in plan.tasks()
    }


def test_params_defaults(dag):
    params = dag.params.validate()
    assert params == {
        "frameworks": ["vllm", "sglang", "trtllm"],
        "arches": ["amd64", "arm64"],
        "git_ref": "",
        "publish": False,  # a manual run moves no moving tag unless asked; nightly runs do (plan.publishes)
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"frameworks": ["tensorflow"]},
        {"frameworks": []},
        {"frameworks": ["vllm", "vllm"]},
        {"arches": ["riscv64"]},
        {"arches": "amd64"},
        {"git_ref": "main; rm -rf /"},
        {"git_ref": "a..b"},
        {"git_ref": "--upload-pack=evil"},
        {"publish": "yes"},
    ],
)
def test_params_reject_bad_input(dag, bad):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)  # its Params, not the DAG's: setting a value sets the Param's
    with pytest.raises(ParamValidationError):
        for key, value in bad.items():
            params[key] = value
        params.validate()


@pytest.mark.parametrize(
    "good", [{"frameworks": ["sglang"], "arches": ["arm64"]}, {"git_ref": "v1.2.3"}, {"publish": False}]
)
def test_params_accept_good_input(dag, good):
    params = copy.deepcopy(dag.params)
    for key, value in good.items():
        params[key] = value
    assert params.validate()[next(iter(good))] == next(iter(good.values()))


def test_bad_config_is_the_dags_import_error(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {ROOT / 'include' / 'config' / 'nightly_ci.yaml'}\noverrides:\n  riscv64: {{}}\n")
    monkeypatch.setenv("NIGHTLY_CI_CONFIG", str(bad))
    bag = DagBag(str(ROOT / "dags"))
    assert not {"nightly_ci", "nightly_ci_retention", "nightly_ci_culprit"} & set(bag.dags)
    assert {Path(f).name for f in bag.import_errors} == {
        "nightly_ci.py",
        "nightly_ci_retention.py",
        "nightly_ci_culprit.py",
    }
    for error in bag.import_errors.values():
        assert "overrides.riscv64" in error and "unknown arch 'riscv64'" in error


def test_parsing_imports_nothing_beyond_the_airflow_sdk():
    """Parsing the DAGs (in a fresh process, as a dag-processor does) adds no SDK of
    Docker, AWS, Azure, Kubernetes or Slack and no provider but Airflow's standard one to
    what Airflow itself imported (its providers manager reads each provider's
    get_provider_info): they load inside tasks only. The culprit DAG is made of Airflow's
    own TriggerDagRunOperator and BaseBranchOperator (the standard provider, and the
    compat module it uses): no backend, no cloud."""
    import subprocess
    import sys

    code = (
        "import sys; from airflow.dag_processing.dagbag import DagBag\n"
        "HEAVY = ('airflow.providers.', 'docker', 'boto', 'azure', 'kubernetes', 'slack_sdk')\n"
        "before = {m for m in sys.modules if m.startswith(HEAVY)}\n"
        f"b = DagBag({str(ROOT / 'dags')!r}); assert len(b.dags) == 3, b.import_errors\n"
        "print(sorted(m for m in sys.modules if m.startswith(HEAVY) and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # Airflow's own .expand_kwargs() (OperatorPartial._expand) imports EmptyOperator to
    # tell it apart: these three small modules (0.3 ms), nothing of a backend or cloud.
    mapping = {
        "airflow.providers.standard.operators",
        "airflow.providers.standard.operators.empty",
        "airflow.providers.standard.version_compat",
    }
    added = set(ast.literal_eval(out.strip().splitlines()[-1])) - mapping
    own = ("airflow.providers.standard.", "airflow.providers.common.compat.")
    assert {m for m in added if not m.startswith(own)} == set()
    assert "airflow.providers.standard.operators.trigger_dagrun" in added  # the culprit DAG's


def test_a_nightly_ends_with_summary_verdict_and_slack(dag):
    t = dag.task_dict
    assert t["results_summary"].trigger_rule == "all_done"
    # Every cell's last tasks: the ACR push and the 4 suites, or (a cell whose suites run)
    # the ACR push and the reruns, which come after the suites.
    assert len(t["results_summary"].upstream_task_ids) == 3 * 5 + 3 * 2
    assert t["verdict"].upstream_task_ids == {"results_summary"} and t["verdict"].trigger_rule == "all_done"
    assert t["notify_slack"].upstream_task_ids == {"results_summary"} and t["notify_slack"].trigger_rule == "all_done"


def test_an_overrunning_nightly_raises_a_deadline_alert(dag):
    from datetime import timedelta

    (alert,) = dag.deadline
    assert type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
    assert alert.interval == timedelta(hours=5)
    assert alert.callback.path == "include.nightly_ci.report.deadline.notify_overrun"
    assert alert.callback.kwargs["conn_id"] == "slack_nightly" and alert.callback.kwargs["hours"] == 5


def test_the_old_deadline_callback_path_still_resolves():
    """Runs created before the move store the old path with their deadline."""
    from include.nightly_ci.deadline import notify_overrun as old
    from include.nightly_ci.report.deadline import notify_overrun

    assert old is notify_overrun


def test_each_pool_has_its_own_queue(dag):
    t = dag.task_dict
    assert t["vllm_arm64.build_framework"].queue == "cpu-arm-r8g-4xlarge"
    assert t["vllm_arm64.push_runtime_acr"].queue == "cpu-arm-r8g-4xlarge"
    assert t["vllm_amd64.build_runtime"].queue == "cpu-amd-m5-4xlarge"
    assert t["vllm_amd64.tests.e2e_2gpu"].queue == "gpu-l40-amd64"
    assert t["vllm_arm64.tests.unit"].queue == "cpu-arm-r8g-4xlarge"
    assert t["results_summary"].queue == "default"


def test_every_task_of_every_dag_has_a_time_limit(dagbag):
    """L3: a stalled registry push or Slack's Retry-After was bounded by nothing."""
    for built in (dagbag.dags["nightly_ci"], dagbag.dags["nightly_ci_retention"], dagbag.dags["nightly_ci_culprit"]):
        unbounded = [t.task_id for t in built.tasks if t.execution_timeout is None]
        assert unbounded == [], (built.dag_id, unbounded)


def test_each_running_cell_reruns_its_newly_failing_cases_after_its_suites(dag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    t = dag.task_dict
    for fw in ("vllm", "sglang", "trtllm"):
        g = f"{fw}_amd64"
        find, rerun = t[f"{g}.reruns.find"], t[f"{g}.reruns.rerun"]
        # After every suite, whatever their end (a failed suite is what it is for).
        assert find.upstream_task_ids == {f"{g}.tests.{s}" for s in SUITES} and find.trigger_rule == "all_done"
        assert (find.pool, find.queue) == ("default_pool", "default")  # no GPU slot to read files
        assert isinstance(rerun, MappedOperator) and rerun.operator_class.__name__ == "KubernetesRerunOperator"
        assert rerun.upstream_task_ids == {find.task_id} and rerun.trigger_rule == "all_success"
        # Where the suites ran; pool_slots can't be mapped: the cell's largest suite's GPUs.
        assert (rerun.pool, rerun.queue, rerun.pool_slots) == ("gpu-l40-amd64", "gpu-l40-amd64", 2)
        assert rerun.retries == 0 and rerun.execution_timeout is not None
        assert rerun.task_display_name == f"{fw}-amd64-rerun" and find.task_display_name == f"{fw}-amd64-find-flakes"
        assert t["results_summary"].upstream_task_ids >= {rerun.task_id}
        # A collect-only cell fails no test case: nothing to rerun.
        assert not [k for k in t if k.startswith(f"{fw}_arm64.reruns")]


def test_the_nights_regressions_go_to_the_culprit_finder_as_an_asset_event(dag):
    t = dag.task_dict["announce_regressions"]
    assert t.upstream_task_ids == {"results_summary"} and t.trigger_rule == "all_success"
    assert [a.name for a in t.outlets] == ["nightly_ci.regressions"]
    assert t.suites["vllm_amd64.tests.unit"] == ("vllm_amd64", "unit")
    assert t.record_files["vllm_amd64.tests.unit"] == "vllm_amd64/tasks/tests.unit.json"
