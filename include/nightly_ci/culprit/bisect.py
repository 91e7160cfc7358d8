"""The k-way bisection over a branch's first-parent commits, pure.

A search holds the commits after the last known good one, oldest first, the last of them
known bad. Each round tests up to K candidates that cut the unknown part into K+1 nearly
equal parts, then keeps the part between the last good candidate and the first bad one:
at most ceil(log_{K+1}(N)) rounds for N commits, and no candidate is ever built twice.

A candidate is BAD when a failing test fails at least 2 of its R runs, GOOD when every
test passes all R, and FLAKY otherwise: a commit is never blamed on one failure in R.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

GOOD, BAD, FLAKY = "good", "bad", "flaky"
BAD_AT = 2  # failures of R runs that make a candidate bad


def run_verdict(failures: int, runs: int) -> str:
    """One test on one candidate: R runs, FAILURES of them failed."""
    if runs < BAD_AT:
        raise ValueError(f"{runs} runs can't tell a flake from a failure: at least {BAD_AT} are needed")
    if failures >= BAD_AT:
        return BAD
    return GOOD if failures == 0 else FLAKY


def candidate_verdict(per_test: Mapping[str, str]) -> str:
    """A candidate over all the finding's tests: bad if any test is, flaky if any is (and
    none bad), good only when every test is."""
    verdicts = set(per_test.values())
    if not verdicts:
        raise ValueError("a candidate with no test run has no verdict")
    return BAD if BAD in verdicts else FLAKY if FLAKY in verdicts else GOOD


def max_rounds(commits: int, k: int) -> int:
    """The most rounds a search of COMMITS commits takes with K candidates a round."""
    return 0 if commits <= 1 else math.ceil(math.log(commits) / math.log(k + 1) - 1e-9)


@dataclass(frozen=True)
class Search:
    """Where the culprit can still be: the commits after GOOD, oldest first, the last bad."""

    good: str
    commits: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.commits:
            raise ValueError(f"no commit after {self.good}: nothing to search")

    @property
    def bad(self) -> str:
        return self.commits[-1]

    @property
    def done(self) -> bool:
        """One commit left: the culprit, to be verified against its parent (GOOD)."""
        return len(self.commits) == 1

    def candidates(self, k: int) -> tuple[str, ...]:
        """Up to K commits cutting the unknown ones (all but the last) into K+1 parts."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        n = len(self.commits)
        picks = sorted({(j * n) // (k + 1) - 1 for j in range(1, k + 1)} - {-1, n - 1})
        return tuple(self.commits[i] for i in picks)

    def narrow(self, verdicts: Mapping[str, str]) -> Search:
        """The part between the last good candidate and the first bad one. Only GOOD and
        BAD verdicts are used: a flaky candidate ends the search before this (see judge)."""
        order = {c: i for i, c in enumerate(self.commits)}
        unknown = set(verdicts) - set(order)
        if unknown:
            raise ValueError(f"verdicts for commits outside the search: {sorted(unknown)}")
        first_bad = min((order[c] for c, v in verdicts.items() if v == BAD), default=len(self.commits) - 1)
        goods = [order[c] for c, v in verdicts.items() if v == GOOD and order[c] < first_bad]
        last_good = max(goods, default=-1)
        good = self.commits[last_good] if last_good >= 0 else self.good
        return Search(good, self.commits[last_good + 1 : first_bad + 1])


def search_of(good: str, first_parent: Sequence[str]) -> Search:
    """The search over FIRST_PARENT (git rev-list --first-parent --reverse GOOD..BAD)."""
    return Search(good, tuple(first_parent))
