"""The suites stage's part in the culprit finder: one run of a finding's failing tests on
one candidate's image (by digest), on the cell's runner: a rerun (suites/rerun.py) with
its files under CELL/culprit/COMMIT12/ATTEMPT and the attempt in NIGHTLY_CI_RERUN.

Its tests failing is what it observes, and so are tests that fail to collect (exit code 2)
and tests pytest does not find (4, 5): a test newer than the candidate is not there yet,
and a commit can't have broken a test that did not exist. The judge reads them from the
run's record and JUnit (culprit/judge.py).
"""

from __future__ import annotations

from typing import Any

from include.nightly_ci.names import PytestExit
from include.nightly_ci.plan.culprit import CandidateCell
from include.nightly_ci.suites.docker import DockerSuiteOperator
from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator
from include.nightly_ci.suites.rerun import _Rerun

# pytest's exit codes that say what the candidate did to the tests (not that they could not run).
OBSERVED = {
    PytestExit.INTERRUPTED: "collection errors",
    PytestExit.USAGE_ERROR: "not found",
    PytestExit.NO_TESTS_COLLECTED: "no tests collected",
}


class _Candidate(_Rerun):
    """What a candidate's run changes in a rerun (put first in the backend's bases)."""

    layout: CandidateCell
    commit: str

    def __init__(self, *, layout: CandidateCell, commit: str, **kwargs: Any):
        super().__init__(reruns=layout.reruns, **kwargs)
        self.layout, self.commit = layout, commit

    def artifact_key(self, run_id: str, name: str) -> str:
        return self.layout.artifact_key(run_id, self.commit, self.attempt, name)

    def record_key(self, context: Any) -> str:
        return self.layout.record_key(context["dag_run"].run_id, context["ti"].map_index)

    def _finish(self, result: Any) -> dict[str, Any]:
        """What the candidate did to the tests is an observation, whatever it was: they failed
        to collect (exit 2), or are not there yet (4: "not found", 5: none collected). The
        judge reads it from the record; only a run that could not run pytest fails."""
        if result.exit_code in OBSERVED and not result.timed_out:
            self.log.info("Run %d on %s: pytest exit code %s (%s): the judge reads it from the record",
                          self.attempt, self.commit[:12], result.exit_code, OBSERVED[result.exit_code])  # fmt: skip
            return dict(result.to_json())
        return super()._finish(result)


class DockerCandidateOperator(_Candidate, DockerSuiteOperator):
    """A candidate's run in a container on the cell's Docker engine."""


class KubernetesCandidateOperator(_Candidate, KubernetesSuiteOperator):
    """A candidate's run in a pod on the cell's cluster."""


def candidate_operator(backend: str) -> type[_Candidate]:
    return KubernetesCandidateOperator if backend == "kubernetes" else DockerCandidateOperator
