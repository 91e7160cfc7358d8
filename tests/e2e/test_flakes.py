"""Two real nights of one cell: a test made flaky by a commit (a file in the image decides:
it fails on the suite's run and passes its first rerun) is flaky on the first night, and
the night is not red for it; on the second night it is quarantined, and a commit that
breaks another test makes that one a regression, with its first bad night and the
commits between the last good and the first bad night in the history store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dev.sample_repo import BROKEN_ROUTER, BROKEN_TEST, ROUTER, add_commit, add_flaky_marker, make_repo, nightly_history
from include.nightly_ci.history import findings, views
from include.nightly_ci.history.store import HistoryStore
from include.nightly_ci.names import tag_safe_run_id
from tests.services import run_dag, run_id_of, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CELL = {"frameworks": ["vllm"], "arches": ["amd64"]}
UNIT = "vllm_amd64.tests.unit"
FLAKY = "tests.unit.test_flaky::test_flaky_on_every_other_run"
BROKEN = BROKEN_TEST


def asset_events(name: str) -> dict[str, dict]:
    """The extra of each event of asset NAME in Airflow's database, by the run that sent it."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == name)
        return {str(e.source_run_id): dict(e.extra or {}) for e in session.scalars(query)}


def night(tmp_path, config, date: str) -> tuple[str, dict, str]:
    proc = run_dag(config, logical_date=date, conf=CELL)
    run_id = run_id_of(proc.stdout)
    (tmp_path / f"night-{date[:10]}.log").write_text(proc.stdout)
    folder = tmp_path / "artifacts" / tag_safe_run_id(run_id)
    results = json.loads((folder / "results.json").read_text())
    return run_id, results, (folder / "results.md").read_text()


def test_a_flaky_test_is_flaky_then_quarantined_and_a_broken_one_a_regression(airflow_home, tmp_path):
    repo = tmp_path / "sample.git"
    make_repo(repo, nightly_history(1, datetime.now(UTC)))
    good = add_flaky_marker(repo)
    config = write_config(
        tmp_path / "nightly.yaml",
        f"source: {{repository: {repo}}}\nartifacts: {{base: {tmp_path / 'artifacts'}}}\n",
    )

    # Night 1: the flaky test fails in the suite, passes its first rerun: flaky, not red.
    run_1, results, md = night(tmp_path, config, "2026-11-20T08:00:00+00:00")
    triage = results["triage"]
    assert triage["verdicts"] == {f"{UNIT}::{FLAKY}": "flaky"}, triage
    assert triage["reruns"][f"{UNIT}::{FLAKY}"] == ["passed", "failed", "passed"]
    rows = {r["task_id"]: r for r in results["rows"]}
    assert rows[UNIT]["status"] == "failed" and rows[UNIT]["muted"], rows[UNIT]
    assert results["success"] and triage["history"] == "recorded"
    assert "Flaky (passed a rerun of the same image; not red): 1 test cases" in md

    # Night 2: a commit breaks the round robin; the flaky test is flaky again.
    bad = add_commit(repo, {ROUTER: BROKEN_ROUTER}, "route everything to the first worker")
    run_2, results, md = night(tmp_path, config, "2026-11-21T08:00:00+00:00")
    triage = results["triage"]
    assert triage["verdicts"] == {f"{UNIT}::{FLAKY}": "flaky", f"{UNIT}::{BROKEN}": "regression"}, triage
    assert triage["reruns"][f"{UNIT}::{BROKEN}"] == ["failed"] * 3
    added = triage["quarantine"]["added"]
    assert [(e["pattern"], e["origin"]) for e in added] == [(FLAKY, "auto")], added
    assert "flaky on 2 of the last 14 nights" in added[0]["reason"]
    assert not results["success"]  # the regression makes it red
    assert f"Quarantined tonight: `{FLAKY}`" in md and f"`{BROKEN}`" in md

    # The history knows where it broke: its first bad night, the last good one, their commits.
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        history = views.test_history(store, "nightly_ci", "manual", BROKEN, 14)
        searches = findings.load(store, "nightly_ci")
    finally:
        store.close()
    assert history is not None and history.first_bad is not None and history.last_good is not None
    assert (history.first_bad.run_id, history.first_bad.commit) == (run_2, bad)
    assert (history.last_good.run_id, history.last_good.commit) == (run_1, good)

    # The regression went to the culprit finder: a finding, searching from night 1 to night 2,
    # and one event of the regressions Asset carrying it (night 1 had none: no event).
    assert [(f.nightly_run_id, f.cell, f.suite, f.tests, f.good_commit, f.bad_commit, f.status) for f in searches] == [
        (run_2, "vllm_amd64", "unit", (BROKEN,), good, bad, "searching")
    ]
    events = asset_events("nightly_ci.regressions")
    assert run_1 not in events and [f["tests"] for f in events[run_2]["findings"]] == [[BROKEN]]
    (event,) = events[run_2]["findings"]
    assert event["good"]["run_id"] == run_1 and event["good"]["image"].split("@")[1].startswith("sha256:")
    assert event["bad"]["commit"] == bad
