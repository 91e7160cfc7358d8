"""One finding's search as a state that each round of the culprit DAG advances: pure, so
every step can be re-run from the state it started with (it travels in the DAG run's
conf), and every decision is tested without a build.

  replay  the failing tests on the last good night's image (no build): failing there too,
          the cause is outside the commit range (EXTERNAL); flaky there, FLAKY
  bisect  a round: build the candidates that have no image yet, run the tests R times on
          each, narrow the range; a flaky candidate ends it as FLAKY (nobody is blamed on
          one failure); the GPU budget spent ends it as PARTIAL
  verify  the culprit and its parent R more times each: CULPRIT only when the culprit
          fails and its parent passes, else UNVERIFIED
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from include.nightly_ci.culprit.bisect import BAD, FLAKY, GOOD, Search, candidate_verdict, run_verdict
from include.nightly_ci.history import findings as status

REPLAY, BISECT, VERIFY, DONE = "replay", "bisect", "verify", "done"
# Outcomes of one run of one test on one candidate that count as a failure. A test the
# candidate does not have yet ("not found": older than the test) passes there: it was not
# broken by a commit before it existed.
FAILED_RUN = ("failed", "error")

Runs = Mapping[str, Mapping[str, Sequence[str]]]  # commit -> test id -> the R runs' outcomes


@dataclass(frozen=True)
class State:
    """Where a finding's search stands, between two rounds."""

    tests: tuple[str, ...]
    search: Search
    images: dict[str, str]  # commit -> its image by digest, once built (or a night's own)
    k: int
    r: int
    budget_seconds: float
    mode: str = REPLAY
    status: str = status.SEARCHING
    rounds: int = 0
    builds: int = 0
    gpu_seconds: float = 0.0
    evidence: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    # -------------------------------------------------------------- what this step runs

    def to_test(self) -> tuple[str, ...]:
        """The commits whose images this step runs the tests on."""
        if self.mode == REPLAY:
            return (self.search.good,)
        if self.mode == VERIFY:
            return (self.search.bad, self.search.good)
        if self.mode == BISECT:
            return self.search.candidates(self.k)
        return ()

    def to_build(self) -> tuple[str, ...]:
        """Of those, the commits without an image yet (a replay or a verification builds none)."""
        return tuple(c for c in self.to_test() if c not in self.images)

    # -------------------------------------------------------------- the step itself

    def built(self, images: Mapping[str, str]) -> State:
        """With this round's new images."""
        return replace(self, images={**self.images, **images}, builds=self.builds + len(images))

    def advance(self, runs: Runs, gpu_seconds: float) -> State:
        """The state after this step's test RUNS (and the GPU time they took)."""
        verdicts = {commit: _verdict(runs[commit]) for commit in self.to_test()}
        spent = replace(
            self,
            gpu_seconds=self.gpu_seconds + gpu_seconds,
            evidence=(*self.evidence, *(_evidence(self, c, runs[c], v) for c, v in verdicts.items())),
        )
        return {REPLAY: _after_replay, BISECT: _after_round, VERIFY: _after_verify}[self.mode](spent, verdicts)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["search"] = {"good": self.search.good, "commits": list(self.search.commits)}
        data["tests"], data["evidence"] = list(self.tests), list(self.evidence)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        fields = dict(data)
        fields["search"] = Search(data["search"]["good"], tuple(data["search"]["commits"]))
        fields["tests"], fields["evidence"] = tuple(data["tests"]), tuple(data.get("evidence") or ())
        return cls(**fields)


def start(
    tests: Sequence[str], good: str, commits: Sequence[str], images: Mapping[str, str], *, k: int, r: int,
    budget_seconds: float, max_commits: int,
) -> State:  # fmt: skip
    """A new search over COMMITS (after GOOD, oldest first; the last the bad night's),
    knowing the two nights' IMAGES. No commit between the nights: nothing to blame."""
    if not commits:
        raise ValueError(f"no commit after {good[:12]}: the two nights built the same code")
    state = State(tuple(tests), Search(good, tuple(commits)), dict(images), k, r, budget_seconds)
    if len(commits) > max_commits:
        return replace(state, mode=DONE, status=status.TOO_LONG)
    return state


def same_commit(tests: Sequence[str], good: str, images: Mapping[str, str], *, k: int, r: int) -> State:
    """The search of a regression between two nights that built the same commit: no commit
    can have caused it, so it is external (the build's inputs outside the repository, the
    runners), with that as its evidence and nothing run."""
    evidence = {"mode": "range", "round": 0, "commit": good, "image": images.get(good), "runs": {},
                "verdict": "the last good night and the bad night built the same commit"}  # fmt: skip
    return State(tuple(tests), Search(good, (good,)), dict(images), k, r, 0.0, DONE, status.EXTERNAL,
                 evidence=(evidence,))  # fmt: skip


def _verdict(per_test: Mapping[str, Sequence[str]]) -> str:
    return candidate_verdict(
        {
            test: run_verdict(sum(o in FAILED_RUN for o in outcomes), len(outcomes))
            for test, outcomes in per_test.items()
        }
    )


def _evidence(state: State, commit: str, per_test: Mapping[str, Sequence[str]], verdict: str) -> dict[str, Any]:
    return {
        "mode": state.mode,
        "round": state.rounds + (state.mode == BISECT),
        "commit": commit,
        "image": state.images.get(commit),
        "runs": {test: list(outcomes) for test, outcomes in per_test.items()},
        "verdict": verdict,
    }


def _after_replay(state: State, verdicts: Mapping[str, str]) -> State:
    verdict = verdicts[state.search.good]
    if verdict == BAD:
        return replace(state, mode=DONE, status=status.EXTERNAL)
    if verdict == FLAKY:
        return replace(state, mode=DONE, status=status.FLAKY)
    return _next_round(state, state.search)


def _after_round(state: State, verdicts: Mapping[str, str]) -> State:
    state = replace(state, rounds=state.rounds + 1)
    if FLAKY in verdicts.values():
        return replace(state, mode=DONE, status=status.FLAKY)
    return _next_round(state, state.search.narrow(verdicts))


def _next_round(state: State, search: Search) -> State:
    if search.done:
        return replace(state, search=search, mode=VERIFY)
    if state.gpu_seconds >= state.budget_seconds:
        return replace(state, search=search, mode=DONE, status=status.PARTIAL)
    return replace(state, search=search, mode=BISECT)


def _after_verify(state: State, verdicts: Mapping[str, str]) -> State:
    confirmed = verdicts[state.search.bad] == BAD and verdicts[state.search.good] == GOOD
    return replace(state, mode=DONE, status=status.CULPRIT if confirmed else status.UNVERIFIED)
