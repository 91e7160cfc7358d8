"""Registry error classification and retry backoff (no services)."""

from __future__ import annotations

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
