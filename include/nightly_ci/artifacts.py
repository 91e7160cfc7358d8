"""Keeping artifacts under one ObjectStoragePath base (file://, s3://, abfs://).

Layout: BASE/RUN/ARTIFACT_DIR/NAME, where RUN is the tag-safe run id and ARTIFACT_DIR is
the plan's for each task (`CELL/build`, `CELL/test-SUITE`). Writes go straight to the
store: no file system is shared between the worker and anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.nightly_ci.names import tag_safe_run_id

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


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


def write_text(root: ObjectStoragePath, key: str, text: str) -> str:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def write_json(root: ObjectStoragePath, key: str, data: Any) -> str:
    return write_text(root, key, json.dumps(data, indent=2, sort_keys=True) + "\n")
