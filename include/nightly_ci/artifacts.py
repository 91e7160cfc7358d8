"""Keeping artifacts under one ObjectStoragePath base (file://, s3://, abfs://).

Layout: BASE/RUN/CELL/STAGE/NAME (plan.artifact_key). Writes go straight to the store:
no file system is shared between the worker and anything else.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from include.nightly_ci.plan import Plan


def store_root(base: str, conn_id: str | None = None) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    url = base if "://" in base else f"file://{base}"
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def plan_store(plan: Plan) -> ObjectStoragePath:
    """The artifact store of PLAN (artifacts.base with artifacts.conn_id)."""
    return store_root(plan.artifacts_base, plan.artifacts_conn_id)


def write_text(root: ObjectStoragePath, key: str, text: str) -> str:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def write_json(root: ObjectStoragePath, key: str, data: Any) -> str:
    return write_text(root, key, json.dumps(data, indent=2, sort_keys=True) + "\n")
