"""Registry failures by cause (AUDIT-RELIABILITY.md M7), against real servers on loopback:
AWS refusing the credentials or missing them fails at once and is infra, an AWS endpoint
that is down is retried, and a registry answering 429 is waited for as long as its
Retry-After says (within a bound)."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from include.nightly_ci.dag import FAIL_FAST
from include.nightly_ci.errors import RegistryAuthError, RegistryUnavailable
from include.nightly_ci.images.registries import RegistryAuth, RegistryClient, registry_auth, retry_transient
from include.nightly_ci.plan import Registry
from include.nightly_ci.records import INFRA, classify_failure
from tests.services import MotoServer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_moto() -> Iterator[MotoServer]:
    """moto checking credentials as AWS does: after its first two calls (an IAM user and
    its key, made here) every request must be signed by a known key."""
    server = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "2"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def aws_key(strict_moto) -> tuple[str, str]:
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=strict_moto.url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    iam.create_user(UserName="nightly-ci")
    key = iam.create_access_key(UserName="nightly-ci")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture
def no_ambient_aws(monkeypatch, tmp_path):
    """No credentials from the machine: no profile files, no instance metadata (not even tried)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def aws_connection(monkeypatch, conn_id: str, endpoint: str, login: str | None, password: str | None) -> Registry:
    conn = {
        "conn_type": "aws",
        "login": login,
        "password": password,
        "extra": {
            "region_name": "us-east-1",
            "endpoint_url": endpoint,
            "config_kwargs": {"retries": {"max_attempts": 1}},
        },
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return Registry("ecr", "ecr", conn_id, "ai-dynamo/dynamo", host_override="127.0.0.1:5000")


def fails_fast_as_infra(exc: BaseException) -> None:
    from airflow.sdk import RetryAction

    assert FAIL_FAST.evaluate(exc, try_number=1, max_tries=3).action == RetryAction.FAIL
    assert classify_failure("build", type(exc).__name__, str(exc)) == INFRA


@pytest.mark.parametrize("which", ["unknown key", "wrong secret"])
def test_aws_refusing_the_credentials_fails_fast_as_infra(monkeypatch, no_ambient_aws, strict_moto, aws_key, which):
    key_id, secret = aws_key
    login, password = ("AKIAUNKNOWN000000000", "nope") if which == "unknown key" else (key_id, "wrong-" + secret)
    reg = aws_connection(monkeypatch, "aws_refused", strict_moto.url, login, password)
    with pytest.raises(RegistryAuthError, match=r"registry 'ecr'.*connection 'aws_refused'") as info:
        registry_auth(reg)
    assert password not in str(info.value)
    fails_fast_as_infra(info.value)


def test_no_aws_credentials_at_all_fails_fast_as_infra(monkeypatch, no_ambient_aws, strict_moto):
    reg = aws_connection(monkeypatch, "aws_empty", strict_moto.url, None, None)
    with pytest.raises(RegistryAuthError, match=r"connection 'aws_empty'.*(?i:unable to locate credentials)") as info:
        registry_auth(reg)
    fails_fast_as_infra(info.value)


def test_an_aws_endpoint_that_is_down_is_retried_as_infra(monkeypatch, no_ambient_aws):
    from airflow.sdk import RetryAction

    reg = aws_connection(monkeypatch, "aws_down", f"http://127.0.0.1:{free_port()}", "AKIAX", "y")
    with pytest.raises(RegistryUnavailable, match="connection 'aws_down'") as info:
        registry_auth(reg)
    assert FAIL_FAST.evaluate(info.value, try_number=1, max_tries=3).action == RetryAction.DEFAULT
    assert classify_failure("build", type(info.value).__name__, str(info.value)) == INFRA


@dataclass
class RateLimiter:
    """A proxy in front of a registry that answers the first LIMITED requests with 429
    (and RETRY_AFTER, when set), then passes every request through."""

    upstream: str
    limited: int
    retry_after: str | None
    seen: list[tuple[float, int]] = field(default_factory=list)  # (when, status answered)

    def serve(self) -> http.server.ThreadingHTTPServer:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                if len(proxy.seen) < proxy.limited:
                    proxy.seen.append((time.monotonic(), 429))
                    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
                    self.send_response(429)
                    if proxy.retry_after is not None:
                        self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                up = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                up.request(self.command, self.path, body=self.rfile.read(length) if length else None, headers=headers)
                resp = up.getresponse()
                data = resp.read()
                proxy.seen.append((time.monotonic(), resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                up.close()

            do_GET = do_HEAD = do_PUT = do_POST = _any

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.mark.parametrize(("retry_after", "waited"), [("2", (2.0, 3.5)), ("3600", (3.0, 4.5)), (None, (0.5, 2.0))])
def test_a_429_is_backed_off_as_retry_after_says_within_a_bound(registries, retry_after, waited):
    """Retry-After: 2 is waited for; an hour is capped at backoff_max (3 s here); without
    one, the usual backoff (0.5 s). Then the request reaches the registry."""
    reg = registries()
    proxy = RateLimiter(reg.host, limited=1, retry_after=retry_after)
    server = proxy.serve()
    try:
        auth = RegistryAuth("hub", "hub_conn", f"127.0.0.1:{server.server_address[1]}", reg.user, reg.password)
        started = time.monotonic()
        tags = retry_transient(
            "list tags", lambda: RegistryClient(auth).tags("nightly-ci/none"), attempts=3, backoff=0.5, backoff_max=3
        )
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
    assert tags == []
    assert proxy.seen[0][1] == 429 and proxy.seen[-1][1] in (200, 404)
    gap = proxy.seen[1][0] - proxy.seen[0][0]
    assert waited[0] <= gap < waited[1], (gap, elapsed)


def test_429_without_end_gives_up_as_retryable_infra(registries):
    from airflow.sdk import RetryAction

    reg = registries()
    server = RateLimiter(reg.host, limited=100, retry_after="0").serve()
    try:
        auth = RegistryAuth("hub", "hub_conn", f"127.0.0.1:{server.server_address[1]}", reg.user, reg.password)
        with pytest.raises(RegistryUnavailable, match=r"still failing after 2 attempts.*429") as info:
            retry_transient("list tags", lambda: RegistryClient(auth).tags("x"), attempts=2, backoff=0.1, backoff_max=1)
    finally:
        server.shutdown()
    assert FAIL_FAST.evaluate(info.value, try_number=1, max_tries=3).action == RetryAction.DEFAULT
    assert classify_failure("push", type(info.value).__name__, str(info.value)) == INFRA
