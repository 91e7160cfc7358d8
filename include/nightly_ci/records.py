"""What tasks leave for each other and for the summary: typed, frozen, with to/from JSON.

Every task of a nightly leaves a `TaskRecord` in the artifact store, whatever its end:
state, start, end, where it ran, what went wrong and the class of the failure. The
summary reads these, so it needs no database and works the same under `airflow dags
test` and under a scheduler. `NightlyOperator` is the base of every such task: the plan's
`TaskSpec` names and places it, and its `execute` always writes the record.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from airflow.sdk import BaseOperator

from include.nightly_ci.artifacts import ArtifactStore, write_json
from include.nightly_ci.names import PUSH, RERUN, RUN_MARKER, TEST, tag_safe_run_id
from include.nightly_ci.plan import TaskSpec, is_selected

T = TypeVar("T", bound="JsonRecord")

# Failure classes: where a failed task's cause lies.
BUILD, TEST_FAILURE, TIMEOUT, INFRA, UPSTREAM = "build", "test", "timeout", "infra", "upstream"
FAILURE_CLASSES = (BUILD, TEST_FAILURE, TIMEOUT, INFRA, UPSTREAM)
# The task states that make a job "not passed".
FAILING_STATES = frozenset({"failed", "upstream_failed"})

# Texts that mean the machinery, not the code, failed: an engine, a registry or a node
# that is unreachable, refusing or overloaded, and images that could not be pulled.
_INFRA_TEXTS = (
    "connection refused",
    "connection reset",
    "connection aborted",
    "failed to establish connection",
    "failed to establish a new connection",  # urllib3's words
    "error while fetching server api version",
    "no such host",
    "i/o timeout",
    "tls handshake timeout",
    "unreachable",
    "could not select device driver",
    "pull access denied",
    "manifest unknown",
    "toomanyrequests",
    "unauthorized",
    "authentication required",
    "requested access to the resource is denied",
    "refused the credentials",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
    "500 internal server error",
    "pod took too long",
    "podlaunchfailed",
    "evicted",
    "node not ready",
    "no space left on device",
    # The network on the way to a registry or a cloud API, rate limits, cloud credentials (M7).
    "request canceled while waiting for connection",
    "too many requests",
    "http status: 429",
    "unrecognizedclientexception",
    "invalidsignatureexception",
    "unable to locate credentials",
    "could not connect to the endpoint url",
)
_INFRA_TYPES = {
    "RegistryAuthError",
    "RegistryUnavailable",
    "RegistryError",
    "DockerException",
    "ConnectionError",
    "EngineUnavailable",
    "EngineConfigError",
    "StoreError",
    "SourceUnavailable",
    "BuildUnavailable",
    "RegistryRateLimited",
    # Raised by the cloud SDKs themselves (botocore, azure-core) where nothing translated them.
    "ClientError",
    "NoCredentialsError",
    "PartialCredentialsError",
    "EndpointConnectionError",
    "ClientAuthenticationError",
    "CredentialUnavailableError",
    "ServiceRequestError",
}
_TIMEOUT_TYPES = {"AirflowTaskTimeout", "ReadTimeout"}
_TEST_OUTCOMES = {"failed", "no_tests", "collection_error", "error"}


def classify_failure(stage: str, error_type: str | None, message: str, outcome: str | None = None) -> str:
    """The class of a failed task: build, test, timeout or infra."""
    text = message.lower()
    if outcome == "timeout" or error_type in _TIMEOUT_TYPES:
        return TIMEOUT
    if error_type in _INFRA_TYPES or any(t in text for t in _INFRA_TEXTS):
        return INFRA
    if stage in (TEST, RERUN) and (outcome in _TEST_OUTCOMES or outcome is None):
        return TEST_FAILURE
    if stage == PUSH:
        return INFRA
    return BUILD


class JsonRecord:
    """to_json/from_json for a frozen dataclass of JSON-able fields; unknown keys are
    ignored on the way in, so a newer record still reads an older file and back."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass

    @classmethod
    def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TaskRecord(JsonRecord):
    """What one try of one task left behind, written to the artifact store by the task itself."""

    task_id: str
    stage: str
    state: str  # success | failed | skipped
    started: str
    ended: str
    duration_sec: float
    try_number: int | None
    pool: str | None
    host: str
    error_type: str | None = None
    error: str | None = None
    failure_class: str | None = None
    # A test suite adds these (see suites.run.SuiteResult).
    outcome: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    image: str | None = None
    artifacts: dict[str, str] | None = None
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        # The suite fields only where a suite set them, as before they were typed.
        data = asdict(self)
        for key in ("outcome", "image", "artifacts", "exit_code"):
            if data[key] is None:
                del data[key]
        if not data["counts"] and self.stage != TEST:
            del data["counts"]
        return data


@dataclass(frozen=True)
class RunMarker(JsonRecord):
    """BASE/RUN/nightly-ci-run.json, written by the run's first task (the nightly's
    resolve_source, the culprit finder's begin) before anything else of the run: the facts
    retention ages the run's files and images by (not store metadata, which some stores
    lack, and not the night alone, which a backfill sets in the past)."""

    dag_id: str
    run_id: str
    run_type: str
    night: str  # the run's logical date (or run_after), ISO, UTC
    started: str  # when the run really ran (its first task's latest try), ISO, UTC

    @property
    def age_from(self) -> datetime:
        """When the run really ran, whatever its night: a backfilled night is as young as
        its run, and a run dated in the future does not keep its files for years."""
        night, started = datetime.fromisoformat(self.night), datetime.fromisoformat(self.started)
        if night.tzinfo is None or started.tzinfo is None:
            raise ValueError(f"night {self.night!r} or start {self.started!r} has no time zone")
        return started


def mark_run(store: ArtifactStore, dag_run: Any) -> RunMarker:
    """DAG_RUN's marker at the top of its folder (BASE/RUN/), written by the run's first task
    before any other file of the run: retention deletes only folders that have one."""
    night = dag_run.logical_date or dag_run.run_after  # an asset-triggered run has no logical date
    marker = RunMarker(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        run_type=getattr(dag_run.run_type, "value", str(dag_run.run_type)),
        night=night.astimezone(UTC).isoformat(),
        started=datetime.now(UTC).isoformat(),
    )
    write_json(store.root(), f"{tag_safe_run_id(dag_run.run_id)}/{RUN_MARKER}", marker.to_json())
    return marker


@dataclass(frozen=True)
class PushResult(JsonRecord):
    """A push task's XCom: what it pushed where, and the run's image by digest."""

    registry: str
    host: str
    repository: str
    image_id: str
    pushed: dict[str, str]  # tag -> digest
    skipped: dict[str, str]  # tag -> why it was not moved
    # The exact image of this run, for the tests: re-running them days later tests it again.
    pinned: str | None
    # When the tags were written (ISO, UTC): an image's age for retention, whatever its night.
    pushed_at: str | None = None
    night: str | None = None  # the run's night, for the record

    def record_key(self, spec: TaskSpec, run_id: str) -> str:
        """Where the push task keeps this record in the run's folder."""
        return spec.artifact_key(run_id, f"{spec.local_id}.json")

    @staticmethod
    def pinned_template(push_task_id: str) -> str:
        """The pinned image of PUSH_TASK_ID's XCom, as a Jinja template (shown rendered in the UI)."""
        return "{{ ti.xcom_pull(task_ids='" + push_task_id + "')['pinned'] }}"


@dataclass(frozen=True)
class SuiteArtifacts(JsonRecord):
    """Where a suite's files will be: pushed to XCom before it runs, for the UI's links."""

    XCOM_KEY: ClassVar[str] = "artifacts"

    junit: str
    output: str
    record: str


def placement(spec: TaskSpec) -> dict[str, Any]:
    """The BaseOperator arguments that name and place SPEC's task: id, display name, pool, queue."""
    args: dict[str, Any] = {"task_id": spec.local_id, "task_display_name": spec.display_name}
    if spec.pool:
        args |= {"pool": spec.pool, "pool_slots": spec.pool_slots}
    if spec.queue:
        args["queue"] = spec.queue
    return args


class NightlyOperator(BaseOperator):
    """A task of the nightly, named and placed by its TaskSpec. `execute` runs the
    operator's `run` and always leaves the task's record in the artifact store.

    Only the concrete operators define `__init__` (taking `spec` and `store`, passing
    `**placement(spec)` on): Airflow deep-copies the DAG's Params once per `__init__` in
    the class chain, which cost a 40-cell DAG 30 ms of its parse time per extra level.
    """

    spec: TaskSpec
    store: ArtifactStore

    def run(self, context: Any) -> Any:  # pragma: no cover - every operator defines it
        raise NotImplementedError

    def record_extra(self) -> dict[str, Any]:
        """What the operator adds to its record (a suite's outcome and counts)."""
        return {}

    def record_key(self, context: Any) -> str:
        """Where this try leaves its record (a mapped task: one per map index)."""
        return self.spec.record_key(context["dag_run"].run_id)

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        started, t0 = datetime.now(UTC), time.monotonic()
        state, error_type, message = "failed", None, ""
        try:
            result = self.run(context)
            state = "success"
            return result
        except AirflowSkipException as exc:
            state, message = "skipped", str(exc)
            raise
        except BaseException as exc:
            error_type, message = type(exc).__name__, str(exc)
            raise
        finally:
            self._write_record(context, state, started, time.monotonic() - t0, error_type, message)

    def _write_record(
        self, context: Any, state: str, started: datetime, seconds: float, error_type: str | None, message: str
    ) -> None:
        extra = self.record_extra()
        failure = None
        if state == "failed":
            failure = classify_failure(self.spec.stage, error_type, message, extra.get("outcome"))
        record = TaskRecord(
            task_id=self.task_id,
            stage=self.spec.stage,
            state=state,
            started=started.isoformat(),
            ended=datetime.now(UTC).isoformat(),
            duration_sec=round(seconds, 2),
            try_number=context["ti"].try_number,
            pool=self.pool,
            host=socket.gethostname(),
            error_type=error_type,
            error=message[-2000:] or None,
            failure_class=failure,
            **extra,
        )
        try:
            write_json(self.store.root(), self.record_key(context), record.to_json())
        except Exception:  # the store being down must not hide the task's own error
            self.log.exception("Could not write the task record of %s", self.task_id)


def skip_unless_selected(context: Any, framework: str, arch: str) -> None:
    """Skip a cell's task when the run's Params did not choose its framework and arch."""
    from airflow.sdk.exceptions import AirflowSkipException

    params = context["params"]
    if "frameworks" not in params:  # a DAG without the nightly's selection (the culprit finder's)
        return
    if not is_selected(framework, arch, params["frameworks"], params["arches"]):
        raise AirflowSkipException(f"{framework}/{arch} is not selected by this run's Params")
