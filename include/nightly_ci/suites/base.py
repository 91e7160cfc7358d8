"""What every test task shares, whatever runs it: the image by digest, the run's
selection, where its files go, and the outcome that decides the task's state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from include.nightly_ci.errors import NightlyCiError
from include.nightly_ci.names import RERUN_ENV
from include.nightly_ci.plan import JUNIT_FILE, Backoff
from include.nightly_ci.records import NightlyOperator, SuiteArtifacts, skip_unless_selected
from include.nightly_ci.ui.links import JUnitLink, TestOutputLink

if TYPE_CHECKING:
    from include.nightly_ci.suites.run import SuiteResult, SuiteRun

T = TypeVar("T")

# Extra time the task gets beyond the suite's own timeout and its start (the pull, the
# pod's scheduling): the container's KILL grace, reading the results, writing them.
GRACE = timedelta(minutes=10)


class SuiteFailed(NightlyCiError):
    """A suite did not pass: its outcome, exit code and counts are in the message."""


class SuiteOperator(NightlyOperator):
    """One suite of one cell in the image its push task pinned (a template rendered at run
    time from that task's XCom, so a cleared task tests the same digest days later)."""

    template_fields = ("image",)
    operator_extra_links = (JUnitLink(), TestOutputLink())

    # Set by the backends' __init__ (see NightlyOperator on why only they define one).
    framework: str
    arch: str
    suite: str
    image: str
    command: tuple[str, ...]
    mode: str
    marker: str
    workdir: str
    junit_path: str | None
    timeout_minutes: int
    gpus: int
    _result: SuiteResult | None = None

    def record_extra(self) -> dict[str, Any]:
        r = self._result
        if r is None:
            return {}
        return {
            "outcome": r.outcome,
            "counts": r.counts,
            "image": r.image,
            "artifacts": r.artifacts,
            "exit_code": r.exit_code,
        }

    def container_env(self) -> dict[str, str]:
        """What the suite's container or pod has in its environment: which run of the tests
        this is (0: the suite's own; a rerun says its attempt)."""
        return {RERUN_ENV: "0"}

    def artifact_key(self, run_id: str, name: str) -> str:
        """Where file NAME of this task goes in the artifact store."""
        return self.spec.artifact_key(run_id, name)

    def execute_suite(self, context: Any, run: SuiteRun) -> None:  # pragma: no cover - each backend defines it
        """Run the suite; fill RUN (exit code, output, JUnit), or raise what stopped it."""
        raise NotImplementedError

    def run(self, context: Any) -> dict[str, Any]:
        skip_unless_selected(context, self.framework, self.arch)
        run = self._new_run(context)
        try:
            self.execute_suite(context, run)
        except Exception as exc:  # the engine or cluster refused, or the pod never started: keep what we know
            run.error = f"{type(exc).__name__}: {exc}"
            result = self._keep(context, run)
            if isinstance(exc, NightlyCiError):
                raise  # raised on purpose, its class says the cause (EngineUnavailable: infra)
            return self._finish(result)
        except BaseException as exc:
            # Airflow's task timeout is a BaseException in Airflow 3 (M2): the results are
            # kept all the same, and it goes on to the task runner (which calls on_kill).
            if type(exc).__name__ == "AirflowTaskTimeout":
                run.timed_out = True
            else:
                run.error = f"{type(exc).__name__}: {exc}"
            self._keep(context, run)
            raise
        return self._finish(self._keep(context, run))

    def _files(self, run_id: str) -> SuiteArtifacts:
        root = self.store.root()
        return SuiteArtifacts(
            junit=str(root / self.artifact_key(run_id, JUNIT_FILE)),
            output=str(root / self.artifact_key(run_id, "output.log")),
            record=str(root / self.artifact_key(run_id, "record.json")),
        )

    def _new_run(self, context: Any) -> SuiteRun:
        """A new suite run; first it tells the UI's links where its results will be."""
        from include.nightly_ci.suites.run import SuiteRun  # at run time only: the DAG file imports this module

        context["ti"].xcom_push(key=SuiteArtifacts.XCOM_KEY, value=self._files(context["dag_run"].run_id).to_json())
        return SuiteRun(self.spec.cell or "", self.suite, self.mode, self.image, self.marker)

    def _keep(self, context: Any, run: SuiteRun) -> SuiteResult:
        """Write output, JUnit and the record to the artifact store; the record. The
        outcome is the suite's, whatever the store does: if it refuses, what could not be
        stored goes into this task log instead (M1)."""
        import json

        from include.nightly_ci.artifacts import write_text
        from include.nightly_ci.errors import StoreError

        root, run_id = self.store.root(), context["dag_run"].run_id
        files = self._files(run_id)
        planned = {"output": files.output, **({"junit": files.junit} if run.junit else {}), "record": files.record}
        result = run.result(planned)
        self._result = result  # the record's failure class follows the suite, not the store
        contents = {
            "output.log": run.output,
            **({JUNIT_FILE: run.junit} if run.junit else {}),
            "record.json": json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n",
        }
        for name, text in contents.items():
            try:
                write_text(root, self.artifact_key(run_id, name), text)
            except StoreError as exc:
                self.log.error("%s; its content is kept in this log instead:\n%s", exc, text)
        self.log.info("Suite %s: %s %s; artifacts: %s", self.suite, result.outcome, result.counts, planned)
        return result

    def _finish(self, result: SuiteResult) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.nightly_ci.suites.run import COLLECTED, NO_TESTS, PASSED

        if result.outcome in (PASSED, COLLECTED):
            return result.to_json()
        if result.outcome == NO_TESTS and self.mode == "run":
            raise AirflowSkipException(f"no tests selected by -m {self.marker!r} (pytest exit 5)")
        raise SuiteFailed(
            f"suite {self.suite} of {result.cell}: {result.outcome} "
            f"(exit code {result.exit_code}, {result.counts}){': ' + result.error if result.error else ''}"
        )


def retrying(what: str, func: Callable[[], T], backoff: Backoff) -> T:
    """FUNC with the registry retries of BACKOFF."""
    from include.nightly_ci.images.registries import retry_transient

    return retry_transient(
        what, func, attempts=backoff.attempts, backoff=backoff.first_seconds, backoff_max=backoff.max_seconds
    )
