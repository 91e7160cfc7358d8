"""Suites for real in built images on the local engine: results come back over the
engine's API, timeouts kill and remove, arm64 collects under qemu, nothing is left."""

from __future__ import annotations

import io
import tarfile
import textwrap

import docker
import pytest

from include.nightly_ci.plan import pytest_command
from include.nightly_ci.suites.kubernetes import fill_from_pod_log, pod_script
from include.nightly_ci.suites.run import (
    COLLECTED,
    FAILED,
    PASSED,
    TIMEOUT,
    SuiteRun,
    run_in_docker,
)
from tests.services import ENGINE, ROOT, build_sample

pytestmark = pytest.mark.integration
RESULTS = "/workspace/test-results"
JUNIT = f"{RESULTS}/pytest_test_report.xml"
LABEL = "dev.nightly-ci.test"
BAD_TESTS = textwrap.dedent(
    """
    import time

    import pytest


    @pytest.mark.unit
    @pytest.mark.nightly
    def test_broken_on_purpose():
        assert 1 == 2, "broken on purpose"


    @pytest.mark.integration
    @pytest.mark.nightly
    def test_hangs():
        print("about to hang", flush=True)
        time.sleep(3600)
    """
)


@pytest.fixture(scope="module")
def engine(provisioned):
    return docker.APIClient(base_url=ENGINE, timeout=600)


def sample_image(engine, arch: str) -> str:
    return build_sample(arch)


@pytest.fixture(scope="module")
def amd64_image(engine):
    return sample_image(engine, "amd64")


@pytest.fixture(scope="module")
def broken_image(engine, amd64_image):
    """The sample image plus a failing and a hanging test."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (
            ("Dockerfile", f"FROM {amd64_image}\nCOPY test_bad.py /workspace/tests/unit/\n"),
            ("test_bad.py", BAD_TESTS),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    out = list(
        engine.build(
            fileobj=context,
            custom_context=True,
            tag="nightly-ci-test/broken:latest",
            rm=True,
            forcerm=True,
            decode=True,
        )
    )
    return next(c["aux"]["ID"] for c in out if "aux" in c)


def run_suite(engine, image, marker, *, mode="run", timeout=120, gpus=0, suite="unit", lines=None):
    run = SuiteRun("vllm_amd64", suite, mode, image, marker)
    return run_in_docker(
        engine,
        run,
        command=list(pytest_command(marker, mode, RESULTS)),
        workdir="/workspace",
        junit_path=None if mode == "collect" else JUNIT,
        timeout_sec=timeout,
        gpus=gpus,
        cpus=1,
        memory=None,
        network_mode="none",
        labels={LABEL: suite},
        sink=(lines if lines is not None else []).append,
    )


def leftovers(engine) -> list:
    return engine.containers(all=True, filters={"label": LABEL})


def test_a_suite_runs_in_a_built_image_and_its_junit_comes_back(engine, amd64_image):
    lines: list[str] = []
    run = run_suite(engine, amd64_image, "unit and (nightly or post_merge or pre_merge)", lines=lines)
    assert run.outcome == PASSED and run.exit_code == 0
    # 4: the sample's flaky test passes without its marker (no commit added it to this image).
    assert run.counts == {"tests": 4, "passed": 4, "failed": 0, "skipped": 0, "errors": 0}
    assert "<testsuite" in run.junit
    assert "4 passed" in run.output and any("4 passed" in line for line in lines)  # streamed live too
    assert leftovers(engine) == []


def test_a_failing_tests_junit_and_output_come_back(engine, broken_image):
    run = run_suite(engine, broken_image, "unit and (nightly or post_merge or pre_merge)")
    assert run.outcome == FAILED and run.exit_code == 1
    assert run.counts["failed"] == 1 and run.counts["passed"] == 4
    assert "broken on purpose" in run.output and "test_broken_on_purpose" in run.junit
    assert leftovers(engine) == []


def test_a_hanging_test_is_killed_at_its_timeout_removed_and_its_output_kept(engine, broken_image):
    run = run_suite(engine, broken_image, "integration and nightly", timeout=8, suite="integration")
    assert run.timed_out and run.outcome == TIMEOUT
    assert 8 <= run.duration_sec < 60
    # What pytest printed before the kill: the tests that passed and the one that hung.
    assert "test_image_arch_matches_machine PASSED" in run.output
    assert run.output.rstrip().endswith("tests/unit/test_bad.py::test_hangs")
    assert leftovers(engine) == []
    assert run.result({}).to_json()["outcome"] == TIMEOUT


def test_arm64_collect_only_under_qemu(engine):
    image = sample_image(engine, "arm64")
    assert engine.inspect_image(image)["Architecture"] == "arm64"
    run = run_suite(engine, image, "unit and (nightly or post_merge or pre_merge)", mode="collect")
    assert run.outcome == COLLECTED and run.counts == {"collected": 4}
    assert run.junit is None
    none = run_suite(engine, image, "gpu_8", mode="collect")
    assert none.outcome == "no_tests"


def test_a_refused_gpu_request_leaves_no_container(engine, amd64_image):
    with pytest.raises(docker.errors.APIError, match="could not select device driver"):
        run_suite(engine, amd64_image, "unit", gpus=2)
    assert leftovers(engine) == []


def test_the_pod_script_returns_results_through_its_log(engine, broken_image):
    """The Kubernetes path's entry point, run for real in the image (no cluster here):
    its log is all that comes back (no XCom sidecar), the JUnit in its last line."""
    from include.nightly_ci.plan import load_plan

    job = next(
        j
        for j in load_plan(str(ROOT / "include" / "config" / "nightly_ci.yaml")).cell("vllm", "amd64").tests
        if j.suite == "unit"
    )
    container = engine.create_container(
        broken_image,
        command=["bash", "-c", pod_script(job.command, "/workspace", job.junit_path, job.timeout_minutes * 60)],
        labels={LABEL: "pod"},
        host_config=engine.create_host_config(network_mode="none"),
    )
    try:
        engine.start(container)
        assert engine.wait(container, timeout=120)["StatusCode"] == 0  # the script reports; it does not fail
        lines = engine.logs(container).decode().splitlines()
    finally:
        engine.remove_container(container, force=True)
    run = SuiteRun("vllm_amd64", "unit", "run", "img", job.marker)
    assert fill_from_pod_log(lines, run, timeout_sec=job.timeout_minutes * 60)
    assert run.exit_code == 1 and not run.timed_out
    assert run.counts["failed"] == 1 and "broken on purpose" in run.output
