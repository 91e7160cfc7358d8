"""The suites stage's part in the culprit finder: one run of a finding's failing tests on
one candidate's image (by digest), on the cell's runner: a rerun (suites/rerun.py) with
its files under CELL/culprit/COMMIT12/ATTEMPT and the attempt in NIGHTLY_CI_RERUN.

Its tests failing is what it observes, and so is pytest not finding them (exit code 4): a
test newer than the candidate is not there yet, and a commit can't have broken a test
that did not exist. The judge reads both from the run's record and JUnit.
"""

from __future__ import annotations

from typing import Any

from include.nightly_ci.plan.culprit import CandidateCell
from include.nightly_ci.suites.docker import DockerSuiteOperator
from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator
from include.nightly_ci.suites.rerun import USAGE_ERROR, _Rerun


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
        if result.exit_code == USAGE_ERROR and "not found" in (self._output_tail or ""):
            self.log.info("Run %d on %s: pytest found none of %s: not in this commit yet", self.attempt,
                          self.commit[:12], list(self.tests))  # fmt: skip
            return dict(result.to_json())
        return super()._finish(result)

    _output_tail: str | None = None

    def _keep(self, context: Any, run: Any) -> Any:
        self._output_tail = (run.output or "")[-4000:]
        return super()._keep(context, run)


class DockerCandidateOperator(_Candidate, DockerSuiteOperator):
    """A candidate's run in a container on the cell's Docker engine."""


class KubernetesCandidateOperator(_Candidate, KubernetesSuiteOperator):
    """A candidate's run in a pod on the cell's cluster."""


def candidate_operator(backend: str) -> type[_Candidate]:
    return KubernetesCandidateOperator if backend == "kubernetes" else DockerCandidateOperator
