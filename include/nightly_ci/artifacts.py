"""Keeping artifacts under one ObjectStoragePath base (file://, s3://, abfs://).

Layout: BASE/RUN/ARTIFACT_DIR/NAME, where RUN is the tag-safe run id and ARTIFACT_DIR is
the plan's for each task (`CELL/build`, `CELL/test-SUITE`). Writes go straight to the
store: no file system is shared between the worker and anything else.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightly_ci.errors import StoreError
from include.nightly_ci.names import tag_safe_run_id

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactStore:
    """Where a nightly keeps its files: an ObjectStoragePath base and its connection."""

    base: str
    conn_id: str | None = None

    def root(self) -> ObjectStoragePath:
        return store_root(self.base, self.conn_id)

    def run_folder(self, run_id: str) -> ObjectStoragePath:
        """BASE/RUN: everything one run wrote."""
        return self.root() / tag_safe_run_id(run_id)


def store_root(base: str, conn_id: str | None = None) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    url = base if "://" in base else f"file://{base}"
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


# A store write is retried (S3 5xx after botocore's own retries, throttling, a blip of
# the network): a passed suite once failed, and lost its JUnit, on one refused write (M1).
STORE_ATTEMPTS = 4
STORE_BACKOFF_SECONDS = 2.0
# Errors no retry mends: wrong or missing credentials, no permission.
_PERMANENT = ("NoCredentialsError", "PartialCredentialsError", "ClientAuthenticationError", "PermissionError")
_PERMANENT_CODES = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "AuthorizationFailure",
)


def _permanent(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ in _PERMANENT or any(code in text for code in _PERMANENT_CODES)


def write_text(
    root: ObjectStoragePath,
    key: str,
    text: str,
    *,
    attempts: int = STORE_ATTEMPTS,
    backoff_seconds: float | None = None,
) -> str:
    """TEXT at ROOT/KEY; transient failures retried with backoff, then StoreError."""
    path = root / key
    first_pause = STORE_BACKOFF_SECONDS if backoff_seconds is None else backoff_seconds
    for attempt in range(1, attempts + 1):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return str(path)
        except Exception as exc:  # every store has its own error types (fsspec, botocore, azure)
            problem = f"{type(exc).__name__}: {str(exc)[:300]}"
            if attempt == attempts or _permanent(exc):
                raise StoreError(
                    f"the artifact store refused {path} ({attempt} of {attempts} tries): {problem}"
                ) from exc
            pause = first_pause * 2 ** (attempt - 1)
            log.warning("Writing %s failed (%s); try %d of %d in %.1f s", path, problem, attempt + 1, attempts, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def write_json(root: ObjectStoragePath, key: str, data: Any) -> str:
    return write_text(root, key, json.dumps(data, indent=2, sort_keys=True) + "\n")
