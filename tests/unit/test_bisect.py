"""The k-way bisection, pure: every culprit position in 16 and 64 commits is found within
ceil(log_{k+1} N) rounds, never building a commit twice; verdicts from R runs."""

from __future__ import annotations

import math

import pytest

from include.nightly_ci.culprit.bisect import (
    BAD,
    FLAKY,
    GOOD,
    Search,
    candidate_verdict,
    max_rounds,
    run_verdict,
)


def bisect(n: int, culprit: int, k: int) -> tuple[str, int, int]:
    """Search N commits whose first bad one is CULPRIT (an index); (found, rounds, builds)."""
    commits = tuple(f"c{i:03d}" for i in range(n))
    search, rounds, built = Search("good", commits), 0, set[str]()
    while not search.done:
        picks = search.candidates(k)
        assert picks and not (set(picks) & built), (picks, built)  # progress, and no commit built twice
        built |= set(picks)
        search = search.narrow({c: BAD if commits.index(c) >= culprit else GOOD for c in picks})
        rounds += 1
    assert search.good == (commits[culprit - 1] if culprit else "good")  # its parent, known good
    return search.bad, rounds, len(built)


@pytest.mark.parametrize("n", [1, 2, 3, 16, 17, 64, 100])
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_every_planted_culprit_is_found_within_the_round_bound(n, k):
    for culprit in range(n):
        found, rounds, builds = bisect(n, culprit, k)
        assert found == f"c{culprit:03d}"
        assert rounds <= max_rounds(n, k), (culprit, rounds)
        assert builds <= k * max_rounds(n, k)
        if k == 1:
            assert builds <= math.ceil(math.log2(n)) if n > 1 else builds == 0


def test_the_bounds_of_the_issue():
    assert [max_rounds(n, 1) for n in (16, 64)] == [4, 6]
    assert [max_rounds(n, 3) for n in (16, 64)] == [2, 3]
    assert max_rounds(1, 3) == 0


def test_candidates_cut_the_unknown_part_evenly():
    search = Search("g", tuple(f"c{i}" for i in range(16)))
    assert search.candidates(1) == ("c7",)
    assert search.candidates(3) == ("c3", "c7", "c11")
    assert Search("g", ("c0", "c1")).candidates(3) == ("c0",)  # never the known-bad last one
    with pytest.raises(ValueError, match="k must be at least 1"):
        search.candidates(0)


def test_narrowing_keeps_the_part_between_the_last_good_and_the_first_bad():
    search = Search("g", tuple(f"c{i}" for i in range(16)))
    assert search.narrow({"c3": GOOD, "c7": BAD, "c11": BAD}) == Search("c3", ("c4", "c5", "c6", "c7"))
    assert search.narrow({"c3": BAD, "c7": BAD, "c11": BAD}) == Search("g", ("c0", "c1", "c2", "c3"))
    # A good after a bad (a test that fails, then passes again) can't move the start past the first bad.
    assert search.narrow({"c3": BAD, "c7": GOOD}) == Search("g", ("c0", "c1", "c2", "c3"))
    with pytest.raises(ValueError, match="outside the search"):
        search.narrow({"elsewhere": BAD})


def test_verdicts_of_r_runs():
    assert [run_verdict(f, 3) for f in range(4)] == [GOOD, FLAKY, BAD, BAD]
    assert candidate_verdict({"a": GOOD, "b": FLAKY}) == FLAKY
    assert candidate_verdict({"a": FLAKY, "b": BAD}) == BAD
    assert candidate_verdict({"a": GOOD}) == GOOD
    with pytest.raises(ValueError, match="at least 2"):
        run_verdict(0, 1)
