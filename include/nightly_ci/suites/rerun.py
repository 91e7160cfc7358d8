"""One rerun of a suite's newly failing cases, in the exact image they failed in: the
suite backends (Docker engine or Kubernetes pod) with only those node ids, the attempt in
NIGHTLY_CI_RERUN, and its files apart from the suite's and from every other rerun.

A rerun is mapped (one instance per suite and attempt, from the find task's items). Its
tests failing is an observation, not a failure of the task: its JUnit says what happened
and the summary reads it. Only a rerun that could not run its tests (infra, a timeout,
ids pytest could not select) fails, and then the summary has no rerun from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from include.nightly_ci.names import RERUN_ENV, PytestExit
from include.nightly_ci.plan import JUNIT_FILE, Reruns, rerun_command
from include.nightly_ci.suites.base import GRACE, SuiteFailed, SuiteOperator
from include.nightly_ci.suites.docker import DockerSuiteOperator
from include.nightly_ci.suites.kubernetes import KubernetesSuiteOperator


class _Rerun(SuiteOperator):
    """What a rerun changes in a suite backend (put first in the backend's bases)."""

    reruns: Reruns
    attempt: int
    tests: tuple[str, ...]

    def __init__(self, *, reruns: Reruns, attempt: int, tests: Sequence[str], results_dir: str, **kwargs: Any):
        super().__init__(
            command=rerun_command(tests, results_dir),
            mode="run",
            marker=f"rerun {attempt}",
            junit_path=f"{results_dir}/{JUNIT_FILE}",
            **kwargs,
        )
        self.reruns, self.attempt, self.tests = reruns, attempt, tuple(tests)

    def container_env(self) -> dict[str, str]:
        return {RERUN_ENV: str(self.attempt)}

    def artifact_key(self, run_id: str, name: str) -> str:
        return self.reruns.artifact_key(run_id, self.suite, self.attempt, name)

    def record_key(self, context: Any) -> str:
        return self.reruns.record_key(context["dag_run"].run_id, context["ti"].map_index)

    def _finish(self, result: Any) -> dict[str, Any]:
        """Passed or failed, the tests ran and the JUnit says how: the task succeeds."""
        from include.nightly_ci.suites.run import FAILED, PASSED

        if result.outcome in (PASSED, FAILED):
            self.log.info("Rerun %d of %s: %s %s", self.attempt, self.suite, result.outcome, result.counts)
            return dict(result.to_json())
        why = result.error or f"exit code {result.exit_code}"
        if result.exit_code == PytestExit.USAGE_ERROR:  # pytest could not select what it was given
            why = f"pytest could not select the ids {list(self.tests)} (exit code {PytestExit.USAGE_ERROR})"
        raise SuiteFailed(
            f"rerun {self.attempt} of suite {self.suite} of {result.cell}: {result.outcome} ({why}); "
            "no rerun data from it"
        )


class DockerRerunOperator(_Rerun, DockerSuiteOperator):
    """A rerun in a container on the cell's Docker engine."""


class KubernetesRerunOperator(_Rerun, KubernetesSuiteOperator):
    """A rerun in a pod on the cell's cluster."""


def rerun_operator(backend: str) -> type[SuiteOperator]:
    return KubernetesRerunOperator if backend == "kubernetes" else DockerRerunOperator


def rerun_time_limit(reruns: Reruns, startup_timeout_seconds: int) -> timedelta:
    """The mapped task's execution timeout (one for every instance): the pull's or pod's
    start budget, the longest suite's own limit, and the grace a suite task gets."""
    return timedelta(seconds=startup_timeout_seconds) + timedelta(minutes=reruns.timeout_minutes) + GRACE
