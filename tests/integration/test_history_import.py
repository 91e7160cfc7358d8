"""`python -m include.nightly_ci history import`: nights already in the artifact store
(results.json, JUnit, reruns) brought into a real history store, oldest first, once."""

from __future__ import annotations

import json
import subprocess
import sys

from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.plan import JUNIT_FILE, load_plan
from include.nightly_ci.report.results import Results, Row
from tests.services import airflow_env, write_config

UNIT = "vllm_amd64.tests.unit"


def junit(cases: dict[str, str]) -> str:
    body = {"passed": "", "failed": "<failure message='x'/>", "skipped": "<skipped/>"}
    items = "".join(
        f"<testcase classname='{t.split('::')[0]}' name='{t.split('::')[1]}' time='1.5'>{body[o]}</testcase>"
        for t, o in cases.items()
    )
    return f"<testsuites><testsuite name='pytest' tests='{len(cases)}'>{items}</testsuite></testsuites>"


def write_run(base, plan, n: int, cases: dict[str, str], reruns: dict[str, str] | None = None) -> str:
    run_id = f"scheduled__2026-11-{n:02d}T08:00:00+00:00"
    folder = plan.store.run_folder(run_id)
    bad = tuple(t for t, o in cases.items() if o == "failed")
    row = Row(UNIT, "vllm-amd64-unit", "test", "failed" if bad else "success", tests={"tests": len(cases)},
              failure_class="test" if bad else None, failed_cases=bad)  # fmt: skip
    results = Results(plan.dag_id, run_id, f"2026-11-{n:02d}T08:00:00+00:00", "http://ui/run", rows=(row,),
                      cases={UNIT: cases}, commit=f"{n:040x}")  # fmt: skip
    (folder / "vllm_amd64" / "test-unit").mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results.to_json()))
    (folder / "vllm_amd64" / "test-unit" / JUNIT_FILE).write_text(junit(cases))
    if reruns:
        (folder / "vllm_amd64" / "reruns" / "unit" / "1").mkdir(parents=True)
        (folder / "vllm_amd64" / "reruns" / "unit" / "1" / JUNIT_FILE).write_text(junit(reruns))
    return run_id


def history_import(config, db, *extra: str) -> subprocess.CompletedProcess:
    conn = json.dumps({"conn_type": "sqlite", "host": str(db)})
    return subprocess.run(
        [sys.executable, "-m", "include.nightly_ci", "history", "import", str(config), *extra],
        env=airflow_env({"AIRFLOW_CONN_NIGHTLY_CI_HISTORY": conn}), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_runs_in_the_store_are_imported_oldest_first_and_once(tmp_path):
    config = write_config(tmp_path / "nightly.yaml", f"artifacts: {{base: {tmp_path / 'artifacts'}}}\n")
    plan = load_plan(str(config))
    flaky = "tests.unit.test_router::test_flaky"
    first = write_run(tmp_path, plan, 1, {flaky: "failed", "tests.unit.test_router::test_ok": "passed"},
                      reruns={flaky: "passed"})  # fmt: skip
    second = write_run(tmp_path, plan, 2, {flaky: "failed", "tests.unit.test_router::test_ok": "passed"},
                       reruns={flaky: "passed"})  # fmt: skip
    (plan.store.run_folder("scheduled__2026-11-03T08:00:00+00:00")).mkdir(parents=True)
    (plan.store.run_folder("scheduled__2026-11-03T08:00:00+00:00") / "results.json").write_text('{"run_id": ')
    db = tmp_path / "history.db"

    proc = history_import(config, db)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("imported")] == [first, second]
    assert "results.json: could not be read" in proc.stdout  # the cut-short one, told and skipped
    assert "2 run(s) imported, 0 already recorded" in proc.stdout

    store = HistoryStore(f"sqlite:///{db}")
    try:
        assert store.recorded_runs(plan.dag_id) == {first, second}
        # Flaky on both nights: the second night's rules saw the first (flaky_nights: 2).
        assert [(e.pattern, e.origin) for e in store.quarantine(plan.dag_id)] == [(flaky, "auto")]
        key = ("vllm_amd64", "unit", flaky)
        assert store.previous_outcomes(plan.dag_id, "nightly", "2026-11-02T00:00:00+00:00", [key]) == {key: "flaky"}
    finally:
        store.close()

    again = history_import(config, db)
    assert again.returncode == 0 and "0 run(s) imported, 2 already recorded" in again.stdout, again.stdout


def test_a_history_connection_of_the_wrong_kind_is_told_by_name(tmp_path):
    config = write_config(tmp_path / "nightly.yaml", f"artifacts: {{base: {tmp_path / 'artifacts'}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "include.nightly_ci", "history", "migrate", str(config)],
        env=airflow_env({"AIRFLOW_CONN_NIGHTLY_CI_HISTORY": json.dumps({"conn_type": "http", "host": "x"})}),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "history connection 'nightly_ci_history' is of type 'http'" in proc.stderr
