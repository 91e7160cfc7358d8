"""One cell built and published by the real DAG (`airflow dags test`), against the real
engine, registries with auth, and ECR through EcrHook on moto."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dev.sample_repo import make_repo, nightly_history
from include.nightly_ci.images.registries import RemoteImage
from include.nightly_ci.names import LABEL_LOGICAL_DATE, LABEL_REVISION, LABEL_RUN_ID, LABEL_SOURCE, tag_safe_run_id
from tests.services import (
    AMD64_BASES,
    LocalRegistry,
    MotoServer,
    empty_engine_of_its_own,
    non_base_images,
    present,
    run_dag,
    run_id_of,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = "ai-dynamo/dynamo"
ONE_CELL = {"frameworks": ["vllm"], "arches": ["amd64"], "publish": True}  # a night: moves the moving tags


class Stack:
    def __init__(self, root: Path):
        self.root = root
        self.moto = MotoServer()
        self.ecr = LocalRegistry(root / "ecr", user="AWS", password=MotoServer.ECR_PASSWORD)
        self.acr = LocalRegistry(root / "acr")
        self.repo = root / "sample.git"
        self.commits = make_repo(self.repo, nightly_history(3, datetime.now(UTC)))
        # Artifacts go to S3 (moto), through ObjectStoragePath and the same AWS connection.
        self.bucket = "nightly-ci-artifacts"
        self.config = write_config(
            root / "nightly.yaml",
            f"source: {{repository: {self.repo}}}\n"
            "registries:\n"
            f"  ecr: {{kind: ecr, conn_id: it_aws, host_override: '{self.ecr.host}'}}\n"
            "  acr: {conn_id: it_acr}\n"
            f"artifacts: {{base: 's3://{self.bucket}/nightly', conn_id: it_aws}}\n",
        )
        self.env = {**self.moto.conn_env("it_aws"), **self.acr.conn_env("it_acr", "azure_container_registry")}

    def start(self) -> None:
        self.moto.start()
        self.s3().create_bucket(Bucket=self.bucket)
        self.ecr.start()
        self.acr.start()

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def artifact(self, run_id: str, stage: str, name: str) -> str:
        key = f"nightly/{tag_safe_run_id(run_id)}/vllm_amd64/{stage}/{name}"
        return self.s3().get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def stop(self) -> None:
        for s in (self.acr, self.ecr, self.moto):
            s.stop()

    def run(self, logical_date: str, conf: dict | None = None, env: dict[str, str] | None = None):
        proc = run_dag(self.config, logical_date=logical_date, conf=conf or ONE_CELL, env={**self.env, **(env or {})})
        (self.root / f"run-{logical_date[:19].replace(':', '')}.log").write_text(proc.stdout)
        return proc

    def metrics(self, run_id: str, image: str) -> dict:
        return json.loads(self.artifact(run_id, "build", f"metrics-{image}.json"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, provisioned, airflow_home):
    s = Stack(tmp_path_factory.mktemp("stack"))
    s.start()
    yield s
    s.stop()


NIGHT = "2026-11-27T08:00:00+00:00"


@dataclass(frozen=True)
class FirstNight:
    """The module's first night and the registries as it left them (later nights in this
    module move the moving tags: the tests read what the first one pushed, in any order)."""

    stdout: str
    ecr: dict[str, RemoteImage]  # tag -> image
    acr: dict[str, RemoteImage]


@pytest.fixture(scope="module")
def first_run(stack) -> FirstNight:
    proc = stack.run(NIGHT)
    assert proc.returncode == 0, proc.stdout[-5000:]

    def images(registry: LocalRegistry) -> dict[str, RemoteImage]:
        return {tag: present(registry.client().image(REPO, tag)) for tag in registry.tags(REPO)}

    return FirstNight(proc.stdout, images(stack.ecr), images(stack.acr))


@pytest.fixture(scope="module")
def run_id(first_run) -> str:
    return run_id_of(first_run.stdout)


def test_one_cell_is_built_and_pushed(stack, first_run, run_id):
    run_tag = f"nightly-vllm-amd64-run-{tag_safe_run_id(run_id)}"
    # ECR, the cache registry, also holds what each build pushed for the push tasks to
    # promote (run-scoped: retention removes them with the run tags).
    builds = [f"{run_tag}-build-framework", f"{run_tag}-build-runtime"]
    ecr, acr = first_run.ecr, first_run.acr
    assert sorted(ecr) == sorted(["main-vllm-framework-amd64", "nightly-vllm-amd64", run_tag, *builds])
    assert sorted(acr) == sorted(["nightly-vllm-amd64", run_tag])  # runtime only
    # The tags hold exactly what the builds pushed: the registry is the handoff.
    assert ecr[run_tag].digest == ecr[builds[1]].digest
    assert ecr["main-vllm-framework-amd64"].digest == ecr[builds[0]].digest
    assert acr[run_tag].digest == ecr[run_tag].digest
    runtime = ecr["nightly-vllm-amd64"]
    assert runtime.digest == ecr[run_tag].digest
    assert runtime.labels[LABEL_REVISION] == stack.commits[-1]  # the branch head
    assert runtime.labels[LABEL_SOURCE] == str(stack.repo)
    assert runtime.labels[LABEL_LOGICAL_DATE] == NIGHT and runtime.labels[LABEL_RUN_ID] == run_id
    assert "org.opencontainers.image.created" in runtime.labels
    assert ecr["main-vllm-framework-amd64"].labels[LABEL_REVISION] == stack.commits[-1]
    # Only the selected cell ran; the others were skipped by the Params.
    assert "sglang/arm64 is not selected by this run's Params" in first_run.stdout


def test_build_metrics_are_kept_as_files_with_every_field(stack, first_run, run_id):
    for image, target in (("framework", "framework"), ("runtime", "runtime")):
        m = stack.metrics(run_id, image)
        assert m["framework"] == "vllm" and m["target"] == target and m["platform"] == "linux/amd64"
        assert m["commit"] == stack.commits[-1]
        assert m["image_size_bytes"] > 1_000_000
        assert m["build_duration_sec"] > 0 and m["build_start_time"] < m["build_end_time"]
        assert m["steps_total"] >= m["steps_cached"] >= 0
        assert 0 <= m["cache_hit_rate"] <= 1
    # BuildKit's plain progress, whole, beside the metrics.
    assert re.search(r"^#\d+ \[runtime \d+/\d+\] RUN ", stack.artifact(run_id, "build", "build-runtime.log"), re.M)
    # The runtime build reused every step of this run's framework image, taken from ECR by digest.
    framework, runtime = stack.metrics(run_id, "framework"), stack.metrics(run_id, "runtime")
    assert runtime["cache_from"][0].startswith(f"{stack.ecr.host}/{REPO}@sha256:")
    assert runtime["steps_cached"] >= framework["steps_total"] >= 8
    assert set(runtime["stage_duration_sec"]) == {"dynamo_base", "wheel_builder", "framework", "runtime"}
    assert runtime["pushed"].startswith(f"{stack.ecr.host}/{REPO}@sha256:") and runtime["compressed_size_bytes"] > 0


def test_the_cells_suites_ran_in_the_pushed_image_and_their_results_are_in_s3(stack, first_run, run_id):
    pinned = stack.ecr.client().image(REPO, f"nightly-vllm-amd64-run-{tag_safe_run_id(run_id)}").digest
    for suite, tests in (("unit", 4), ("integration", 2), ("e2e_1gpu", 1), ("e2e_2gpu", 1)):
        record = json.loads(stack.artifact(run_id, f"test-{suite}", "record.json"))
        assert record["outcome"] == "passed" and record["counts"]["tests"] == tests
        assert record["image"] == f"{stack.ecr.host}/{REPO}@{pinned}"  # by digest
        assert "<testsuite" in stack.artifact(run_id, f"test-{suite}", "pytest_test_report.xml")
        assert "passed" in stack.artifact(run_id, f"test-{suite}", "output.log")


def test_the_ecr_token_never_reaches_the_task_logs(stack, first_run):
    assert "EcrHook" in first_run.stdout or "ecr" in first_run.stdout.lower()
    assert MotoServer.ECR_PASSWORD not in first_run.stdout


def test_streamed_build_output_is_in_the_task_log(first_run):
    assert re.search(r"#\d+ \[framework \d+/\d+\] RUN ", first_run.stdout)
    assert re.search(r"#\d+ CACHED", first_run.stdout)


def test_an_older_night_pushes_only_its_run_tag(stack, first_run):
    older = "2026-11-20T08:00:00+00:00"  # before every night of this module
    moving = ("nightly-vllm-amd64", "main-vllm-framework-amd64")
    before = {tag: present(stack.ecr.client().image(REPO, tag)) for tag in moving}
    acr_before = present(stack.acr.client().image(REPO, "nightly-vllm-amd64"))
    proc = stack.run(older)
    assert proc.returncode == 0, proc.stdout[-5000:]
    for tag in moving:  # where a newer night left them
        after = present(stack.ecr.client().image(REPO, tag))
        assert (after.digest, after.labels[LABEL_LOGICAL_DATE]) == (
            before[tag].digest,
            before[tag].labels[LABEL_LOGICAL_DATE],
        )
        assert after.labels[LABEL_LOGICAL_DATE] > older
    assert present(stack.acr.client().image(REPO, "nightly-vllm-amd64")).digest == acr_before.digest
    old_tag = f"nightly-vllm-amd64-run-{tag_safe_run_id(run_id_of(proc.stdout))}"
    assert stack.ecr.client().image(REPO, old_tag).labels[LABEL_LOGICAL_DATE] == older
    assert stack.acr.client().image(REPO, old_tag) is not None
    assert "Not moving nightly-vllm-amd64" in proc.stdout


def test_rerunning_build_and_push_tasks_gives_the_same_tags_and_images(stack, first_run, run_id):
    from tests.services import airflow_command, airflow_env

    def rerun(task_id: str) -> None:
        env = airflow_env({"NIGHTLY_CI_CONFIG": str(stack.config), **stack.env})
        proc = airflow_command(["tasks", "test", "nightly_ci", task_id, run_id], env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-5000:]

    before = {t: present(stack.ecr.client().image(REPO, t)).digest for t in stack.ecr.tags(REPO)}
    first_build = stack.metrics(run_id, "runtime")
    rerun("vllm_amd64.build_runtime")
    # The same commit, build args and labels: every step cached, the very same image (the
    # digest the run already handed on; BuildKit's local image id carries the build time).
    again = stack.metrics(run_id, "runtime")
    assert again["pushed"] == first_build["pushed"]
    assert again["steps_cached"] == again["steps_total"]
    rerun("vllm_amd64.push_runtime_ecr")
    after = {t: present(stack.ecr.client().image(REPO, t)).digest for t in stack.ecr.tags(REPO)}
    assert after == before


def test_rebuild_on_an_emptied_engine_pulls_the_framework_image_and_hits_its_cache(stack, first_run):
    # An emptied builder: an engine with the base images only and no build cache (another
    # engine than the one the first night built on, which other tests share).
    with empty_engine_of_its_own("rebuild", *AMD64_BASES) as emptied:
        assert not non_base_images(emptied.client())
        night = "2026-11-28T08:00:00+00:00"
        proc = stack.run(night, env={"DOCKER_HOST": emptied.url})
    assert proc.returncode == 0, proc.stdout[-5000:]
    framework = stack.metrics(run_id_of(proc.stdout), "framework")
    runtime = stack.metrics(run_id_of(proc.stdout), "runtime")
    assert framework["cache_from"] == [
        f"{stack.ecr.host}/{REPO}:main-vllm-framework-amd64",  # last night's framework image
        f"{stack.ecr.host}/{REPO}:nightly-vllm-amd64",  # and runtime image of the cell
    ]
    # Every Dockerfile step comes from the registry's inline cache (labels are not steps).
    assert framework["steps_cached"] == framework["steps_total"] >= 8
    assert runtime["steps_cached"] == runtime["steps_total"] > framework["steps_total"]
    assert f"importing cache manifest from {stack.ecr.host}/{REPO}:main-vllm-framework-amd64" in proc.stdout


def test_the_summary_of_a_one_cell_run_is_stored_in_s3(stack, first_run, run_id):
    key = f"nightly/{tag_safe_run_id(run_id)}/results.json"
    results = json.loads(stack.s3().get_object(Bucket=stack.bucket, Key=key)["Body"].read())
    assert (results["passed"], results["total"], results["success"]) == (9, 9, True)  # the selected cell only
    assert {r["task_id"].split(".")[0] for r in results["rows"]} == {"vllm_amd64"}
    md = stack.s3().get_object(Bucket=stack.bucket, Key=key.replace(".json", ".md"))["Body"].read().decode()
    assert "**Summary: 9/9 jobs passed**" in md
