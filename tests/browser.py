"""Headless Chromium from Debian's packages, driven over the Chrome DevTools Protocol with
websocket-client (no WebDriver, no new dependency). It talks to loopback only: no network
features of its own (sync, component updates, QUIC, background fetches), a fresh profile,
and the DevTools port chosen by Chromium and read from DevToolsActivePort."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--remote-debugging-port=0",
)  # fmt: skip


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("chromium is not installed: run scripts/provision.sh (apt: chromium)")
    return found


class Browser:
    """One Chromium process and its first page; `with Browser() as b:` stops it and removes its profile."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="nci-chromium-"))
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.ws: Any = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        import requests
        import websocket

        self.proc = subprocess.Popen(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=(self.profile / "chromium.log").open("wb"),
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"chromium did not start: {(self.profile / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json() if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  width=self.size[0], height=self.size[1], deviceScaleFactor=1, mobile=False)  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; its result (events that arrive meanwhile are dropped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:200]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30, what: str = "") -> Any:
        """EXPRESSION's value once it is truthy (write `!!el` for an element: a DOM node comes back as {})."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.eval(expression)
            except RuntimeError:
                value = None  # the page is between documents
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or expression} not true within {timeout} s (at {self.url()})")
            time.sleep(0.2)

    def url(self) -> str:
        try:
            return str(self.eval("location.href"))
        except RuntimeError:
            return "?"

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && location.href !== 'about:blank'", what=f"loading {url}")

    def click(self, expression: str, what: str = "") -> None:
        """A real mouse click on the element EXPRESSION finds (menus that listen to pointer events, too)."""
        # Where the element is once it has stopped moving, and only if nothing covers it there: a menu that
        # opens animates, and a click at where its entry was a frame ago lands on the entry next to it.
        where = (
            f"(() => {{ const el = {expression}; if (!el) return null; el.scrollIntoView({{block: 'center'}});"
            " const r = el.getBoundingClientRect(); if (!r.width) return null;"
            " const x = r.x + r.width / 2, y = r.y + r.height / 2;"
            " return el.contains(document.elementFromPoint(x, y)) ? {x, y, w: r.width, h: r.height} : null })()"
        )
        deadline = time.monotonic() + 30
        rect = self.wait(where, what=what or expression)
        while True:
            time.sleep(0.1)
            if (settled := self.wait(where, what=what or expression)) == rect:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or expression} still moving after 30 s (at {self.url()})")
            rect = settled
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"], button="left", clickCount=1)

    def type_into(self, selector: str, text: str) -> None:
        self.click(f"document.querySelector({json.dumps(selector)})", what=selector)
        self.send("Input.insertText", text=text)

    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.send("Network.getCookies")["cookies"]}

    def screenshot(self, path: Path) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]  # the whole page, not only the window
        clip = {
            "x": 0,
            "y": 0,
            "width": max(size["width"], self.size[0]),
            "height": min(size["height"], 6000),
            "scale": 1,
        }
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
