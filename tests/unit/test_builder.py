"""The BuildKit layer without an engine: the command it runs, and what it reads from
BuildKit's plain progress output (lines as the engine printed them here)."""

from __future__ import annotations

import pytest

from include.nightly_ci.build.builder import BuildKit, BuildSpec, Progress

# A rebuild with every step from the registry's cache, as Docker 20.10's BuildKit printed
# it on this machine (digest lines and blank lines kept: they come in the real stream).
CACHED = """\
#1 [internal] load build definition from Dockerfile.vllm
#1 sha256:7c0fe15caec28dc3dcc80c1fdb4ba7ad2152cf18bb0da2a1d910873ea46cbe0b
#1 DONE 0.0s

#24 importing cache manifest from 127.0.0.1:5101/ai-dynamo/dynamo@sha256:cf7e66
#24 DONE 0.0s

#6 [wheel_builder 1/2] FROM docker.io/library/nightly-ci-base:bookworm-arm64
#6 DONE 0.0s

#7 [linux/arm64 dynamo_base 2/2] RUN --mount=type=cache,target=/root/.cache/uv,sharing=locked     mkdir -p /opt/dynamo
#7 CACHED

#9 [wheel_builder 2/2] RUN --mount=type=secret,id=aws-key-id     --mount=type=secret,id=aws-secret-id sh build_wheel.sh
#9 CACHED

#10 [framework 2/7] COPY --from=dynamo_base /opt/dynamo /opt/dynamo
#10 CACHED

#15 [runtime 8/9] COPY tests /workspace/tests
#15 DONE 0.4s

#16 [runtime 9/9] RUN python3 -m compileall -q /workspace/src
#16 0.911 compiling
#16 DONE 1.2s

#17 exporting to image
#17 DONE 0.0s
"""

FAILED = """\
#5 [2/3] RUN echo before
#5 0.045 before
#5 DONE 0.1s

#6 [3/3] RUN echo boom >&2 && exit 3
#6 0.037 boom
#6 ERROR: executor failed running [/bin/sh -c echo boom >&2 && exit 3]: exit code: 3
------
 > [3/3] RUN echo boom >&2 && exit 3:
------
executor failed running [/bin/sh -c echo boom >&2 && exit 3]: exit code: 3
"""


def feed(text: str) -> Progress:
    progress = Progress()
    for line in text.splitlines():
        progress.feed(line)
    return progress


def test_steps_cache_hits_and_stage_times_from_the_plain_output():
    result = feed(CACHED).result("sha256:abc")
    # FROM, [internal], cache imports and the export are not steps of the Dockerfile.
    assert [(s.stage, s.index, s.instruction, s.cached) for s in result.steps] == [
        ("dynamo_base", 2, "RUN", True),
        ("framework", 2, "COPY", True),
        ("runtime", 8, "COPY", False),
        ("runtime", 9, "RUN", False),
        ("wheel_builder", 2, "RUN", True),
    ]
    assert (result.steps_total, result.steps_cached, result.cache_hit_rate) == (5, 3, 0.6)
    assert result.stage_seconds() == {"dynamo_base": 0.0, "framework": 0.0, "runtime": 1.6, "wheel_builder": 0.0}


def test_a_failure_names_the_step_and_keeps_what_it_printed():
    progress = feed(FAILED)
    assert [s.failed for s in progress.result("").steps] == [False, True]
    text = progress.failure(1)
    assert text.startswith("build failed at [3/3] RUN echo boom >&2 && exit 3: executor failed running")
    assert "0.037 boom" in text and "exit code: 3" in text


def spec(**changes) -> BuildSpec:
    values = {
        "context_dir": "/ctx",
        "dockerfile": "container/Dockerfile.vllm",
        "target": "runtime",
        "platform": "linux/arm64",
        "tag": "nightly-ci/vllm-arm64:runtime",
        "build_args": {"ARCH": "arm64"},
        "labels": {"org.opencontainers.image.revision": "abc"},
        "cache_from": ("reg/repo@sha256:1", "reg/repo:nightly-vllm-arm64"),
        "cache_to": "reg/repo:vllm-arm64-cache",
        "secrets": {"aws-key-id": "/tmp/s/aws-key-id"},
        "network_mode": "none",
    }
    return BuildSpec(**{**values, **changes})


def kit(buildx: bool) -> BuildKit:
    k = BuildKit("/usr/bin/docker", {})
    k.__dict__["buildx"] = buildx  # what `docker buildx version` would have said
    return k


def test_the_engines_builtin_buildkit_command():
    cmd = kit(buildx=False).command(spec(), "/tmp/iid")
    assert cmd[:3] == ["/usr/bin/docker", "build", "--progress=plain"]
    assert cmd[cmd.index("--file") + 1] == "/ctx/container/Dockerfile.vllm" and cmd[-1] == "/ctx"
    assert "BUILDKIT_INLINE_CACHE=1" in cmd and "ARCH=arm64" in cmd
    assert [cmd[i + 1] for i, c in enumerate(cmd) if c == "--cache-from"] == [
        "reg/repo@sha256:1",
        "reg/repo:nightly-vllm-arm64",
    ]
    assert "--cache-to" not in cmd  # the built-in BuildKit cannot export a registry cache
    assert cmd[cmd.index("--secret") + 1] == "id=aws-key-id,src=/tmp/s/aws-key-id"
    assert cmd[cmd.index("--network") + 1] == "none" and cmd[cmd.index("--platform") + 1] == "linux/arm64"


def test_with_buildx_the_cache_goes_to_the_registry_too():
    cmd = kit(buildx=True).command(spec(), "/tmp/iid")
    assert cmd[:4] == ["/usr/bin/docker", "buildx", "build", "--load"]
    assert "type=registry,ref=reg/repo@sha256:1" in cmd
    assert cmd[cmd.index("--cache-to") + 1] == "type=registry,ref=reg/repo:vllm-arm64-cache,mode=max"


@pytest.mark.parametrize("secret_file", ["/tmp/s/aws-key-id"])
def test_no_secret_value_is_ever_on_the_command_line(secret_file):
    cmd = " ".join(kit(buildx=False).command(spec(secrets={"aws-key-id": secret_file}), "/tmp/iid"))
    assert f"src={secret_file}" in cmd and "AKIA" not in cmd
