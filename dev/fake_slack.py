"""A stand-in for Slack on loopback: the incoming-webhook and chat.postMessage endpoints.

Every request is appended to a JSON-lines file (method, path, headers, body, the answer
given, and the `ts` chat.postMessage answered: each message its own, as Slack gives).
Answers can be scripted per request, in order, with --script 'CODE[:RETRY_AFTER],...'
(for example '429:1,500,200'); after the script every request gets 200.

    python dev/fake_slack.py --port 5103 --log messages.jsonl [--script 429:1,200]
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeSlack(ThreadingHTTPServer):
    def __init__(self, port: int, log: Path, script: list[tuple[int, int | None]] | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.log_file = log
        self.script = list(script or [])
        self.lock = threading.Lock()
        self.posted = 0  # chat.postMessage answers each message its own ts, as Slack does

    def next_ts(self) -> str:
        with self.lock:
            self.posted += 1
            return f"1700000000.{self.posted:06d}"

    def next_answer(self) -> tuple[int, int | None]:
        with self.lock:
            return self.script.pop(0) if self.script else (200, None)

    def record(self, entry: dict) -> None:
        with self.lock, self.log_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")


IDENTITY = "nightly-ci stand-in slack"  # GET /health: "IDENTITY LOG-FILE", so provisioning knows it is its own


def identity(log: Path) -> str:
    return f"{IDENTITY} {Path(log).resolve()}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeSlack

    def do_GET(self) -> None:
        code, body = (200, identity(self.server.log_file).encode()) if self.path == "/health" else (404, b"")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        code, retry_after = self.server.next_answer()
        api = self.path.startswith("/api/")
        refused = code == 200 and refusal(_json(body))
        if refused:  # as Slack answers: the webhook with 400, the API with ok false
            code = 200 if api else 400
        ts = self.server.next_ts() if api and code == 200 and not refused else None
        self.server.record(
            {
                "path": self.path,
                "status": code,
                "api": api,
                "body": _json(body),  # a reply's thread_ts is in it
                "auth": bool(self.headers.get("Authorization")),
                "ts": ts,
            }
        )
        if api:
            payload = (
                {"ok": False, "error": refused}
                if refused
                else {"ok": True, "channel": "C0NIGHTLY", "ts": ts}
                if code == 200
                else {"ok": False, "error": f"http_{code}"}
            )
            data, kind = json.dumps(payload).encode(), "application/json"
        else:
            answer = refused or ("ok" if code == 200 else "no_service" if code == 404 else "error")
            data, kind = answer.encode(), "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # quiet
        pass


# Slack's limits on a message (api.slack.com/reference/block-kit/blocks): what it refuses.
MAX_BLOCKS, MAX_SECTION_TEXT, MAX_TEXT = 50, 3000, 40000


def refusal(body) -> str | None:
    """The error Slack gives BODY ("invalid_blocks", ...), or None if it takes it."""
    if not isinstance(body, dict):
        return None
    blocks = body.get("blocks") or []
    if len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if block.get("type") == "section" and len((block.get("text") or {}).get("text", "")) > MAX_SECTION_TEXT:
            return "invalid_blocks"
    if len(body.get("text") or "") > MAX_TEXT:
        return "msg_too_long"
    return None


def _json(body: str):
    try:
        return json.loads(body)
    except ValueError:
        return body


def parse_script(text: str) -> list[tuple[int, int | None]]:
    out = []
    for item in filter(None, text.split(",")):
        code, _, after = item.partition(":")
        out.append((int(code), int(after) if after else None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--script", default="")
    args = parser.parse_args()
    FakeSlack(args.port, args.log, parse_script(args.script)).serve_forever()


if __name__ == "__main__":
    main()
