"""Registry error classification and retry backoff (no services)."""

from __future__ import annotations

import time

import pytest

from include.nightly_ci.errors import RegistryAuthError, RegistryError, RegistryUnavailable
from include.nightly_ci.images.engine import classify_push_error
from include.nightly_ci.images.registries import RegistryAuth, retry_transient

AUTH = RegistryAuth("ecr", "aws_nightly", "127.0.0.1:5000", "AWS", "s3cret")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("unauthorized: authentication required", RegistryAuthError),
        ("denied: requested access to the resource is denied", RegistryAuthError),
        ("no basic auth credentials", RegistryAuthError),
        ('Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused', RegistryUnavailable),
        ("received unexpected HTTP status: 503 Service Unavailable", RegistryUnavailable),
        ("received unexpected HTTP status: 500 Internal Server Error", RegistryUnavailable),
        ("net/http: TLS handshake timeout", RegistryUnavailable),
        ("manifest for x:y not found: manifest unknown: manifest unknown", RegistryError),
        ("error parsing HTTP 502 response body: Bad Gateway", RegistryUnavailable),
        ("received unexpected HTTP status: 504 Gateway Timeout", RegistryUnavailable),
        # A status code's digits inside a port or a digest are not a status: found by the
        # rebuild benchmark, whose registry listened on port 50373 (a missing cache image
        # was retried for 23 s as if the registry answered 503).
        (
            "manifest for 127.0.0.1:50373/ai-dynamo/dynamo:main-vllm-framework-amd64 not found: manifest unknown",
            RegistryError,
        ),
        ("manifest for 127.0.0.1:5000/r@sha256:0c502f504a503b not found: manifest unknown", RegistryError),
    ],
)
def test_engine_error_texts_are_classified(text, kind):
    err = classify_push_error(text, AUTH)
    assert type(err) is kind


def test_auth_errors_name_the_connection_and_hide_the_password():
    err = classify_push_error("unauthorized: authentication required", AUTH)
    assert "aws_nightly" in str(err) and "s3cret" not in str(err)


def test_transient_errors_back_off_exponentially_with_a_cap():
    sleeps: list[float] = []
    calls = iter([RegistryUnavailable("refused")] * 5 + ["ok"])

    def flaky():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry_transient("push", flaky, attempts=6, backoff=10, backoff_max=40, sleep=sleeps.append) == "ok"
    assert sleeps == [10, 20, 40, 40, 40]


def test_transient_errors_give_up_after_the_last_attempt():
    def down():
        raise RegistryUnavailable("503")

    with pytest.raises(RegistryUnavailable, match="still failing after 3 attempts"):
        retry_transient("push", down, attempts=3, backoff=1, backoff_max=1, sleep=lambda _: None)


def test_auth_errors_are_not_retried():
    sleeps: list[float] = []

    def denied():
        raise AUTH.auth_failure("401")

    with pytest.raises(RegistryAuthError):
        retry_transient("push", denied, attempts=5, backoff=1, backoff_max=1, sleep=sleeps.append)
    assert sleeps == []


@pytest.mark.parametrize(
    "text",
    [
        "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating",
        "TOOMANYREQUESTS: retry later",
        "received unexpected HTTP status: 429 Too Many Requests",
    ],
)
def test_a_429_from_the_engine_is_backed_off_not_permanent(text):
    """M7: a rate limit passes; it is waited out like any transient error."""
    err = classify_push_error(text, AUTH)
    assert isinstance(err, RegistryUnavailable) and not isinstance(err, RegistryAuthError)


def test_retry_after_sets_the_wait_within_the_cap():
    from include.nightly_ci.errors import RegistryRateLimited

    sleeps: list[float] = []
    limits = [RegistryRateLimited("429", retry_after=7), RegistryRateLimited("429", retry_after=900)]
    calls = iter([*limits, RegistryRateLimited("429"), "ok"])

    def limited():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    assert retry_transient("pull", limited, attempts=4, backoff=10, backoff_max=60, sleep=sleeps.append) == "ok"
    # What the registry asked for; an hour capped at backoff_max; the usual backoff without one.
    assert sleeps == [7, 60, 40]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 5.0), (" 0 ", 0.0), ("soon", None), ("-3", None), (None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_header_values(value, seconds):
    from include.nightly_ci.images.registries import retry_after_seconds

    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date_in_the_future():
    from email.utils import formatdate

    from include.nightly_ci.images.registries import retry_after_seconds

    wait = retry_after_seconds(formatdate(time.time() + 30, usegmt=True))
    assert wait is not None and 28 <= wait <= 30


def test_azure_refusing_the_identity_is_a_permanent_auth_error():
    """Azure's identity is not reachable here: its real exception classes are given to the
    translation that registry_auth applies to whatever a cloud SDK raises."""
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
    from azure.identity import CredentialUnavailableError

    from include.nightly_ci.images.cloud import cloud_failure
    from include.nightly_ci.plan import Registry

    reg = Registry("acr", "acr", "azure_registry", "ai-dynamo/dynamo")
    for exc in (ClientAuthenticationError("AADSTS7000215: Invalid client secret"), CredentialUnavailableError("no")):
        err = cloud_failure(reg, exc)
        assert isinstance(err, RegistryAuthError) and "connection 'azure_registry'" in str(err), exc
    assert type(cloud_failure(reg, ServiceRequestError("connection reset"))) is RegistryUnavailable
    assert cloud_failure(reg, KeyError("x")) is None


@pytest.mark.parametrize(
    ("host", "scheme"),
    [
        ("127.0.0.1:5000", "http"),
        ("localhost:5000", "http"),
        ("localhost", "http"),
        ("[::1]:5000", "http"),
        ("localhost.corp.example.com:5000", "https"),  # L1: a real host whose name starts with localhost
        ("127.example.com", "https"),
        ("registry.example.com", "https"),
    ],
)
def test_plain_http_only_to_loopback_itself(host, scheme):
    assert RegistryAuth("r", "c", host, "u", "p").scheme == scheme


def test_a_bearer_challenge_keeps_every_action_of_its_scope():
    """L2: `scope="repository:x:pull,push"` lost `push` when the challenge was split on commas."""
    from include.nightly_ci.images.registries import bearer_challenge

    params = bearer_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:ai-dynamo/dynamo:pull,push"'
    )
    assert params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:ai-dynamo/dynamo:pull,push",
    }
