"""The history's rules, pure: flaky or regression, what the quarantine mutes and when an
entry comes, goes or expires, and test-count drift."""

from __future__ import annotations

from datetime import date

from include.nightly_ci.history import rules
from include.nightly_ci.history.records import (
    FLAKY,
    FROM_CONFIG,
    FROM_FLAKES,
    REGRESSION,
    STILL_FAILING,
    QuarantineEntry,
)

NIGHT = "2026-11-20T08:00:00+00:00"


def entry(pattern: str, expires: date | None = None, origin: str = FROM_CONFIG, **extra) -> QuarantineEntry:
    return QuarantineEntry(pattern, "@alice", "why", "https://issues/1", expires, origin, **extra)


def test_a_case_that_passed_any_rerun_is_flaky_whatever_its_past():
    assert rules.verdict(("failed", "passed", "failed"), None) == FLAKY
    assert rules.verdict(("passed",), "failed") == FLAKY


def test_a_case_failing_every_rerun_is_a_regression_unless_it_failed_the_night_before():
    assert rules.verdict(("failed", "failed", "error"), "passed") == REGRESSION
    assert rules.verdict(("failed",), None) == REGRESSION  # a new test, failing
    assert rules.verdict((), "skipped") == REGRESSION  # not rerun (too many, or reruns off)
    assert rules.verdict(("failed",), "error") == STILL_FAILING
    assert rules.verdict((), "failed") == STILL_FAILING


def test_only_cases_that_did_not_fail_the_night_before_are_rerun():
    failed = [("c", "s", "a"), ("c", "s", "b"), ("c", "s", "new")]
    assert rules.newly_failing(failed, {("c", "s", "a"): "failed", ("c", "s", "b"): "passed"}) == [
        ("c", "s", "b"),
        ("c", "s", "new"),
    ]
    # Found flaky the night before: it did not fail for good then, so it is rerun again.
    assert rules.newly_failing([("c", "s", "f")], {("c", "s", "f"): FLAKY}) == [("c", "s", "f")]
    assert rules.verdict(("failed",) * 3, FLAKY) == REGRESSION


def test_an_entry_mutes_until_its_expiry_day_included_and_not_once_released():
    e = entry("tests.unit.test_x::test_*", expires=date(2026, 11, 20))
    assert rules.muting("tests.unit.test_x::test_a[1]", [e], NIGHT) == e
    assert rules.muting("tests.unit.test_y::test_a", [e], NIGHT) is None
    assert rules.muting("tests.unit.test_x::test_a", [e], "2026-11-21T08:00:00+00:00") is None
    assert rules.muting("tests.unit.test_x::test_a", [entry("*", released=NIGHT)], NIGHT) is None


def test_config_entries_are_added_once_released_when_removed_and_expired_ones_told():
    kept, old, new = entry("a::*"), entry("b::*", expires=date(2026, 11, 1)), entry("c::*")
    stored = [
        entry("a::*", added=NIGHT),
        entry("b::*", expires=date(2026, 11, 1), added=NIGHT),
        entry("gone::*", added=NIGHT),
        entry("auto::t", origin=FROM_FLAKES, added=NIGHT),  # automatic entries are not the config's
    ]
    changes = rules.config_changes([kept, old, new], stored, NIGHT)
    assert [e.pattern for e in changes.added] == ["c::*"]
    assert [(e.pattern, e.released_why) for e in changes.released] == [("gone::*", "removed from the config")]
    assert [e.pattern for e in changes.expired] == ["b::*"]


def test_a_config_entry_released_for_clean_nights_stays_released_until_edited():
    released = entry("a::*", expires=date(2026, 12, 31), released=NIGHT, released_why="7 clean nights in a row")
    same = entry("a::*", expires=date(2026, 12, 31))
    assert rules.config_changes([same], [released], NIGHT).added == ()
    renewed = entry("a::*", expires=date(2027, 1, 31))
    assert [e.expires for e in rules.config_changes([renewed], [released], NIGHT).added] == [date(2027, 1, 31)]


def test_flaky_on_enough_nights_of_the_window_is_quarantined_once():
    active = [entry("covered::*")]
    added = rules.flaky_entries(
        {"t::twice": 2, "t::once": 1, "covered::x": 5}, active, nights=2, window=14, owner="@ops", night=NIGHT
    )
    assert [(e.pattern, e.origin, e.owner) for e in added] == [("t::twice", FROM_FLAKES, "@ops")]
    assert "flaky on 2 of the last 14 nights" in added[0].reason


def test_entries_are_released_after_enough_clean_nights():
    a, b = entry("a::*"), entry("b::*", origin=FROM_FLAKES)
    released = rules.clean_releases([a, b], {"a::*": 7, "b::*": 6}, after=7, night=NIGHT)
    assert [(e.pattern, e.released, e.released_why) for e in released] == [("a::*", NIGHT, "7 clean nights in a row")]


def test_drift_flags_a_suite_whose_count_fell_by_more_than_the_share():
    got = rules.drift({"u": 79, "i": 81, "new": 5, "gone": 0}, {"u": 100, "i": 100, "gone": 10, "zero": 0}, 0.2)
    assert [(d.task_id, d.before, d.now) for d in got] == [("gone", 10, 0), ("u", 100, 79)]
    assert str(got[1]) == "u: 79 tests, 100 the night before (-21%)"
