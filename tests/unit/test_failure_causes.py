"""Failure classes and retries follow the cause (AUDIT-RELIABILITY.md M7): what a build's
own output says failed (the Dockerfile, the network to a base image's registry, the
engine, the disk), and how each class of error is retried and reported."""

from __future__ import annotations

import pytest
from airflow.sdk import RetryAction

from include.nightly_ci import errors
from include.nightly_ci.build.builder import Progress, build_failure
from include.nightly_ci.dag import FAIL_FAST
from include.nightly_ci.records import BUILD, INFRA, classify_failure

# BuildKit's plain progress of a build whose base image can't be had, up to the verdict.
_FROM = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 transferring dockerfile: 120B done",
    "#1 DONE 0.0s",
    "#2 [internal] load metadata for nvcr.io/nvidia/cuda-dl-base:25.01-cuda12.8-devel-ubuntu24.04",
]
_RUN_FAILS = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 DONE 0.0s",
    "#5 [framework 3/9] RUN make wheels",
    "#5 0.512 make: *** [Makefile:3: wheels] Error 2",
    '#5 ERROR: process "/bin/sh -c make wheels" did not complete successfully: exit code: 2',
    "------",
    " > [framework 3/9] RUN make wheels:",
    'ERROR: failed to solve: process "/bin/sh -c make wheels" did not complete successfully: exit code: 2',
]


def failure_of(lines: list[str]) -> errors.NightlyCiError:
    progress = Progress()
    for line in lines:
        progress.feed(line)
    return build_failure(progress, 1)


def action(exc: BaseException) -> RetryAction:
    return FAIL_FAST.evaluate(exc, try_number=1, max_tries=3).action


@pytest.mark.parametrize(
    "verdict",
    [
        'failed to do request: Head "https://nvcr.io/v2/nvidia/cuda-dl-base/manifests/25.01": net/http: TLS handshake timeout',
        'failed to do request: Head "https://registry-1.docker.io/v2/library/ubuntu/manifests/24.04": net/http: '
        "request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
        "read tcp 10.1.2.3:51234->104.18.121.25:443: read: connection reset by peer",
        "httpReadSeeker: failed open: unexpected status code https://nvcr.io/v2/x/blobs/sha256:ab: 503 Service Unavailable",
        "unexpected status from HEAD request to https://nvcr.io/v2/x/manifests/1: 502 Bad Gateway",
        "failed to authorize: failed to fetch anonymous token: unexpected status from GET request to "
        "https://auth.docker.io/token?scope=repository: 429 Too Many Requests",
        "toomanyrequests: You have reached your pull rate limit.",
        "dial tcp: lookup nvcr.io on 127.0.0.53:53: server misbehaving",
    ],
)
def test_a_base_image_the_network_or_its_registry_failed_to_deliver_is_retried_infra(verdict):
    err = failure_of([*_FROM, f"#2 ERROR: {verdict}", f"ERROR: failed to solve: nvcr.io/nvidia/x: {verdict}"])
    assert isinstance(err, errors.BuildUnavailable), err
    assert action(err) == RetryAction.DEFAULT
    assert classify_failure("build", type(err).__name__, str(err)) == INFRA


@pytest.mark.parametrize(
    "verdict",
    [
        "ERROR: failed to solve: rpc error: code = Unavailable desc = error reading from server: EOF",
        "ERROR: failed to receive status: rpc error: code = Unavailable desc = closing transport due to: connection error",
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        # Debian's docker CLI 20.10 when the engine shuts down mid-build (tests/faults/test_engine_worker.py).
        "cannot write /tmp/nightly-ci-build-x/iid because server did not provide an image ID",
    ],
)
def test_an_engine_that_restarts_or_goes_away_mid_build_is_retried_infra(verdict):
    err = failure_of([*_RUN_FAILS[:4], verdict])
    assert isinstance(err, errors.EngineUnavailable), err
    assert action(err) == RetryAction.DEFAULT
    assert classify_failure("build", type(err).__name__, str(err)) == INFRA


def test_a_full_disk_is_infra_and_retried_even_inside_a_run_step():
    lines = [*_RUN_FAILS[:3], "#5 12.1 OSError: [Errno 28] No space left on device", *_RUN_FAILS[4:]]
    err = failure_of(lines)
    assert isinstance(err, errors.BuildUnavailable) and "disk" in str(err)
    assert action(err) == RetryAction.DEFAULT
    assert classify_failure("build", type(err).__name__, str(err)) == INFRA


def test_an_engine_that_loses_a_layer_while_exporting_is_retried_infra():
    """Docker 20.10's built-in BuildKit: every step CACHED, then the export to the engine's
    image store misses a layer (moby/moby#41595; `make test` met it in the demo's
    trtllm/amd64 framework build). The engine's fault, not the Dockerfile's: infra, and
    retried (on an engine whose storage is damaged every try meets it, and the message
    says the engine must be made again)."""
    lines = [
        "#14 [framework 7/7] RUN uname -m > /opt/framework/build-machine",
        "#14 pulling sha256:0b453890a67cc95e636e5e5c3a3456e54a336fad76a081dc9353e267e4193c66 0.2s done",
        "#14 CACHED",
        "#17 exporting to image",
        "#17 exporting layers done",
        "#17 writing image sha256:deb7fbdc280b07a3b068f8c03afaf5ed8c788ed0825c47cce7cd1c1c57b07205 done",
        "#17 ERROR: failed to get layer sha256:cef47b6edeae6026a4c5efab3c85c20285b944b1969ec54bc1ec97f8dc720c3c: "
        "layer does not exist",
        "------",
        " > exporting to image:",
        "------",
        "failed to get layer sha256:cef47b6edeae6026a4c5efab3c85c20285b944b1969ec54bc1ec97f8dc720c3c: layer does not exist",
    ]
    err = failure_of(lines)
    assert isinstance(err, errors.BuildUnavailable) and "image store" in str(err) and "made again" in str(err), err
    assert action(err) == RetryAction.DEFAULT
    assert classify_failure("build", type(err).__name__, str(err)) == INFRA


def test_a_run_step_that_fails_is_the_build_and_fails_at_once():
    err = failure_of(_RUN_FAILS)
    assert type(err) is errors.BuildError and "RUN make wheels" in str(err)
    assert action(err) == RetryAction.FAIL
    assert classify_failure("build", type(err).__name__, str(err)) == BUILD


@pytest.mark.parametrize(
    ("error_type", "text"),
    [
        (
            "ClientError",
            "An error occurred (UnrecognizedClientException) when calling the GetAuthorizationToken "
            "operation: The security token included in the request is invalid.",
        ),
        (
            "ClientError",
            "An error occurred (InvalidSignatureException) when calling the GetAuthorizationToken operation",
        ),
        ("NoCredentialsError", "Unable to locate credentials"),
        (
            "EndpointConnectionError",
            'Could not connect to the endpoint URL: "https://api.ecr.us-east-1.amazonaws.com/"',
        ),
        ("ClientAuthenticationError", "AADSTS7000215: Invalid client secret provided."),
        ("BuildError", "build failed: net/http: request canceled while waiting for connection"),
        ("RegistryError", "received unexpected HTTP status: 429 Too Many Requests"),
        # urllib3's own words (requests under the Docker SDK and the registry client).
        (
            "SuiteFailed",
            "HTTPConnectionPool(host='gpu-1', port=2375): Failed to establish a new connection: [Errno 111]",
        ),
    ],
)
def test_cloud_and_network_causes_are_infra_whatever_raised_them(error_type, text):
    assert classify_failure("build", error_type, text) == INFRA


def test_the_new_causes_are_retried_or_not_by_class():
    assert action(errors.RegistryRateLimited("429", retry_after=3)) == RetryAction.DEFAULT
    assert action(errors.BuildUnavailable("TLS handshake timeout")) == RetryAction.DEFAULT
    assert action(errors.RegistryAuthError("AWS refused")) == RetryAction.FAIL
