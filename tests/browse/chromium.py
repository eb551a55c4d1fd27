"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

`--remote-debugging-pipe` makes Chromium read commands on fd 3 and answer on fd 4, as
NUL-separated JSON: enough to load pages, fill and submit forms, read what the page
shows and take screenshots, the way a person would, with cookies kept between pages.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("SGCACHE_REQUIRE_BROWSER"):
            pytest.fail(f"SGCACHE_REQUIRE_BROWSER is set but {CHROMIUM} is missing (Debian package `chromium`)")
        pytest.skip("needs headless Chromium (Debian package `chromium`); CI installs it")


def _high(fd: int) -> int:
    """A copy of fd numbered 10 or more, so moving pipes onto 3 and 4 never clobbers one."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


class Browser:
    """One headless Chromium with one tab."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900, timeout: float = 20.0) -> None:
        self.timeout = timeout
        to_r, to_w = (_high(fd) for fd in os.pipe())
        from_r, from_w = (_high(fd) for fd in os.pipe())

        def child() -> None:
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=child, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._out = os.fdopen(to_w, "wb", buffering=0)
        self._in = os.fdopen(from_r, "rb", buffering=0)
        self._next = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._reader, daemon=True).start()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 700)

    def _reader(self) -> None:
        buf = b""
        while True:
            chunk = self._in.read(65536)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cv:
                    if "id" in msg:
                        self._answers[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cv.notify_all()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        with self._cv:
            self._next += 1
            mid = self._next
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while mid not in self._answers:
                left = deadline - time.monotonic()
                assert left > 0, f"Chromium did not answer {method} in {self.timeout}s"
                self._cv.wait(left)
            answer = self._answers.pop(mid)
        assert "error" not in answer, answer
        return answer.get("result", {})

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the tab."""
        return self.call(method, self.session, **params)

    # -- what a person does ---------------------------------------------------------------
    def _wait_load(self, since: int) -> None:
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while not any(e.get("method") == "Page.loadEventFired" for e in self.events[since:]):
                left = deadline - time.monotonic()
                assert left > 0, "the page did not finish loading"
                self._cv.wait(left)

    def goto(self, url: str) -> None:
        since = len(self.events)
        self.send("Page.navigate", url=url)
        self._wait_load(since)

    def js(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    def click(self, selector: str) -> None:
        """Click what the selector finds and wait for the page it leads to."""
        since = len(self.events)
        assert self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                       " if (!e) return false; e.click(); return true; })()"), f"nothing at {selector}"
        self._wait_load(since)

    def fill(self, selector: str, value: str) -> None:
        assert self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
                       f" e.value = {json.dumps(value)}; return true; }})()"), f"nothing at {selector}"

    def text(self, selector: str) -> str:
        return str(self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")).strip()

    def texts(self, selector: str) -> list[str]:
        return list(self.js(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.innerText.trim())"))

    @property
    def url(self) -> str:
        return str(self.js("location.href"))

    def screenshot(self, path: Path) -> None:
        height = int(self.js("Math.min(document.documentElement.scrollHeight, 2400)"))
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": int(self.js("window.innerWidth")), "height": height,
                               "scale": 1})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (AssertionError, OSError):  # already gone: the process wait below settles it
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()
