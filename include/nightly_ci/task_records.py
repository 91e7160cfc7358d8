"""Every task of a nightly leaves a record in the artifact store, whatever its end:
state, start, end, where it ran, what went wrong and the class of the failure. The
summary reads these, so it needs no database and works the same under `airflow dags
test` and under a scheduler.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from typing import Any

from include.nightly_ci.names import tag_safe_run_id

BUILD, TEST, TIMEOUT, INFRA, UPSTREAM = "build", "test", "timeout", "infra", "upstream"

# Texts that mean the machinery, not the code, failed: an engine, a registry or a node
# that is unreachable, refusing or overloaded, and images that could not be pulled.
_INFRA_TEXTS = (
    "connection refused",
    "connection reset",
    "connection aborted",
    "failed to establish connection",
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
)
_INFRA_TYPES = {"RegistryAuthError", "RegistryUnavailable", "RegistryError", "DockerException", "ConnectionError"}
_TIMEOUT_TYPES = {"AirflowTaskTimeout", "ReadTimeout"}
_TEST_OUTCOMES = {"failed", "no_tests", "collection_error", "error"}


def classify_failure(stage: str, error_type: str | None, message: str, outcome: str | None = None) -> str:
    """The class of a failed task: build, test, timeout or infra."""
    text = message.lower()
    if outcome == "timeout" or error_type in _TIMEOUT_TYPES:
        return TIMEOUT
    if error_type in _INFRA_TYPES or any(t in text for t in _INFRA_TEXTS):
        return INFRA
    if stage == "test" and (outcome in _TEST_OUTCOMES or outcome is None):
        return TEST
    if stage == "push":
        return INFRA
    return BUILD


def record_key(run_id: str, task_id: str) -> str:
    """RUN/CELL/tasks/TASK.json for a cell's task, RUN/tasks/TASK.json for the others."""
    cell, _, short = task_id.partition(".")
    if not short:
        return f"{tag_safe_run_id(run_id)}/tasks/{task_id}.json"
    return f"{tag_safe_run_id(run_id)}/{cell}/tasks/{short}.json"


class RecordedTask:
    """Mixin: `execute` runs the operator's `run` and always leaves its record."""

    record_stage = "build"

    def run(self, context: Any) -> Any:  # pragma: no cover - every operator defines it
        raise NotImplementedError

    def record_extra(self) -> dict[str, Any]:
        """What the operator adds to its record (a suite's outcome and counts)."""
        return {}

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

    def _write_record(self, context, state, started, seconds, error_type, message) -> None:
        from include.nightly_ci.artifacts import plan_store, write_json

        extra = self.record_extra()
        record = {
            "task_id": self.task_id,
            "stage": self.record_stage,
            "state": state,
            "started": started.isoformat(),
            "ended": datetime.now(UTC).isoformat(),
            "duration_sec": round(seconds, 2),
            "try_number": context["ti"].try_number,
            "pool": self.pool,
            "host": socket.gethostname(),
            "error_type": error_type,
            "error": message[-2000:] or None,
            **extra,
        }
        if state == "failed":
            record["failure_class"] = classify_failure(self.record_stage, error_type, message, extra.get("outcome"))
        try:
            store = plan_store(self.plan)
            write_json(store, record_key(context["dag_run"].run_id, self.task_id), record)
        except Exception:  # the store being down must not hide the task's own error
            self.log.exception("Could not write the task record of %s", self.task_id)
