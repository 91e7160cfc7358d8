"""The sample's container files built for real with BuildKit, for amd64 and for arm64
(under qemu): everything the real project's files use works: cache, secret and bind
mounts, COPY --from, a runtime stage FROM another base image, .dockerignore, ARG before FROM."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import docker
import pytest

from include.nightly_ci.build.builder import BuildKit, BuildSpec
from tests.services import ALL_BASES, DOCKER_CLI, ROOT, ScratchEngine, empty_engine_of_its_own

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "dev" / "sample_project"
ALT = {"amd64": "x86_64", "arm64": "aarch64"}


@pytest.fixture(scope="module")
def builder(provisioned):
    """The builder: an engine of the module's own with only the base images and no build
    cache, so that the secrets' step really runs (see empty_engine_of_its_own)."""
    with empty_engine_of_its_own("buildkit", *ALL_BASES) as engine:
        yield engine


@pytest.fixture(scope="module")
def engine(builder):
    return docker.APIClient(base_url=builder.url, timeout=600)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict[str, str]:
    """sccache's two secrets, mounted by every build of the module as by every real build:
    BuildKit keeps a secret out of a step's cache key, so one build without them would
    leave the step cached for the next, which then never mounts them."""
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "key").write_text("AKIATEST")
    (folder / "secret").write_text("not-in-any-layer")
    return {"aws-key-id": str(folder / "key"), "aws-secret-id": str(folder / "secret")}


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """The sample project, plus what its .dockerignore keeps out of every build."""
    folder = tmp_path_factory.mktemp("ctx") / "sample"
    shutil.copytree(SAMPLE, folder)
    (folder / "tests" / "__pycache__").mkdir(exist_ok=True)
    (folder / "tests" / "__pycache__" / "stale.pyc").write_text("ignored")
    return folder


def build(
    builder: ScratchEngine,
    context: Path,
    arch: str,
    secrets: dict[str, str],
    framework: str = "vllm",
    **args: str,
):
    lines: list[str] = []
    spec = BuildSpec(
        context_dir=str(context),
        dockerfile=f"container/Dockerfile.{framework}",
        target="runtime",
        platform=f"linux/{arch}",
        tag=f"nightly-ci-test/buildkit-{framework}:{arch}",
        build_args={"FRAMEWORK": framework, "ARCH": arch, "ARCH_ALT": ALT[arch], **args},
        secrets=secrets,
        network_mode="none",
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = BuildKit(DOCKER_CLI, {"DOCKER_HOST": builder.url}).build(spec, f"{tmp}/iid", lines.append)
    return result, "\n".join(lines)


def run(engine, image: str, arch: str, script: str) -> str:
    container = engine.create_container(
        image,
        ["sh", "-c", script],
        platform=f"linux/{arch}",
        host_config=engine.create_host_config(network_mode="none"),
    )
    try:
        engine.start(container)
        engine.wait(container, timeout=120)
        return engine.logs(container).decode()
    finally:
        engine.remove_container(container, force=True)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_every_buildkit_feature_of_the_real_files_in_a_real_build(builder, engine, context, secrets, arch):
    result, log = build(builder, context, arch, secrets)
    assert engine.inspect_image(result.image_id)["Architecture"] == arch
    # Every stage of the real files' shape ran; the runtime stage copied from the others.
    assert {s.stage for s in result.steps} == {"dynamo_base", "wheel_builder", "framework", "runtime"}
    assert "COPY --from=framework /opt/framework /opt/framework" in log
    out = run(
        engine,
        result.image_id,
        arch,
        "uname -m; cat /opt/wheels/build-info /opt/framework/build-info; echo base=$NIGHTLY_CI_BASE; "
        "ls /workspace/tests; cd /workspace && python3 -m pytest -q -m 'unit or integration' 2>&1 | tail -1",
    )
    assert out.splitlines()[0] == ALT[arch]  # it runs as its arch (under qemu for arm64)
    assert f"arch={arch}" in out and f"arch_alt={ALT[arch]}" in out
    assert "sccache=s3" in out  # both secrets reached the step that mounted them
    assert "base=runtime" in out  # the runtime stage starts FROM the runtime base image
    assert "__pycache__" not in out  # .dockerignore kept the stale cache out of the context
    assert "6 passed" in out  # 4 unit (the flaky one passes without its marker file), 2 integration
    # The bind mount of container/deps and the default of an ARG before FROM.
    assert f"wheel=dynamo-vllm-py3-none-linux_{ALT[arch]}.whl" in out and "runtime_image_tag=bookworm-" in out


def test_a_cache_mount_survives_between_builds_on_one_builder(builder, engine, context, secrets):
    """The step that mounts the uv cache runs again (another Python version) and finds
    what the first run left in the cache: nothing of it is in a layer."""
    first, _ = build(builder, context, "amd64", secrets, PYTHON_VERSION="3.11-cache-a")
    second, log = build(builder, context, "amd64", secrets, PYTHON_VERSION="3.11-cache-b")
    before = int(run(engine, first.image_id, "amd64", "cat /opt/dynamo/uv-cache-entries").strip())
    after = int(run(engine, second.image_id, "amd64", "cat /opt/dynamo/uv-cache-entries").strip())
    assert after > before
    assert "python-3.11-cache-a" not in run(engine, second.image_id, "amd64", "ls -a /root/.cache/uv 2>&1")
    assert "[dynamo_base 2/2] RUN --mount=type=cache" in log


def test_each_framework_has_its_own_file(builder, engine, context, secrets):
    for framework in ("sglang", "trtllm"):
        result, _ = build(builder, context, "amd64", secrets, framework)
        out = run(engine, result.image_id, "amd64", "cat /opt/framework/build-info; serve")
        assert f"framework={framework}" in out and f"{framework} serving on amd64" in out
