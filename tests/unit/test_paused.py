"""`python -m include.nightly_ci paused`: what the scheduler does with each DAG of the
config once `make up` starts, decided from what the metadata database holds (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.nightly_ci.cli.paused import ASSET, TIME, DagState, outlook

NOW = datetime(2026, 11, 30, 9, 16, tzinfo=UTC)
NIGHT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
TOMORROW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def nightly(is_paused: bool | None, when: datetime | None = NIGHT, *, catchup: bool = False) -> DagState:
    return DagState("nightly_ci", TIME, is_paused, when, when, nightly=True, catchup=catchup)


def test_a_dag_not_in_the_database_starts_paused():
    assert outlook(nightly(None, None), NOW) == (
        "nightly_ci: not in the database yet: it starts paused (new DAGs are created paused)"
    )


def test_a_dag_not_in_the_database_says_so_when_new_dags_start_unpaused():
    state = DagState("nightly_ci", TIME, None, None, None, nightly=True, created_paused=False)
    assert outlook(state, NOW).startswith("nightly_ci: not in the database yet: it starts UNPAUSED")


def test_a_paused_nightly_runs_nothing_and_says_what_unpausing_does():
    assert outlook(nightly(True), NOW) == (
        "nightly_ci: paused: nothing runs until you unpause it; unpausing queues its latest night"
        " at once (catchup off), then one a night"
    )


def test_a_paused_nightly_with_catchup_says_every_missed_night_runs():
    line = outlook(nightly(True, datetime(2026, 11, 20, 8, 0, tzinfo=UTC), catchup=True), NOW)
    assert "unpausing queues every night since 2026-11-20 08:00 UTC at once (catchup on)" in line


def test_a_paused_retention_dag_runs_nothing():
    state = DagState("nightly_ci_retention", TIME, True, NIGHT, NIGHT)
    assert outlook(state, NOW) == (
        "nightly_ci_retention: paused: nothing runs until you unpause it; unpausing queues its latest"
        " run at once, then one at each time of its schedule"
    )


def test_an_unpaused_nightly_due_now_is_queued_at_once_and_says_how_to_stop_it():
    assert outlook(nightly(False), NOW) == (
        "nightly_ci: UNPAUSED: the scheduler queues its run for 2026-11-30 08:00 UTC at once;"
        " to stop it: `airflow dags pause nightly_ci`, or the UI's toggle"
    )


def test_an_unpaused_nightly_with_catchup_due_now_says_the_missed_nights_follow():
    line = outlook(nightly(False, datetime(2026, 11, 20, 8, 0, tzinfo=UTC), catchup=True), NOW)
    assert "queues its run for 2026-11-20 08:00 UTC at once, then every later night up to now (catchup on);" in line


def test_an_unpaused_nightly_due_exactly_now_is_queued_at_once():
    assert "queues its run for 2026-11-30 08:00 UTC at once" in outlook(nightly(False), NIGHT)


def test_an_unpaused_nightly_not_due_yet_says_when_its_next_run_comes():
    assert outlook(nightly(False, TOMORROW), NOW) == (
        "nightly_ci: UNPAUSED: the scheduler queues its next run at 2026-12-01 08:00 UTC (in 22 h 44 min);"
        " to stop it: `airflow dags pause nightly_ci`, or the UI's toggle"
    )


def test_an_unpaused_dag_whose_run_is_for_an_earlier_date_names_both():
    state = DagState("nightly_ci", TIME, False, NIGHT, TOMORROW, nightly=True)  # a data interval's start
    assert "the scheduler queues its next run, for 2026-11-30 08:00 UTC, at 2026-12-01 08:00 UTC (in 22 h 44 min)" in (
        outlook(state, NOW)
    )


def test_an_unpaused_dag_due_within_the_hour_says_minutes():
    soon = datetime(2026, 11, 30, 9, 50, tzinfo=UTC)
    assert "queues its next run at 2026-11-30 09:50 UTC (in 34 min);" in outlook(nightly(False, soon), NOW)


def test_an_unpaused_dag_with_no_next_run_in_the_database_queues_none():
    line = outlook(nightly(False, None), NOW)
    assert line.startswith("nightly_ci: UNPAUSED: the database holds no next run for it")
    assert "`airflow dags pause nightly_ci`" in line


def test_an_unpaused_culprit_finder_runs_on_the_nightlys_regressions():
    state = DagState("nightly_ci_culprit", ASSET, False)
    assert outlook(state, NOW) == (
        "nightly_ci_culprit: UNPAUSED: it runs when the nightly announces regressions;"
        " to stop it: `airflow dags pause nightly_ci_culprit`, or the UI's toggle"
    )


def test_a_paused_culprit_finder_runs_nothing():
    assert outlook(DagState("nightly_ci_culprit", ASSET, True), NOW) == (
        "nightly_ci_culprit: paused: nothing runs until you unpause it; unpaused, it runs when the"
        " nightly announces regressions"
    )


@pytest.mark.parametrize("is_paused", [None, True, False])
def test_every_line_names_its_dag_first(is_paused):
    assert outlook(nightly(is_paused), NOW).startswith("nightly_ci: ")


def test_the_config_names_its_dags_and_the_culprit_finder_even_when_not_announced_to(tmp_path):
    from include.nightly_ci.cli.paused import dags_of
    from include.nightly_ci.plan import load_plan
    from tests.services import ROOT, write_config

    plan = load_plan(str(ROOT / "dev" / "local.yaml"))
    assert dags_of(plan) == [("nightly_ci", TIME), ("nightly_ci_retention", TIME), ("nightly_ci_culprit", ASSET)]
    off = load_plan(str(write_config(tmp_path / "off.yaml", "culprit: {enabled: false}\n")))
    assert dags_of(off) == dags_of(plan)  # dags/nightly_ci_culprit.py makes it all the same
