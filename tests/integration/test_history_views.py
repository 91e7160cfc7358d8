"""The triage page's reads over the history store (include/nightly_ci/history/views.py),
on SQLite in a file and on Postgres from Debian's packages: the matrix, a suite's and a
test's history (with its failure streak and commit range), and one night's lists."""

from __future__ import annotations

import pytest

from include.nightly_ci.history import night_views, views
from include.nightly_ci.history.records import (
    FLAKY,
    FROM_CONFIG,
    REGRESSION,
    STILL_FAILING,
    CaseRecord,
    NightRecord,
    QuarantineEntry,
    SuiteRecord,
)
from include.nightly_ci.history.store import HistoryStore

DAG = "nightly_ci"
CELLS = ("vllm_amd64", "sglang_arm64")


def night(n: int, kind: str = "nightly") -> NightRecord:
    return NightRecord(DAG, f"scheduled__2026-11-{n:02d}", f"2026-11-{n:02d}T08:00:00+00:00", kind,
                       f"{n:02d}" * 20, f"http://ui/dags/{DAG}/runs/scheduled__2026-11-{n:02d}", True)  # fmt: skip


def suite(cell: str, status: str = "success", outcome: str | None = "passed", tests: int | None = 3) -> SuiteRecord:
    return SuiteRecord(cell, "unit", f"{cell}.tests.unit", status, outcome, None, f"reg/{cell}@sha256:" + "a" * 64,
                       "gpu-1", 2, tests, 12.5)  # fmt: skip


def case(cell: str, test: str, outcome: str = "passed", **extra) -> CaseRecord:
    return CaseRecord(cell, "unit", test, outcome, 0.1, **extra)


def write(store: HistoryStore, n: int, amd: dict[str, str], arm: dict[str, str] | None = None, **flags) -> None:
    """Night N: vllm_amd64's cases AMD (test -> outcome, or outcome:verdict), sglang_arm64's ARM
    (None: its suite did not run)."""
    suites, rows = [], []
    for cell, cases in ((CELLS[0], amd), (CELLS[1], arm)):
        if cases is None:
            suites.append(suite(cell, "upstream_failed", None, None))
            continue
        failed = any(o.startswith("failed") for o in cases.values())
        suites.append(suite(cell, "failed" if failed else "success", "failed" if failed else "passed"))
        for test, outcome in cases.items():
            outcome, _, verdict = outcome.partition(":")
            extra: dict[str, object] = {"verdict": verdict or None, "quarantined": test in flags.get("quarantined", ())}
            if verdict == FLAKY:
                extra["reruns"] = ("failed", "passed")
            rows.append(case(cell, test, outcome, **extra))
    store.write_night(night(n), suites, rows)


@pytest.fixture
def nights(store):
    """Five nights: t::broken breaks on night 3 (a regression, still failing after), t::fixed
    fails on nights 1-3 of vllm_amd64 and passes from night 4, t::flaky is flaky on night 5,
    t::muted fails quarantined on night 5; sglang_arm64 did not run on night 2."""
    arm = dict.fromkeys(("t::broken", "t::fixed", "t::flaky", "t::muted"), "passed")
    ok = {**arm, "t::fixed": "failed:still_failing"}
    write(store, 1, ok, arm)
    write(store, 2, ok, None)
    broken = {**ok, "t::broken": "failed:regression"}
    write(store, 3, broken, arm)
    write(store, 4, {**broken, "t::broken": "failed:still_failing", "t::fixed": "passed"}, arm)
    last = {**broken, "t::broken": "failed:still_failing", "t::fixed": "passed", "t::flaky": "failed:flaky",
            "t::muted": "failed"}  # fmt: skip
    write(store, 5, last, {**arm, "t::muted": "failed"}, quarantined=("t::muted",))
    store.write_night(
        night(6, kind="manual"), [suite(CELLS[0], "failed", "failed")], [case(CELLS[0], "t::x", "failed")]
    )
    store.add_quarantine(DAG, [QuarantineEntry("t::mut*", "@alice", "GPU <flaky>", "", None, FROM_CONFIG,
                                               night(4).night)])  # fmt: skip
    return store


def test_the_matrix_is_the_worst_outcome_of_each_cell_per_night_newest_first(nights):
    matrix = views.matrix(nights, DAG, "nightly", 4)
    assert [n.run_id for n in matrix.nights] == [night(n).run_id for n in (5, 4, 3, 2)]  # manual night 6: not here
    assert matrix.cells == CELLS
    got = {(c, n.run_id[-2:]): matrix.square(c, n.run_id).state for c in CELLS for n in matrix.nights}
    assert got == {
        ("vllm_amd64", "05"): views.FAILED,
        ("vllm_amd64", "04"): views.FAILED,
        ("vllm_amd64", "03"): views.FAILED,
        ("vllm_amd64", "02"): views.FAILED,  # t::fixed
        ("sglang_arm64", "05"): views.FLAKY,  # only a quarantined failure
        ("sglang_arm64", "04"): views.PASSED,
        ("sglang_arm64", "03"): views.PASSED,
        ("sglang_arm64", "02"): views.NOT_RUN,
    }
    assert matrix.nights[0].commit == "05" * 20 and matrix.nights[0].run_url.endswith("scheduled__2026-11-05")
    square = matrix.square("vllm_amd64", night(5).run_id)
    assert (square.failed, square.soft) == (1, 2)  # t::broken; t::flaky and t::muted (quarantined)
    assert views.matrix(nights, "other", "nightly", 14).nights == ()


def test_a_suites_history_has_status_counts_image_and_host(nights):
    rows = views.suite_history(nights, DAG, "nightly", "sglang_arm64", "unit", 14)
    assert [r.run_id[-2:] for r in rows] == ["05", "04", "03", "02", "01"]
    first = rows[0]
    assert (first.state, first.status, first.passed, first.failed, first.flaky, first.quarantined) == (
        views.FLAKY, "failed", 3, 0, 0, 1)  # fmt: skip
    assert first.image == "reg/sglang_arm64@sha256:" + "a" * 64 and first.host == "gpu-1" and first.try_number == 2
    assert rows[3].state == views.NOT_RUN and rows[3].tests is None
    assert views.suite_history(nights, DAG, "nightly", "nope", "unit", 14) == ()


def test_a_tests_history_has_its_streak_and_the_commits_around_it(nights):
    hist = views.test_history(nights, DAG, "nightly", "t::broken", 14)
    assert hist is not None
    assert hist is not None
    assert [n.run_id[-2:] for n in hist.nights] == ["05", "04", "03", "02", "01"]
    amd = {r.run_id[-2:]: (r.outcome, r.verdict) for r in hist.runs if r.cell == "vllm_amd64"}
    assert amd["03"] == ("failed", REGRESSION) and amd["05"] == ("failed", STILL_FAILING) and amd["01"][0] == "passed"
    assert hist.first_bad is not None and hist.last_good is not None
    assert (hist.first_bad.run_id[-2:], hist.last_good.run_id[-2:]) == ("03", "02")
    assert (hist.first_bad.commit, hist.last_good.commit) == ("03" * 20, "02" * 20)
    fixed = views.test_history(nights, DAG, "nightly", "t::fixed", 14)
    assert fixed is not None
    assert fixed.first_bad is None and fixed.last_good is None  # passing now: no streak
    flaky = views.test_history(nights, DAG, "nightly", "t::flaky", 14)
    assert flaky is not None
    assert flaky.first_bad is None  # a flaky failure is not a streak
    assert [r.reruns for r in flaky.runs if r.outcome == "failed"] == [("failed", "passed")]
    assert views.test_history(nights, DAG, "nightly", "t::unknown", 14) is None
    # Only the last N nights are shown, but the streak is found over all of them.
    short = views.test_history(nights, DAG, "nightly", "t::broken", 2)
    assert short is not None
    assert short.first_bad is not None and short.first_bad.run_id[-2:] == "03"
    assert [n.run_id[-2:] for n in short.nights] == ["05", "04"]


def test_a_nights_lists(nights):
    lists = night_views.night_lists(nights, DAG, "nightly", None)  # the latest
    assert lists is not None
    assert lists is not None and lists.night.run_id == night(5).run_id

    def names(rows):
        return sorted((r.cell, r.test_id) for r in rows)

    assert names(lists.new_failures) == []  # t::broken failed on night 4 too; flaky and muted are listed apart
    assert names(lists.still_failing) == [("vllm_amd64", "t::broken")]
    assert names(lists.flaky) == [("vllm_amd64", "t::flaky")]
    assert names(lists.quarantined) == [("sglang_arm64", "t::muted"), ("vllm_amd64", "t::muted")]
    assert [e.pattern for e in lists.entries] == ["t::mut*"]
    night3 = night_views.night_lists(nights, DAG, "nightly", night(3).run_id)
    assert night3 is not None
    assert names(night3.new_failures) == [("vllm_amd64", "t::broken")]
    assert names(night3.still_failing) == [("vllm_amd64", "t::fixed")]
    night4 = night_views.night_lists(nights, DAG, "nightly", night(4).run_id)
    assert night4 is not None
    assert names(night4.fixed) == [("vllm_amd64", "t::fixed")]
    assert night4.new_failures == () and names(night4.still_failing) == [("vllm_amd64", "t::broken")]
    row = night4.still_failing[0]
    assert (row.task_id, row.try_number, row.image) == ("vllm_amd64.tests.unit", 2, "reg/vllm_amd64@sha256:" + "a" * 64)
    assert night_views.night_lists(nights, DAG, "nightly", "no-such-run") is None
