"""Links into the Airflow UI and out of it: a run and a task's log in the UI (the results
table and the triage page), and the extra links: a push task's image in its registry, a
test task's JUnit and output. The extra links read what the task put in XCom, so they
work for failed tests too."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from include.nightly_ci.records import PushResult, SuiteArtifacts


def ui_base_url() -> str:
    from airflow.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{ui_base_url()}/dags/{dag_id}/runs/{quote(run_id)}"


def log_url(dag_id: str, run_id: str, task_id: str, try_number: int | None, map_index: int | None = None) -> str:
    """The task's log in the Airflow UI (the same form as RuntimeTaskInstance.log_url)."""
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{run_url(dag_id, run_id)}/tasks/{task_id}{mapped}" + (f"?try_number={try_number}" if try_number else "")


_ECR = re.compile(r"(?P<account>\d+)\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com")


def image_url(pinned: str | None) -> str:
    """A browsable address of host/repo@digest: the ECR console for ECR, the registry API's
    manifest otherwise."""
    if not pinned or "@" not in pinned:
        return ""
    ref, digest = pinned.split("@", 1)
    host, _, repo = ref.partition("/")
    ecr = _ECR.fullmatch(host)
    if ecr:
        return (f"https://{ecr['region']}.console.aws.amazon.com/ecr/repositories/private/"
                f"{ecr['account']}/{repo}/_/image/{digest}/details")  # fmt: skip
    scheme = "http" if host.startswith(("127.", "localhost")) else "https"
    return f"{scheme}://{host}/v2/{repo}/manifests/{digest}"


def artifact_url(path: str | None) -> str:
    """s3:// objects open in the S3 console; other stores' URLs are given as they are."""
    if not path:
        return ""
    if path.startswith("s3://"):
        bucket, _, key = path[len("s3://") :].partition("/")
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    return path


def _xcom(ti_key: Any, key: str) -> Any:
    from airflow.providers.common.compat.sdk import XCom  # as the standard provider's links do

    return XCom.get_value(ti_key=ti_key, key=key)


class RegistryImageLink(BaseOperatorLink):
    name = "Image in registry"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        pushed = _xcom(ti_key, "return_value")
        return image_url(PushResult.from_json(pushed).pinned if pushed else None)


class JUnitLink(BaseOperatorLink):
    name = "JUnit report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        files = _xcom(ti_key, SuiteArtifacts.XCOM_KEY)
        return artifact_url(SuiteArtifacts.from_json(files).junit if files else None)


class TestOutputLink(BaseOperatorLink):
    __test__ = False  # not a pytest class
    name = "Test output"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        files = _xcom(ti_key, SuiteArtifacts.XCOM_KEY)
        return artifact_url(SuiteArtifacts.from_json(files).output if files else None)
