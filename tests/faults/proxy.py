"""An HTTP proxy on loopback that injects faults between the project and a real server
(a registry, moto's S3): answers with a status for a while, stalls, or goes down.

Everything else is forwarded byte for byte, the Host header included, so a registry's
upload Location points back through the proxy. Each request is noted (time, method,
path, status) for the tests to measure what the client did.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    """Answer STATUS (with HEADERS) to the requests MATCH picks: for SECONDS from the first
    of them, or for TIMES of them, or always; STALL holds the connection open without an
    answer instead."""

    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float | None = None
    times: int | None = None
    stall: bool = False
    match: Callable[[str, str], bool] = lambda method, path: True
    until: float | None = None  # set by the first request it answers, from SECONDS

    def applies(self, method: str, path: str) -> bool:
        if not self.match(method, path):
            return False
        if self.seconds is not None and self.until is None:
            self.until = time.monotonic() + self.seconds
        if self.until is not None and time.monotonic() >= self.until:
            return False
        return self.times is None or self.times > 0


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.upstream_port = upstream_port
        self.fault: Fault | None = None
        self.seen: list[tuple[float, str, str, int]] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def start(self) -> FaultProxy:
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def inject(self, fault: Fault | None) -> None:
        """FAULT from now on (None: none); what was seen before is forgotten."""
        with self.lock:
            self.fault = fault
            self.seen = []

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if any (counting it against TIMES)."""
        with self.lock:
            fault = self.fault
            if fault is None or not fault.applies(method, path):
                return None
            if fault.times is not None:
                fault.times -= 1
            return fault

    def note(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), method, path, status))

    def statuses(self, method: str | None = None) -> list[int]:
        return [s for _, m, _, s in self.seen if method is None or m == method]


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._body()
        fault = self.server.take(self.command, self.path)
        if fault is not None and fault.stall:
            self.server.note(self.command, self.path, 0)
            time.sleep(3600)  # the client's own timeout ends it
            return
        if fault is not None:
            payload = b'{"errors": [{"code": "UNAVAILABLE", "message": "injected by the fault proxy"}]}'
            self.send_response(fault.status)
            for name, value in fault.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload if self.command != "HEAD" else b"")
            self.server.note(self.command, self.path, fault.status)
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.send_error(502)
            self.server.note(self.command, self.path, 502)
            return
        finally:
            upstream.close()
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        # A HEAD's length is the object's, not that of its empty body: s3fs sizes its reads by it.
        head_length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", head_length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.server.note(self.command, self.path, resp.status)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


def refuse_connections(port: int) -> None:
    """Nothing listens on PORT (checked): a server that is down."""
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something listens on {port}"
