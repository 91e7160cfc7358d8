"""Builds that fail for causes outside the Dockerfile (AUDIT-RELIABILITY.md M7), for real
with BuildKit: a base image whose registry answers 5xx or 429, or drops the connection,
is a retried infra failure; a RUN step that fails is the build's and fails at once."""

from __future__ import annotations

import http.server
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow.sdk import RetryAction

from include.nightly_ci.build.builder import BuildKit, BuildSpec
from include.nightly_ci.dag import FAIL_FAST
from include.nightly_ci.errors import BuildError, BuildUnavailable
from include.nightly_ci.records import BUILD, INFRA, classify_failure
from tests.services import DOCKER_CLI

pytestmark = pytest.mark.integration
BASE = "nightly-ci-base:bookworm-amd64"


def answering(status: int, body: bytes = b"") -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def registry_503() -> Iterator[int]:
    yield from answering(503, b"upstream connect error")


@pytest.fixture
def registry_429() -> Iterator[int]:
    yield from answering(
        429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit"}]}'
    )


def serve_connections(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback server that gives each connection to HANDLE (which closes it); yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


@pytest.fixture
def registry_reset() -> Iterator[int]:
    """Accepts and resets every connection (SO_LINGER 0), as a dropping proxy does."""

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    yield from serve_connections(reset)


@pytest.fixture
def registry_eof() -> Iterator[int]:
    """Reads each request and closes the connection without an answer, as a proxy or a
    registry that goes away mid-request does: Go's client says only `...: EOF` (seen with
    the resetting server above on a busy machine, where its reset came after the request)."""

    def close_after_the_request(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk

    yield from serve_connections(close_after_the_request)


def build(tmp: Path, dockerfile: str) -> Exception:
    (tmp / "Dockerfile").write_text(dockerfile)
    spec = BuildSpec(str(tmp), "Dockerfile", "final", "linux/amd64", "nightly-ci-test/faults:latest")
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as out, pytest.raises(Exception) as info:
        BuildKit(DOCKER_CLI, {}).build(spec, f"{out}/iid", lines.append)
    return info.value


@pytest.mark.parametrize("fixture", ["registry_503", "registry_429", "registry_reset", "registry_eof"])
def test_a_base_image_its_registry_fails_to_deliver_is_retried_infra(request, provisioned, tmp_path, fixture):
    port = request.getfixturevalue(fixture)
    err = build(tmp_path, f"FROM 127.0.0.1:{port}/nvidia/cuda-dl-base:25.01 AS final\nRUN true\n")
    assert isinstance(err, BuildUnavailable), err
    assert FAIL_FAST.evaluate(err, try_number=1, max_tries=3).action == RetryAction.DEFAULT
    assert classify_failure("build", type(err).__name__, str(err)) == INFRA


def test_a_failing_run_step_is_the_build_and_fails_at_once(provisioned, tmp_path):
    err = build(tmp_path, f"FROM {BASE} AS final\nRUN echo compiling && exit 3\n")
    assert type(err) is BuildError and "exit 3" in str(err)
    assert FAIL_FAST.evaluate(err, try_number=1, max_tries=3).action == RetryAction.FAIL
    assert classify_failure("build", type(err).__name__, str(err)) == BUILD
