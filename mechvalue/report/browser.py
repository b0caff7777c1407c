"""A headless-browser check of an HTML page (e.g. the report).

:func:`check_in_browser` loads a page in headless Chromium over the DevTools protocol (stdlib
only, ``--remote-debugging-pipe``) and returns its console errors, uncaught exceptions, error
log entries and requests to external URLs; it can save a full-page screenshot.
:func:`find_chromium` locates the browser.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mechvalue.core.artifacts import atomic_path
from mechvalue.core.errors import MechvalueError


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$MECHVALUE_CHROMIUM`` or the first on PATH; None if absent."""
    env = os.environ.get("MECHVALUE_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Cdp:
    """Chrome DevTools protocol over the NUL-delimited JSON pipe (fds 3 and 4 of the browser)."""

    def __init__(self, wfd: int, rfd: int, deadline: float):
        self.wfd, self.rfd, self.deadline, self.buf, self.next_id = wfd, rfd, deadline, b"", 0
        self.events: list[dict] = []

    def _read(self, until: float) -> dict | None:
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.rfd], [], [], max(0.0, until - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise MechvalueError("chromium closed the DevTools pipe (it exited)")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise MechvalueError(f"chromium closed the DevTools pipe (it exited): {exc}") from exc
        while True:
            reply = self._read(self.deadline)
            if reply is None:
                raise MechvalueError(f"chromium did not answer {method} in time")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise MechvalueError(f"chromium: {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def pump(self, seconds: float, stop: Callable[[dict], bool] = lambda m: False) -> None:
        """Collect events for ``seconds`` (or until ``stop(event)``)."""
        until = min(self.deadline, time.monotonic() + seconds)
        while (msg := self._read(until)) is not None:
            self.events.append(msg)
            if stop(msg):
                return


def _event_error(msg: dict) -> str | None:
    """A readable problem for a DevTools event, or None."""
    p, method = msg.get("params") or {}, msg.get("method")
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
    if method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails") or {}
        return "uncaught exception: " + str((d.get("exception") or {}).get("description") or d.get("text"))
    if method == "Log.entryAdded" and (p.get("entry") or {}).get("level") == "error":
        e = p["entry"]
        return f"log error: {e.get('text')} {e.get('url', '')}".strip()
    if method == "Network.requestWillBeSent":
        url = (p.get("request") or {}).get("url", "")
        if url.split(":", 1)[0] not in ("file", "data", "about", "blob", "chrome"):
            return f"external request: {url}"
    return None


_SPAN_JS = """(() => {
  const h = document.getElementById(%s);
  if (!h) return null;
  let next = h.nextElementSibling;
  while (next && next.tagName !== h.tagName) next = next.nextElementSibling;
  const top = h.getBoundingClientRect().top + window.scrollY;
  const end = next ? next.getBoundingClientRect().top + window.scrollY : document.body.scrollHeight;
  return [top, end];
})()"""


def _section_span(cdp, session: str, section: str) -> tuple[float, float]:
    """Page y-coordinates (CSS px) from the heading with id ``section`` to the next heading of its level."""
    res = cdp.call("Runtime.evaluate", {"expression": _SPAN_JS % json.dumps(section), "returnByValue": True},
                   session)
    span = (res.get("result") or {}).get("value")
    if not span:
        raise MechvalueError(f"the page has no section with id {section!r} to screenshot")
    return float(span[0]), float(span[1])


def check_in_browser(html_path: str | Path, screenshot_path: str | Path | None = None, *,
                     chromium: str | None = None, timeout: float = 60.0, settle: float = 0.5,
                     width: int = 1280, section: str | None = None) -> list[str]:
    """Load ``html_path`` in headless Chromium; return its console errors (empty list = clean).

    Also reported: uncaught exceptions, error log entries (e.g. failed loads) and requests to
    non-file/data URLs. Saves a full-page PNG screenshot (height capped at 16,000 px) when
    ``screenshot_path`` is given; with ``section`` (the id of a report heading, e.g. ``"summary"``) only that
    section, from its heading to the next one. Raises MechvalueError when no browser is found or it fails.
    """
    html_path = Path(html_path).resolve()
    if not html_path.exists():
        raise MechvalueError(f"{html_path} does not exist")
    exe = chromium or find_chromium()
    if exe is None:
        raise MechvalueError("no Chromium found: install it (apt-get install chromium) or set MECHVALUE_CHROMIUM")
    import fcntl

    to_browser, from_browser = os.pipe(), os.pipe()

    def child_fds():  # the browser reads commands on fd 3 and writes replies on fd 4
        r = fcntl.fcntl(to_browser[0], fcntl.F_DUPFD, 10)
        w = fcntl.fcntl(from_browser[1], fcntl.F_DUPFD, 10)
        os.dup2(r, 3)
        os.dup2(w, 4)

    with tempfile.TemporaryDirectory(prefix="mechvalue-chromium-") as profile, tempfile.TemporaryFile() as log:
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=child_fds,
                                close_fds=False, start_new_session=True)
        os.close(to_browser[0])
        os.close(from_browser[1])
        cdp = _Cdp(to_browser[1], from_browser[0], time.monotonic() + timeout)
        try:
            target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
                cdp.call(method, session=sid)
            cdp.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, sid)
            nav = cdp.call("Page.navigate", {"url": html_path.as_uri()}, sid)
            if nav.get("errorText"):
                raise MechvalueError(f"chromium could not open {html_path}: {nav['errorText']}")
            cdp.pump(timeout, stop=lambda m: m.get("method") == "Page.loadEventFired")
            cdp.pump(settle)
            if screenshot_path is not None:
                size = cdp.call("Page.getLayoutMetrics", session=sid)
                size = size.get("cssContentSize") or size["contentSize"]
                y0, y1 = 0.0, float(size["height"])
                if section is not None:
                    y0, y1 = _section_span(cdp, sid, section)
                clip = {"x": 0, "y": y0, "width": max(1, min(size["width"], 4000)),
                        "height": max(1, min(y1 - y0, 16000)), "scale": 1}
                shot = cdp.call("Page.captureScreenshot",
                                {"format": "png", "clip": clip, "captureBeyondViewport": True}, sid)
                with atomic_path(screenshot_path) as tmp:
                    tmp.write_bytes(base64.b64decode(shot["data"]))
            cdp.pump(0.05)
        except MechvalueError as exc:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-1500:]
            raise MechvalueError(f"{exc}; chromium output: {tail}") from exc
        finally:
            try:
                cdp.deadline = time.monotonic() + 5
                cdp.call("Browser.close")
            except (MechvalueError, OSError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:  # helpers of this browser (its own session) that outlived it
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            os.close(to_browser[1])
            os.close(from_browser[0])
    return [e for e in map(_event_error, cdp.events) if e]
