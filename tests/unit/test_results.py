"""The summary table, night over night, the Slack message and policy, the failure
classifier: plain data in, plain data out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.nightly_ci.history.junit import junit_cases
from include.nightly_ci.plan import load_plan
from include.nightly_ci.records import TaskRecord, classify_failure
from include.nightly_ci.report.markdown import headline, not_run_line, to_markdown
from include.nightly_ci.report.results import (
    Results,
    build_rows,
    previous_results,
    summarize,
)
from include.nightly_ci.report.slack import should_post, slack_message

ROOT = Path(__file__).resolve().parents[2]
PLAN = load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml"))
G = "vllm_amd64"


def record(task_id, state, seconds=600.0, **extra):
    return TaskRecord(
        task_id=task_id,
        stage=PLAN.task(task_id).stage,
        state=state,
        started="2026-11-28T08:00:00+00:00",
        ended="2026-11-28T08:10:00+00:00",
        duration_sec=seconds,
        pool="gpu-l40-amd64",
        host="worker-1",
        try_number=1,
        **extra,
    )


def fixed_outcomes():
    """success, failed (test), upstream_failed, timeout, skipped, never ran."""
    states: dict[str, str] = {}
    records = {}
    for cell in PLAN.cells:
        for task in (
            f"{cell.group_id}.build_framework",
            f"{cell.group_id}.push_framework_ecr",
            f"{cell.group_id}.build_runtime",
            f"{cell.group_id}.push_runtime_ecr",
            f"{cell.group_id}.push_runtime_acr",
        ):
            states[task] = "success"
            records[task] = record(task, "success", 1800)
        for job in cell.tests:
            task = f"{cell.group_id}.tests.{job.suite}"
            states[task] = "success"
            counts = (
                {"collected": 3}
                if job.mode == "collect"
                else {"tests": 3, "passed": 3, "failed": 0, "skipped": 0, "errors": 0}
            )
            records[task] = record(task, "success", counts=counts, outcome="passed")
    states[f"{G}.tests.unit"] = "failed"
    records[f"{G}.tests.unit"] = record(
        f"{G}.tests.unit",
        "failed",
        outcome="failed",
        failure_class="test",
        counts={"tests": 3, "passed": 2, "failed": 1, "skipped": 0, "errors": 0},
    )
    states[f"{G}.tests.e2e_2gpu"] = "failed"
    records[f"{G}.tests.e2e_2gpu"] = record(
        f"{G}.tests.e2e_2gpu", "failed", 9000, outcome="timeout", failure_class="timeout"
    )
    for t in ("build_framework", "push_framework_ecr", "build_runtime", "push_runtime_ecr", "push_runtime_acr"):
        states[f"sglang_arm64.{t}"] = "upstream_failed" if t != "build_framework" else "failed"
        records.pop(f"sglang_arm64.{t}")
    records["sglang_arm64.build_framework"] = record("sglang_arm64.build_framework", "failed", failure_class="build")
    for suite in ("unit", "integration", "e2e_1gpu", "e2e_2gpu"):
        states[f"sglang_arm64.tests.{suite}"] = "upstream_failed"
        records.pop(f"sglang_arm64.tests.{suite}")
    states["trtllm_arm64.tests.unit"] = "skipped"
    records["trtllm_arm64.tests.unit"] = record("trtllm_arm64.tests.unit", "skipped", 6)
    del states["trtllm_amd64.push_runtime_acr"]  # never ran: no state, no record
    records.pop("trtllm_amd64.push_runtime_acr")
    return states, records


CASES = {
    f"{G}.tests.unit": {
        "tests.unit.test_router::test_round_robin": "failed",
        "tests.unit.test_router::test_needs_a_worker": "passed",
    }
}


def results_for(before=None, states_records=None):
    states, records = states_records or fixed_outcomes()
    rows = build_rows(
        PLAN,
        states,
        records,
        CASES,
        log_url=lambda t, n: f"http://ui/{t}?try_number={n}",
        artifacts_url=lambda t: f"s3://bucket/run/{t}",
    )
    return summarize(
        PLAN, "scheduled__2026-11-28T08:00:00+00:00", "2026-11-28T08:00:00+00:00", "http://ui/run", rows, CASES, before
    ).to_json()


def typed(results: dict) -> Results:
    """RESULTS as results.json holds it, read back: what the summary, Slack and the next night read."""
    return Results.from_json(json.loads(json.dumps(results)))


def test_one_row_per_build_push_and_test_task_in_a_stable_order():
    rows = results_for()["rows"]
    assert len(rows) == 6 * (5 + 4)
    assert [r["task_id"] for r in rows[:9]] == [
        f"{G}.build_framework", f"{G}.push_framework_ecr", f"{G}.build_runtime", f"{G}.push_runtime_ecr",
        f"{G}.push_runtime_acr", f"{G}.tests.unit", f"{G}.tests.integration", f"{G}.tests.e2e_1gpu", f"{G}.tests.e2e_2gpu",
    ]  # fmt: skip
    assert [r["task_id"].split(".")[0] for r in rows[::9]] == [c.group_id for c in PLAN.cells]


def test_states_classes_and_counts():
    by = {r["task_id"]: r for r in results_for()["rows"]}
    assert (by[f"{G}.tests.unit"]["status"], by[f"{G}.tests.unit"]["failure_class"]) == ("failed", "test")
    assert by[f"{G}.tests.unit"]["failed_cases"] == ["tests.unit.test_router::test_round_robin"]
    assert by[f"{G}.tests.e2e_2gpu"]["failure_class"] == "timeout"
    assert by[f"{G}.tests.e2e_2gpu"]["duration_min"] == 150.0
    assert by["sglang_arm64.build_framework"]["failure_class"] == "build"
    assert by["sglang_arm64.tests.unit"]["failure_class"] == "upstream"
    assert by["sglang_arm64.tests.unit"]["duration_min"] is None
    assert (
        by["trtllm_arm64.tests.unit"]["status"] == "skipped" and by["trtllm_arm64.tests.unit"]["failure_class"] is None
    )
    never = by["trtllm_amd64.push_runtime_acr"]
    assert (never["status"], never["runner"], never["duration_min"], never["log_url"]) == ("none", "N/A", None, "")


def test_markdown():
    results = results_for()
    md = to_markdown(typed(results))
    assert md.startswith("# Nightly CI Results Summary\n")
    assert "**Summary: 41/54 jobs passed, 3 failed, 9 not run, 1 skipped**" in md
    assert "| Stage | Status | Runner | Duration (min) | Artifacts | Tests | Failure |" in md
    assert (
        "| vllm-amd64-unit | failed | gpu-l40-amd64 @ worker-1 | 10.0 | [Log](http://ui/vllm_amd64.tests.unit?try_number=1)"
        " · [Artifacts](s3://bucket/run/vllm_amd64.tests.unit) | 2 passed, 1 failed, 0 skipped, 0 errors | test |"
    ) in md
    assert (
        "| sglang-arm64-unit (collect only) | upstream_failed | N/A | N/A | N/A | N/A | upstream: sglang-framework (arm64) |"
        in md
    )
    assert (
        "| vllm-arm64-unit (collect only) | success | gpu-l40-amd64 @ worker-1 | 10.0 |" in md and "3 collected" in md
    )
    assert "| Push trtllm (amd64) to acr | none | N/A | N/A | N/A |  |  |" in md
    assert "No previous completed nightly to compare with." in md


def test_json_is_what_the_markdown_shows():
    results = json.loads(json.dumps(results_for()))
    assert (results["passed"], results["total"], results["success"]) == (41, 54, False)
    assert results["night_over_night"] == {"previous": None}


def test_night_over_night_jobs_and_cases():
    before = typed(results_for())
    states, records = fixed_outcomes()
    states[f"{G}.tests.unit"] = "success"  # fixed
    records[f"{G}.tests.unit"] = record(f"{G}.tests.unit", "success", outcome="passed")
    states[f"{G}.tests.integration"] = "failed"  # new
    cases = {
        f"{G}.tests.unit": {"tests.unit.test_router::test_round_robin": "passed"},
        f"{G}.tests.integration": {"tests.integration.test_backend::test_backend_matches_image": "failed"},
    }
    rows = build_rows(PLAN, states, records, cases, lambda t, n: "", lambda t: "")
    now = summarize(PLAN, "scheduled__2026-11-29T08:00:00+00:00", "2026-11-29T08:00:00+00:00", "u", rows, cases, before)
    non = now.to_json()["night_over_night"]
    assert non["previous"]["logical_date"] == "2026-11-28T08:00:00+00:00"
    assert non["jobs"]["new_failures"] == [f"{G}.tests.integration"]
    assert non["jobs"]["fixed"] == [f"{G}.tests.unit"]
    assert (
        f"{G}.tests.e2e_2gpu" in non["jobs"]["still_failing"]
        and "sglang_arm64.build_framework" in non["jobs"]["still_failing"]
    )
    assert non["cases"]["new_failures"] == [
        f"{G}.tests.integration::tests.integration.test_backend::test_backend_matches_image"
    ]
    assert non["cases"]["fixed"] == [f"{G}.tests.unit::tests.unit.test_router::test_round_robin"]
    md = to_markdown(now)
    assert "- New failures: 1 jobs: vllm-amd64-integration; 1 test cases" in md
    assert "- Fixed: 1 jobs: vllm-amd64-unit; 1 test cases" in md


def night(
    logical_date: str, run_id: str | None = None, dag_id: str = "nightly_ci", cells=("vllm_amd64", "sglang_arm64")
):
    rows = [{"task_id": f"{c}.build_framework", "job": c, "kind": "build", "status": "success"} for c in cells]
    return Results.from_json(
        {"dag_id": dag_id, "logical_date": logical_date, "run_id": run_id or f"scheduled__{logical_date}", "rows": rows}
    )


def baseline(candidates, logical_date: str, run_id: str | None = None, cells=("vllm_amd64", "sglang_arm64")):
    return previous_results(
        candidates,
        dag_id="nightly_ci",
        run_id=run_id or f"scheduled__{logical_date}",
        logical_date=logical_date,
        cells=set(cells),
    )


def test_a_backfilled_older_night_compares_with_the_night_before_it():
    nights = [night(d) for d in ("2026-11-25T08:00:00+00:00", "2026-11-27T08:00:00+00:00", "2026-11-28T08:00:00+00:00")]
    # The 26th, backfilled after the 28th ran, compares with the 25th, not the newest.
    before_26th = baseline(nights, "2026-11-26T08:00:00+00:00", "backfill__2026-11-26T08:00:00+00:00")
    before_29th = baseline(nights, "2026-11-29T08:00:00+00:00")
    assert before_26th is not None and before_26th.logical_date == "2026-11-25T08:00:00+00:00"
    assert before_29th is not None and before_29th.logical_date == "2026-11-28T08:00:00+00:00"
    assert baseline(nights, "2026-11-20T08:00:00+00:00") is None


def test_the_baseline_is_the_previous_nightly_of_this_dag_covering_its_cells():
    """M9: a manual two-cell run at 15:00 became the next nightly's baseline, and every
    failure that was already failing was reported as new."""
    last_night = night("2026-11-28T08:00:00+00:00")
    candidates = [
        last_night,
        night("2026-11-28T15:00:00+00:00", "manual__2026-11-28T15:00:00+00:00", cells=("sglang_arm64",)),
        night("2026-11-28T20:00:00+00:00", dag_id="another_nightly"),
        night("2026-11-28T22:00:00+00:00", "my-rest-run"),
        night("2026-11-28T23:00:00+00:00", cells=("vllm_amd64",)),  # a nightly of fewer cells (its config then)
    ]
    assert baseline(candidates, "2026-11-29T08:00:00+00:00") is last_night
    # A backfill is a nightly too; a manual run compares with manual runs only.
    assert baseline(candidates, "2026-11-29T08:00:00+00:00", "backfill__2026-11-29T08:00:00+00:00") is last_night
    manual = baseline(
        candidates, "2026-11-29T10:00:00+00:00", "manual__2026-11-29T10:00:00+00:00", cells=("sglang_arm64",)
    )
    assert manual is not None and manual.run_id == "my-rest-run"


def test_junit_cases_from_a_real_report(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text(
        "import pytest\ndef test_ok(): pass\ndef test_bad(): assert 0\n@pytest.mark.skip\ndef test_skip(): pass\n"
    )
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={tmp_path / 'r.xml'}"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert junit_cases((tmp_path / "r.xml").read_text()) == {
        "test_x::test_ok": "passed",
        "test_x::test_bad": "failed",
        "test_x::test_skip": "skipped",
    }


def all_green():
    _, records = fixed_outcomes()
    states = {r["task_id"]: "success" for r in results_for()["rows"]}
    return results_for(states_records=(states, records))


def test_slack_message_as_the_original():
    ok = typed(all_green())
    msg = slack_message(ok, "S0OPS")
    assert msg["text"].startswith(
        "*Nightly CI Pipeline - Success ✅*\nSummary: 54/54 jobs passed\n<http://ui/run|View Workflow Summary>"
    )
    assert "subteam" not in json.dumps(msg["blocks"])
    bad = slack_message(typed(results_for()), "S0OPS")
    assert bad["text"].startswith("*Nightly CI Pipeline - Failed ❌*\nSummary: 41/54 jobs passed")
    blocks = json.dumps(bad["blocks"], ensure_ascii=False)
    assert "*Failed Jobs (3):*" in blocks and "• vllm-amd64-unit (test)" in blocks
    assert ":rotating_light: cc <!subteam^S0OPS|@ops-support> - Please investigate the failures above." in blocks
    assert "@ops-support> " not in json.dumps(slack_message(typed(results_for()), None)["blocks"])


def test_posting_policies():
    ok = typed(all_green())
    bad = typed(results_for())
    same_bad = typed(results_for(before=bad))
    assert should_post(ok, "always") and should_post(bad, "always")
    assert not should_post(ok, "failure") and should_post(bad, "failure")
    assert should_post(bad, "change") and not should_post(same_bad, "change")  # nothing new since last night
    assert should_post(typed(results_for(before=ok)), "change")


@pytest.mark.parametrize(
    ("stage", "error_type", "text", "outcome", "cls"),
    [
        (
            "build",
            "BuildError",
            "build failed: The command '/bin/sh -c make' returned a non-zero code: 2",
            None,
            "build",
        ),
        (
            "build",
            "BuildError",
            'build failed: Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused',
            None,
            "infra",
        ),
        ("build", "AirflowException", "Failed to establish connection to any given Docker hosts.", None, "infra"),
        (
            "push",
            "RegistryAuthError",
            "registry 'ecr' (x) refused the credentials of Airflow connection 'aws_default': unauthorized: authentication required",
            None,
            "infra",
        ),
        (
            "push",
            "RegistryUnavailable",
            "push x: still failing after 6 attempts: received unexpected HTTP status: 503 Service Unavailable",
            None,
            "infra",
        ),
        (
            "test",
            "APIError",
            '500 Server Error for http+docker://localhost/v1.41/containers/x/start: Internal Server Error ("could not select device driver "" with capabilities: [[gpu]]")',
            "error",
            "infra",
        ),
        (
            "test",
            "RegistryError",
            "manifest for 127.0.0.1:5101/ai-dynamo/dynamo@sha256:ab not found: manifest unknown: manifest unknown",
            None,
            "infra",
        ),
        (
            "test",
            "AirflowException",
            "suite unit of vllm_amd64: failed (exit code 1, {'tests': 4, 'failed': 1})",
            "failed",
            "test",
        ),
        (
            "test",
            "AirflowException",
            "suite unit of vllm_arm64: collection_error (exit code 2)",
            "collection_error",
            "test",
        ),
        ("test", "AirflowException", "suite e2e_2gpu of vllm_amd64: timeout (exit code None)", "timeout", "timeout"),
        ("test", "AirflowTaskTimeout", "Timeout, PID: 4242", None, "timeout"),
        (
            "test",
            "PodLaunchFailedException",
            "Pod took too long to start. More than 1800s. Check the pod events in kubernetes.",
            None,
            "infra",
        ),
        (
            "test",
            "EngineConfigError",
            "engine tcp://gpu-7:2376 (connection 'gpu_host'): TLS handshake failed (wrong CA or client certificate?)",
            None,
            "infra",
        ),
        (
            "build",
            "EngineUnavailable",
            "engine unix:///run/builder.sock can't be reached: No such file or directory",
            None,
            "infra",
        ),
        (
            "source",
            "SourceError",
            "git_ref 'nope' is not a branch, tag or commit of https://github.com/x/y.git",
            None,
            "build",
        ),
    ],
)
def test_failure_classifier_on_real_error_texts(stage, error_type, text, outcome, cls):
    assert classify_failure(stage, error_type, text, outcome) == cls


def test_cells_the_params_left_out_are_not_jobs_of_the_run():
    states, records = fixed_outcomes()
    rows = build_rows(PLAN, states, records, {}, lambda t, n: "", lambda t: "", selected=(["vllm"], ["amd64"]))
    assert {r.task_id.split(".")[0] for r in rows} == {G} and len(rows) == 9


# AUDIT-RELIABILITY.md H4: one unreadable file made every later summary fail.


def test_unreadable_earlier_results_are_skipped_with_a_warning(tmp_path):
    from include.nightly_ci.report.reading import completed_runs

    good = results_for()
    for name, text in {
        "scheduled-20261128T080000Z": json.dumps(good),
        "scheduled-20261127T080000Z": json.dumps(good)[:70],  # truncated (ENOSPC, a killed writer)
        "scheduled-20261126T080000Z": json.dumps({"rows": []}),  # an older schema
        "stray": "[1, 2]",  # anything else's results.json
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    runs, warnings = completed_runs(tmp_path, "scheduled-20261129T080000Z")
    assert [r.run_id for r in runs] == [good["run_id"]]
    assert len(warnings) == 3
    assert all("results.json" in w and "skipped" in w for w in warnings)
    assert any("scheduled-20261127T080000Z/results.json" in w for w in warnings)


def test_a_truncated_task_record_is_skipped_with_a_warning(tmp_path):
    from include.nightly_ci.report.reading import RunFolder

    task = PLAN.cells[0].tests[0].task
    record = tmp_path / task.record_file
    record.parent.mkdir(parents=True)
    record.write_text('{"task_id": "')
    records, warnings = RunFolder(PLAN, tmp_path).records()
    assert records == {}
    assert len(warnings) == 1 and task.record_file in warnings[0]


def test_warnings_are_in_the_table_and_in_results_json():
    results = typed({**results_for(), "warnings": ["a/results.json: not valid JSON, skipped"]})
    assert results.warnings == ("a/results.json: not valid JSON, skipped",)
    assert "a/results.json: not valid JSON, skipped" in to_markdown(results)
    assert results.to_json()["warnings"] == ["a/results.json: not valid JSON, skipped"]


def test_a_failed_resolve_source_has_its_own_row_first():
    """H6: the source could not be fetched, and the table showed 54 upstream rows and not why."""
    states = {"resolve_source": "failed"}
    records = {
        "resolve_source": record(
            "resolve_source", "failed", 30, error_type="SourceUnavailable", failure_class="infra",
            error="git fetch did not finish within 600 s",
        )
    }  # fmt: skip
    for cell in PLAN.cells:
        for task in cell.tasks():
            states[task.task_id] = "upstream_failed"
    rows = build_rows(PLAN, states, records, {}, log_url=lambda t, n: f"http://ui/{t}", artifacts_url=lambda t: "")
    night = summarize(PLAN, "scheduled__2026-11-28T08:00:00+00:00", "2026-11-28T08:00:00+00:00", "u", rows, {}, None)
    assert not_run_line(night) == "54 jobs not run: the source commit was not resolved"
    assert headline(night) == "0/55 jobs passed, 1 failed, 54 not run"
    first = rows[0]
    assert (first.task_id, first.status, first.failure_class) == ("resolve_source", "failed", "infra")
    assert len(rows) == 1 + 6 * 9
    assert (
        build_rows(PLAN, {"resolve_source": "success"}, {}, {}, lambda t, n: "", lambda t: "")[0].task_id
        != "resolve_source"
    )


def test_the_summarys_xcom_is_small_and_says_what_slack_and_the_verdict_need():
    """L5: the XCom carried every JUnit case of every suite, megabytes a night."""
    import dataclasses

    base = typed(results_for(before=typed(results_for())))
    suites = [job.task.task_id for job in PLAN.cells[0].tests[:3]]
    many = {t: {f"tests/test_big.py::test_case[{i:05d}]": "failed" for i in range(2000)} for t in suites}
    new = tuple(f"{t}::{c}" for t, cs in many.items() for c in cs)
    non = dataclasses.replace(
        base.night_over_night, cases=dataclasses.replace(base.night_over_night.cases, new_failures=new)
    )
    full = dataclasses.replace(base, cases={**base.cases, **many}, night_over_night=non)
    xcom = full.for_xcom()
    assert len(json.dumps(full.to_json())) > 200_000  # results.json keeps all 6000
    # The XCom does not grow with the cases: only the 20 named per list.
    assert len(json.dumps(xcom)) - len(json.dumps(base.for_xcom())) < 5_000
    short = Results.from_json(json.loads(json.dumps(xcom)))
    assert slack_message(short, "S0OPS") == slack_message(full, "S0OPS")  # what Slack says is the same
    assert (short.passed, short.total, short.success) == (full.passed, full.total, full.success)
    assert short.night_over_night.case_count("new_failures") == 6000
    assert "6000 test cases" in json.dumps(slack_message(short, None))


def test_a_night_whose_only_blemish_is_a_suite_with_no_tests_is_not_a_failure():
    """L4: a no_tests skip alone posted "Failed ❌" with "Failed Jobs (0):" and turned the
    verdict red naming no failed job."""
    rows = [
        {"task_id": f"{G}.build_framework", "job": "vllm-framework (amd64)", "kind": "build", "status": "success"},
        {"task_id": f"{G}.tests.e2e_2gpu", "job": "vllm-amd64-e2e_2gpu", "kind": "test", "status": "skipped"},
    ]
    results = typed({**results_for(), "rows": rows})
    assert results.success and results.skipped == 1
    message = json.dumps(slack_message(results, None), ensure_ascii=False)
    assert "Success ✅" in message and "Failed Jobs" not in message
    assert "1 skipped" in message and "vllm-amd64-e2e_2gpu" in message
    failed = typed(
        {**results_for(), "rows": [*rows, {**rows[0], "task_id": "x", "job": "Build x", "status": "failed"}]}
    )
    assert not failed.success and "Failed Jobs (1)" in json.dumps(slack_message(failed, None), ensure_ascii=False)


def three_root_failures():
    """Issue 14's night: two broken builds and one failing suite, and the 14 jobs after
    the builds that never ran (`upstream_failed`)."""
    _, records = fixed_outcomes()
    states = {r["task_id"]: "success" for r in results_for()["rows"]}
    states[f"{G}.tests.unit"] = "failed"  # its record: failed, class test
    for task in ("sglang_arm64.build_framework", "vllm_arm64.build_runtime"):
        states[task] = "failed"
        records[task] = record(task, "failed", failure_class="build")
    for task in states:
        cell, _, local = task.partition(".")
        if (cell == "sglang_arm64" and local != "build_framework") or (
            cell == "vllm_arm64" and local.startswith(("push_runtime", "tests."))
        ):
            states[task] = "upstream_failed"
    return typed(results_for(states_records=(states, records)))


def test_the_headline_counts_passed_failed_and_not_run_apart():
    """Issue 14.4: '37/54 jobs passed' counted the 14 jobs that never ran as not passed."""
    night = three_root_failures()
    assert (night.passed, night.failed, night.not_run, night.skipped, night.total) == (37, 3, 14, 0, 54)
    assert "**Summary: 37/54 jobs passed, 3 failed, 14 not run**" in to_markdown(night)
    assert slack_message(night, None)["text"].splitlines()[1] == "Summary: 37/54 jobs passed, 3 failed, 14 not run"
    # Every job is counted once: the fixed outcomes have a skipped suite and a job with no state.
    mixed = typed(results_for())
    assert headline(mixed) == "41/54 jobs passed, 3 failed, 9 not run, 1 skipped"
    assert headline(typed(all_green())) == "54/54 jobs passed"  # the original's words when all passed
    assert results_for()["not_run"] == 9 and results_for()["failed"] == 3


def test_slack_names_the_root_failures_and_counts_what_did_not_run_on_one_line():
    """Issue 14.3: 'Failed Jobs (17)' listed the 14 upstream_failed jobs among the 3 failures."""
    night = three_root_failures()
    blocks = [b["text"]["text"] for b in slack_message(night, None)["blocks"] if b["type"] == "section"]
    failed = blocks.index("*Failed Jobs (3):*\n• vllm-amd64-unit (test)\n• Build vllm (arm64) (build)\n"
                          "• sglang-framework (arm64) (build)")  # fmt: skip
    assert blocks[failed + 1] == "14 jobs not run: their build failed"
    mixed = [b["text"]["text"] for b in slack_message(typed(results_for()), None)["blocks"][1:3]]
    assert mixed[1] == "9 jobs not run (8: their build failed; 1: never started)"
    # However long the list of failures, cut to Slack's limit, the line stays whole.
    many = typed(results_for(states_records=many_failures()))
    sections = [b["text"]["text"] for b in slack_message(many, None)["blocks"] if b["type"] == "section"]
    cut = next(i for i, text in enumerate(sections) if text.startswith("*Failed Jobs (44):*"))
    assert "more lines in <http://ui/run|the full table>" in sections[cut]
    assert sections[cut + 1] == "9 jobs not run (8: their build failed; 1: never started)"


def many_failures():
    """Every job that ran in the fixed outcomes failed, each with a long error class name."""
    states, records = fixed_outcomes()
    for task, state in states.items():
        if state == "success":
            states[task] = "failed"
            records[task] = record(task, "failed", failure_class="infra" + "x" * 80)
    return states, records


def test_the_table_keeps_every_row_and_names_what_stopped_a_job():
    night = three_root_failures()
    md = to_markdown(night)
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + 54
    by = {r.task_id: r for r in night.rows}
    assert by["sglang_arm64.tests.unit"].blocked_by == ("sglang_arm64.build_framework",)
    assert by["vllm_arm64.push_runtime_acr"].blocked_by == ("vllm_arm64.build_runtime",)
    assert (
        "| sglang-arm64-unit (collect only) | upstream_failed | N/A | N/A | N/A | N/A | upstream: sglang-framework (arm64) |"
        in md
    )


def test_the_verdict_names_the_root_failures():
    from include.nightly_ci.report.markdown import verdict_text

    assert verdict_text(three_root_failures()) == (
        "37/54 jobs passed, 3 failed, 14 not run; failed: vllm-amd64-unit (test), Build vllm (arm64) (build), "
        "sglang-framework (arm64) (build); 14 jobs not run: their build failed"
    )


def test_night_over_night_counts_the_root_failures_not_the_jobs_they_stopped():
    """Issue 14.3: the night-over-night lines in Slack named the 14 jobs that did not run
    as new failures, burying the 3 that failed."""
    night = typed(results_for(before=typed(all_green()), states_records=None))
    assert set(night.night_over_night.jobs.new_failures) == {
        f"{G}.tests.unit",
        f"{G}.tests.e2e_2gpu",
        "sglang_arm64.build_framework",
    }
    again = typed(results_for(before=night))
    assert "sglang_arm64.tests.unit" not in again.night_over_night.jobs.still_failing
    assert "sglang_arm64.build_framework" in again.night_over_night.jobs.still_failing
