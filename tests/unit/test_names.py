"""Tag-safe run ids and the name rules."""

from __future__ import annotations

import pytest

from include.nightly_ci.names import GIT_REF_RE, TAG_RE, tag_safe_run_id


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("scheduled__2026-11-28T08:00:00+00:00", "scheduled-20261128T080000Z"),
        ("backfill__2026-11-25T08:00:00+00:00", "backfill-20261125T080000Z"),
        ("manual__2026-11-28T13:09:47.123456+00:00", "manual-20261128T130947.123456Z"),
        ("asset_triggered__2026-11-28T08:00:00+00:00", "asset-triggered-20261128T080000Z"),
        ("my-run_1", "my-run_1"),
    ],
)
def test_airflow_run_ids(run_id, expected):
    assert tag_safe_run_id(run_id) == expected


@pytest.mark.parametrize(
    "run_id",
    ["manual__2026-11-28T13:09:47+00:00", "api run: nightly #4 (retry)", "x" * 300, "ÜNICODE/run", "-.-", "a:b", "a+b"],
)
def test_any_run_id_makes_a_valid_stable_tag(run_id):
    safe = tag_safe_run_id(run_id)
    assert TAG_RE.fullmatch(f"nightly-trtllm-arm64-run-{safe}")
    assert len(safe) <= 48
    assert tag_safe_run_id(run_id) == safe  # the same on every retry of that run


def test_distinct_run_ids_never_share_a_tag():
    ids = ["a:b", "a+b", "a b", "a/b", "manual__2026-11-28T08:00:00+01:00", "manual__2026-11-28T07:00:00+00:00"]
    assert len({tag_safe_run_id(i) for i in ids}) == len(ids)


@pytest.mark.parametrize(
    ("chosen", "airflows"),
    [
        ("scheduled-20261129T080000Z", "scheduled__2026-11-29T08:00:00+00:00"),
        ("manual-20261129T130947.123456Z", "manual__2026-11-29T13:09:47.123456+00:00"),
        ("backfill-20261125T080000Z", "backfill__2026-11-25T08:00:00+00:00"),
        ("asset-triggered-20261128T080000Z", "asset_triggered__2026-11-28T08:00:00+00:00"),
    ],
)
def test_a_chosen_run_id_never_takes_an_airflow_runs_folder_and_tags(chosen, airflows):
    """M4: a REST trigger with dag_run_id "scheduled-20261129T080000Z" wrote into that
    night's folder and pushed its run tags."""
    assert tag_safe_run_id(chosen) != tag_safe_run_id(airflows)
    assert TAG_RE.fullmatch(f"nightly-trtllm-arm64-run-{tag_safe_run_id(chosen)}")


def test_a_chosen_run_id_never_takes_a_sanitised_ones_form():
    """A sanitised id ends in 8 hex digits of its hash: a chosen id of that shape is hashed too."""
    sanitised = tag_safe_run_id("api run")
    assert tag_safe_run_id(sanitised) != sanitised


@pytest.mark.parametrize("ref", ["main", "release/1.2", "v0.6.1", "0fcaac08398c", "feature_x-y.z"])
def test_git_refs_accepted(ref):
    assert GIT_REF_RE.fullmatch(ref)


@pytest.mark.parametrize("ref", ["-x", "a..b", "main;rm", "a b", "$(id)", "x.lock", "end/", "a//b", "`id`", ""])
def test_git_refs_refused(ref):
    assert not GIT_REF_RE.fullmatch(ref)
